"""An operation described without I/O: which function, its KEYS and ARGV, how to read its reply.

An :class:`Op` is made by one of the builders of :mod:`redispool.protocol`
and sent by whichever client holds a connection: the sync side through
:class:`redispool.sender.Sender` (``FCALL`` over :mod:`redispool.wire`), the
asyncio side through a ``redis.asyncio`` connection. Both then hand the raw
reply to :meth:`Op.read`, which returns the typed result or raises the
exception the one table (:data:`redispool.errors.CODES`) names for its code.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, NoReturn, TypeVar

from .. import errors, scripts
from ..errors import Code, PoolCorrupted
from ..packing import pack_command

__all__ = ["Op", "Reads", "code_of", "unexpected"]

T = TypeVar("T")

#: Each operation's library function (the name ``FCALL`` takes), computed once.
FUNCTIONS = {name: scripts.library().function(name) for name in scripts.SCRIPT_NAMES}


#: How many packed heads (``FCALL function numkeys *keys``) are kept; all are
#: forgotten when full (a pool of many workers has a checkin head per worker).
HEADS_KEPT = 1024
_HEADS: dict[tuple[str, tuple[str, ...]], bytes] = {}
#: RESP array headers ``*<n>\r\n``, made once.
_ARRAY = [b"*%d\r\n" % n for n in range(64)]


# The hot path's types (Op, and the replies of checkout, checkin and renew) are
# slotted, hashable dataclasses that nothing assigns to once made, but not
# ``frozen``: a frozen dataclass's ``__init__`` sets each field through
# ``object.__setattr__``, 0.5 us more per object here, about 2 us of the
# layer's own ~7 us per checkout+checkin (measured without the socket).
@dataclass(slots=True, unsafe_hash=True)
class Op(Generic[T]):
    """One call of one library function (see :mod:`redispool.scripts`); never changed once made.

    ``keys`` are in the order of the script's header, ``args`` too; ``parse``
    turns the raw reply into the typed result (raising for an error code).
    ``pool``, ``worker_id`` and ``operation`` name what failed in errors.
    """

    script: str
    keys: tuple[str, ...]
    args: tuple[str | int, ...]
    parse: Callable[[Any], T]
    pool: str
    worker_id: str | None = None
    operation: str = ""

    @property
    def name(self) -> str:
        """The operation's name in errors and logs (the script's, unless given)."""
        return self.operation or self.script

    @property
    def function(self) -> str:
        """The library function this op calls with ``FCALL``."""
        return FUNCTIONS[self.script]

    def command(self) -> tuple[str | int, ...]:
        """The whole command: ``FCALL function numkeys *keys *args``."""
        return ("FCALL", FUNCTIONS[self.script], len(self.keys), *self.keys, *self.args)

    def packed(self) -> bytes:
        """:meth:`command` in RESP bytes. Its head (all but ARGV) is packed once per
        script and KEYS and kept, so each call packs only its ARGV."""
        count = 3 + len(self.keys) + len(self.args)
        head = _HEADS.get((self.script, self.keys))
        if head is None or count >= len(_ARRAY):
            if count >= len(_ARRAY):
                return pack_command(self.command())
            head = _head(self.script, self.keys)
        tail = pack_command(self.args)
        return b"".join((_ARRAY[count], head, tail[tail.index(b"\n") + 1 :]))

    def read(self, reply: Any) -> T:
        """The typed result of ``reply``; raises the code's exception, or
        :class:`~redispool.PoolCorrupted` for a reply of the wrong shape."""
        try:
            return self.parse(reply)
        except (IndexError, TypeError, ValueError) as exc:
            raise self.corrupted(reply, exc) from None

    def corrupted(self, reply: Any, exc: Exception) -> PoolCorrupted:
        """The error for ``reply``, which ``parse`` could not read (``exc``): a
        sender that calls ``parse`` itself (the sync hot path) raises this."""
        return PoolCorrupted(
            f"pool {self.pool!r}: {self.name} got a reply redispool does not write: "
            f"{reply!r} ({exc})",
            pool=self.pool, worker_id=self.worker_id, operation=self.name,
        )  # fmt: skip


@dataclass(frozen=True)
class Reads(Generic[T]):
    """Plain commands sent back to back on one connection (not a script), and
    how to read their replies (a list, one per command)."""

    commands: tuple[tuple[str, ...], ...]
    parse: Callable[[list[Any]], T]
    pool: str
    worker_id: str | None = None
    operation: str = ""

    def read(self, replies: list[Any]) -> T:
        return self.parse(replies)


def _head(script: str, keys: tuple[str, ...]) -> bytes:
    """The packed ``FCALL function numkeys *keys`` without its array header, kept."""
    head = pack_command(("FCALL", FUNCTIONS[script], len(keys), *keys))
    head = head[head.index(b"\n") + 1 :]
    if len(_HEADS) >= HEADS_KEPT:
        _HEADS.clear()
    _HEADS[script, keys] = head
    return head


def code_of(reply: Any) -> int:
    """The result code, first element of every script reply."""
    return int(reply[0])


def unexpected(code: int, *, pool: str, operation: str, worker_id: str | None = None) -> NoReturn:
    """Raise for ``code`` where the operation allows none of the success codes it got:
    the code's exception from the table, else :class:`~redispool.PoolCorrupted`."""
    errors.raise_for(code, pool=pool, operation=operation, worker_id=worker_id)
    name = Code(code).name if code in errors.CODES else str(code)
    raise PoolCorrupted(
        f"pool {pool!r}: {operation} got result code {name}, which it never answers",
        pool=pool, worker_id=worker_id, operation=operation,
    )  # fmt: skip
