"""The operations of a lease's life: checkout, a waiter's tick and its giving up, renew, checkin."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..errors import FULL, NOT_HELD, OK, QUEUED, WORKER_DEAD, PoolCorrupted
from ..keys import PoolKeys
from ..wire import text
from .op import Op, code_of, unexpected
from .replies import Checkin, Granted, Handoff, Queued, Renewal, Waiting

__all__ = ["cancel_wait", "checkin", "checkout", "read_handoff", "renew", "wait_tick"]


def checkout(
    keys: PoolKeys, *, ttl_ms: int, holder: str, ticket: str, alive_ms: int, nonce: str
) -> Op[Granted | Queued]:
    """Lease an idle worker, else queue as waiter ``ticket`` ('' : do not queue).

    ``ttl_ms`` 0 takes the pool's TTL; ``alive_ms`` is how long the waiter
    counts as alive without a tick (the script caps it at the TTL).
    Result: :class:`Granted`, or :class:`Queued` (``queued`` False for FULL).
    """

    def parse(reply: Any) -> Granted | Queued:
        code = int(reply[0])  # code_of, inline: the hot path
        if code == OK:  # Granted.of(reply), inline: the hot path
            return Granted(text(reply[1]), int(reply[2]), int(reply[3]), int(reply[4]))
        if code in (QUEUED, FULL):
            return Queued(code == QUEUED, int(reply[1]), int(reply[2]), int(reply[3]))
        unexpected(code, pool=keys.pool, operation="checkout")

    args = (ttl_ms, holder, ticket, alive_ms, nonce)
    # The prefix alone: the script names the pool's keys from it (each key
    # passed costs the server more than a name it made once and kept).
    return Op("checkout", (keys.prefix,), args, parse, keys.pool)


def wait_tick(
    keys: PoolKeys, *, ticket: str, ttl_ms: int, holder: str, alive_ms: int, nonce: str
) -> Op[Handoff | Granted | Waiting]:
    """A waiter's periodic wake-up: sweep, then say it is alive.

    Result: :class:`Handoff` (handed a worker), :class:`Granted` (it had been
    dropped as dead and took an idle worker), or :class:`Waiting`.
    """

    def parse(reply: Any) -> Handoff | Granted | Waiting:
        code = code_of(reply)
        if code == OK:
            return Handoff.parse(reply[1]) if len(reply) == 2 else Granted.of(reply)
        if code == QUEUED:
            return Waiting(int(reply[1]), int(reply[2]))
        unexpected(code, pool=keys.pool, operation="checkout (waiting)")

    args = (ticket, ttl_ms, holder, alive_ms, nonce)
    return Op("wait_tick", (*keys.common, keys.wake(ticket)), args, parse, keys.pool)


def read_handoff(keys: PoolKeys, ticket: str, raw: Any) -> Handoff:
    """The handoff found (peeked, not taken) in waiter ``ticket``'s wake key;
    :class:`~redispool.PoolCorrupted` naming the key when it holds anything else."""
    try:
        return Handoff.parse(raw)
    except (TypeError, ValueError) as exc:
        raise PoolCorrupted(
            f"pool {keys.pool!r}: the wake key {keys.wake(ticket)} holds {raw!r}, "
            f"not a handoff redispool writes ({exc})",
            pool=keys.pool, operation="checkout (waiting)",
        ) from None  # fmt: skip


def cancel_wait(keys: PoolKeys, ticket: str) -> Op[Handoff | None]:
    """Leave the queue. Result: the :class:`Handoff` made to this waiter
    meanwhile (the caller keeps it or checks it in), or None."""

    def parse(reply: Any) -> Handoff | None:
        code = code_of(reply)
        if code == OK:
            return Handoff.parse(reply[1])
        if code == FULL:
            return None
        unexpected(code, pool=keys.pool, operation="cancel_wait")

    return Op("cancel_wait", (keys.prefix,), (ticket,), parse, keys.pool)  # names the rest


def checkin(
    keys: PoolKeys, *, worker_id: str, token: int, nonce: str, wake_ticket: str = ""
) -> Op[Checkin]:
    """End the lease and return its worker. Result: :class:`Checkin`
    (``returned`` False when the lease had already ended). ``wake_ticket``: the
    ticket of the waiter the lease was handed to, if the handoff is still in its
    wake key (the checkin deletes it)."""

    def parse(reply: Any) -> Checkin:
        code = int(reply[0])  # code_of, inline: the hot path
        if code == OK:
            return Checkin(True)
        if code in (NOT_HELD, WORKER_DEAD):
            return Checkin(False, worker_died=code == WORKER_DEAD)
        unexpected(code, pool=keys.pool, operation="checkin", worker_id=worker_id)

    op_keys = (keys.prefix,)  # the script names the lease and the pool's keys from it
    args = (worker_id, token, nonce, wake_ticket)
    return Op("checkin", op_keys, args, parse, keys.pool, worker_id)


def renew(keys: PoolKeys, leases: Sequence[tuple[str, int, str, int]]) -> Op[Renewal]:
    """Extend many leases in one round trip; each is ``(worker_id, token, nonce, ttl_ms)``.

    Result: :class:`Renewal`, whose ``held[i]`` is False for a lease that had ended.
    """
    if not leases:
        raise ValueError("renew needs at least one lease")
    count = len(leases)

    def parse(reply: Any) -> Renewal:
        if len(reply) != count + 1:
            raise ValueError(f"{len(reply) - 1} answers for {count} leases")
        # map, not a generator: no Python call per lease (the hot path)
        return Renewal(int(reply[0]), tuple(map(bool, map(int, reply[1:]))))

    op_keys = [keys.deadlines]
    args: list[str | int] = []
    for worker_id, token, nonce, ttl_ms in leases:
        op_keys.append(keys.lease(worker_id))
        args += (worker_id, token, nonce, ttl_ms)
    first = leases[0][0] if count == 1 else None
    return Op("renew", tuple(op_keys), tuple(args), parse, keys.pool, first)
