"""The Redis ACL rules a pool client needs, derived from the code itself.

``acl_setuser("app", "secret", ["doublers"])`` gives an ``ACL SETUSER`` line
for a user limited to the keys of the named pools and the commands redispool
sends: the commands its Lua scripts call (read from the scripts, so the rules
follow the scripts) and the few it sends itself. No ``KEYS``, ``SCAN``,
``CONFIG SET`` or ``FLUSH*``, and no right to load, replace or delete
server-side code (``FUNCTION LOAD``/``DELETE``/``FLUSH``/``RESTORE``,
``SCRIPT``, ``EVAL``): the library every client runs is installed by an
operator (``redispool install``), so no pool user can change the code another
client runs. With ``jobs=True`` it adds what ``lease.run`` and worker hosts
need: RQ's commands (RQ keeps a pool's jobs under the pool's own keys, see
:mod:`redispool.rqkeys`, so no other key pattern) and the Reaper's
expired-events channel (the events must already be on: the user cannot
``CONFIG SET`` them), and on a cluster its probes of that subscription.
Operators paste the line into ``redis-cli`` or an ACL file.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from .cluster_events import PROBE_CHANNEL_PREFIX
from .keys import PoolKeys, validate_pool_name
from .scripts import SCRIPT_NAMES, source_of

__all__ = ["CLIENT_COMMANDS", "JOB_COMMANDS", "acl_rules", "acl_setuser", "script_commands"]

#: Commands a pool client sends itself (besides running scripts).
CLIENT_COMMANDS = frozenset(
    {
        "fcall",  # run the pool's operations (the library is installed by an operator)
        "blmove",  # wait for a handoff on its own clock (a peek: BLMOVE key key)
        "blpop",  # redispool.aio: one wait for the handoffs of all of a Pool's waiters
        "lpush", "pexpire",  # redispool.aio: its bell, which ends that wait (no CLIENT UNBLOCK)
        "ping", "hello",  # connection set-up and health
        "cluster|slots", "command",  # a cluster client: the topology, and how commands name keys
        "hgetall", "zrange", "smembers", "mget", "get", "pttl", "zscore",  # workers(), leases()
        "multi", "exec",  # consistent reads of several keys
    }
)  # fmt: skip

#: What running jobs adds: RQ's own commands (measured on a worker_main run with
#: jobs, failures, a lease expiry and a drain), and the Reaper's events.
JOB_COMMANDS = frozenset(
    {
        "blmove", "expire", "persist", "hincrbyfloat", "watch", "unwatch",  # RQ queues, jobs
        "xadd", "xread",  # RQ results
        "client|setname", "client|info", "info",  # RQ worker registration
        "subscribe",  # the Reaper: expired events (turned on by an operator; no CONFIG
        # rights at all: CONFIG GET would show the server's passwords)
        "publish",  # the Reaper on a cluster: probes of its subscriptions (PROBE_CHANNELS)
        # history and events (redispool.history, redispool.events), written by worker
        # hosts and the Reaper, read by `redispool events` and the web view
        "hincrby", "hget", "set", "del", "xrevrange", "exists", "time",
    }
)  # fmt: skip
EXPIRED_EVENTS = "&__keyevent@*__:expired"
#: The channels of the probes a cluster's Reaper sends itself (redispool.cluster).
PROBE_CHANNELS = f"&{PROBE_CHANNEL_PREFIX}*"

#: A command a script calls: through its local names for redis.call and redis.pcall
#: (rcall, rpcall, probe) or through redis.call and redis.pcall themselves.
_CALL = re.compile(r"(?:rcall|rpcall|probe|redis\.call|redis\.pcall)\('([A-Z]+)'")


#: The scripts of a job's life (lease.run and worker hosts): their commands are
#: granted only with ``jobs`` (a pool user who runs no jobs gets no XADD, EXPIRE ...).
JOB_SCRIPTS = frozenset({"begin_job", "enqueue_job", "finish_job", "give_back", "withdraw_job"})


def script_commands(*, jobs: bool = True) -> frozenset[str]:
    """Every command the pool's Lua scripts call (without ``jobs``: leaving out
    the job scripts, :data:`JOB_SCRIPTS`)."""
    found: set[str] = set()
    for name in SCRIPT_NAMES:
        if jobs or name not in JOB_SCRIPTS:
            found.update(cmd.lower() for cmd in _CALL.findall(source_of(name)))
    return frozenset(found)


def acl_rules(pools: Iterable[str], *, jobs: bool = False) -> list[str]:
    """ACL rules for a user of ``pools``: their keys, and redispool's commands only.

    With ``jobs``, what ``lease.run`` and worker hosts need too: RQ's
    commands (its keys are the pool's) and the Reaper's subscription to
    expired events.
    """
    names = [validate_pool_name(p) for p in pools]
    if not names:
        raise ValueError("name at least one pool")
    keys = [f"~{PoolKeys(name).prefix}*" for name in names]
    commands = CLIENT_COMMANDS | script_commands(jobs=jobs)
    channels: list[str] = []
    if jobs:
        commands |= JOB_COMMANDS
        channels += [EXPIRED_EVENTS, PROBE_CHANNELS]
    return [
        "resetkeys", *keys, "resetchannels", *channels, "-@all",
        *(f"+{c}" for c in sorted(commands)),
    ]  # fmt: skip


def acl_setuser(user: str, password: str, pools: Iterable[str], *, jobs: bool = False) -> str:
    """The ``ACL SETUSER`` line for ``user`` with ``password`` on ``pools``."""
    if not re.fullmatch(r"[A-Za-z0-9_.-]{1,64}", user):
        raise ValueError(f"user must be 1 to 64 of letters, digits and _.-, got {user!r}")
    if not password or any(ch.isspace() for ch in password):
        raise ValueError("password must be non-empty and without whitespace")
    return " ".join(["ACL SETUSER", user, "on", f">{password}", *acl_rules(pools, jobs=jobs)])
