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

__all__ = ["Op", "Reads", "code_of", "unexpected"]

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Op(Generic[T]):
    """One call of one library function (see :mod:`redispool.scripts`).

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
        return scripts.library().function(self.script)

    def command(self) -> tuple[str | int, ...]:
        """The whole command: ``FCALL function numkeys *keys *args``."""
        return ("FCALL", self.function, len(self.keys), *self.keys, *self.args)

    def read(self, reply: Any) -> T:
        """The typed result of ``reply``; raises the code's exception, or
        :class:`~redispool.PoolCorrupted` for a reply of the wrong shape."""
        try:
            return self.parse(reply)
        except (IndexError, TypeError, ValueError) as exc:
            raise PoolCorrupted(
                f"pool {self.pool!r}: {self.name} got a reply redispool does not write: "
                f"{reply!r} ({exc})",
                pool=self.pool, worker_id=self.worker_id, operation=self.name,
            ) from None  # fmt: skip


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
