"""The pool's Lua: one file per atomic operation, served as one Redis Functions library.

Each ``scripts/<name>.lua`` is one atomic operation with a header that lists
its KEYS, ARGV and replies; a line ``-- @include NAME`` says it uses the shared
helpers of ``scripts/includes/NAME.lua`` (BullMQ's layout). At first use the
files are assembled into one library and sent with ``FUNCTION LOAD``: the
helpers are then defined once per server instead of on every call, as they
would be in an inlined EVAL script (measured here: 12-17 us less Redis time
per call, a quarter of a checkout). Each operation is called with ``FCALL``.

The library's name carries a hash of its text, so clients of different
versions can share a server. Loading it is an operator's step:
:func:`install` (``redispool install``) loads this version's library and
removes every other version. Pool users have no right to load, replace or
delete server-side code (see :mod:`redispool.acl`), so no pool user can
change the code another client runs. A client whose user may load code (an
operator's, or a server without ACLs) still loads the library itself when a
call misses it (a restart without persistence, ``FUNCTION FLUSH``); a pool
user's call then fails with :class:`~redispool.PoolAccessDenied` naming the
step. Needs Redis 7 or Valkey 7.2 or later.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import TYPE_CHECKING, Any

import redis
from redis.exceptions import NoPermissionError, ResponseError

from .cluster import guard_key, masters
from .errors import Code
from .keys import PoolKeys, pool_name_from_key

if TYPE_CHECKING:
    from .connect import Client
    from .wire import Wire

__all__ = [
    "INCLUDES",
    "SCRIPT_NAMES",
    "Installed",
    "Script",
    "code_constants",
    "install",
    "installed_versions",
    "library",
    "load",
    "source_of",
]

SCRIPT_NAMES = (
    "add_worker",
    "begin_job",
    "cancel_wait",
    "checkin",
    "checkout",
    "configure",
    "enqueue_job",
    "finish_job",
    "give_back",
    "leave_worker",
    "reap_workers",
    "reclaim",
    "register_worker",
    "remove_worker",
    "renew",
    "status",
    "wait_tick",
    "withdraw_job",
)
#: Operations whose KEYS are variadic and whose reply has one entry per key.
VARIADIC_KEYS = frozenset({"renew"})
#: The shared helpers, in the order they are defined; each that reads KEYS has a bind_<name>().
INCLUDES = ("kinds", "pool", "handoff", "workers", "repair")

_INCLUDE = re.compile(r"^-- @include (\w+)$", re.MULTILINE)
#: The name of every version of the library: ``redispool_`` and 12 hex digits.
LIBRARY_NAME = re.compile(r"redispool_[0-9a-f]{12}")
INSTALL_HINT = "an operator must run `redispool install` (see redispool.scripts)"


def _read(relative: str) -> str:
    return resources.files(__package__).joinpath("scripts").joinpath(relative).read_text("utf-8")


def code_constants() -> str:
    """The Lua line that declares every result code, generated from
    :class:`redispool.errors.Code` (no script writes a code's number itself)."""
    names = ", ".join(code.name for code in Code)
    values = ", ".join(str(code.value) for code in Code)
    return f"local {names} = {values}"


def source_of(name: str) -> str:
    """The operation's text, with the result codes and the helpers it includes
    (and those they include, each once) written out in place (``fence_write``'s
    too, though not in the library)."""
    seen: set[str] = set()

    def expand(text: str) -> str:
        def include(match: re.Match[str]) -> str:
            if match.group(1) in seen:
                return ""
            seen.add(match.group(1))
            return expand(_read(f"includes/{match.group(1)}.lua"))

        return _INCLUDE.sub(include, text)

    return code_constants() + "\n" + expand(_read(f"{name}.lua"))


@dataclass(frozen=True)
class Library:
    """The assembled library: its name, its text, and each operation's function name."""

    name: str
    source: str

    def function(self, operation: str) -> str:
        return f"{self.name}_{operation}"


@cache
def library() -> Library:
    """The library of every operation in :data:`SCRIPT_NAMES`."""
    parts = ["local KEYS, ARGV = {}, {}", code_constants()]
    parts += [_read(f"includes/{name}.lua") for name in INCLUDES]
    binds = {}
    for operation in SCRIPT_NAMES:
        text = _read(f"{operation}.lua")
        # Each operation binds only the helpers it includes (a bind is a table write per key).
        binds[operation] = " ".join(
            f"bind_{m.group(1)}()"
            for m in _INCLUDE.finditer(text)
            if f"local function bind_{m.group(1)}()" in _read(f"includes/{m.group(1)}.lua")
        )
        parts.append(f"local function op_{operation}()\n{_INCLUDE.sub('', text)}\nend")
    digest = hashlib.sha1("\n".join([*parts, *binds.values()]).encode()).hexdigest()[:12]
    name = f"redispool_{digest}"
    for operation in SCRIPT_NAMES:
        parts.append(
            f"redis.register_function('{name}_{operation}', function(keys, args) "
            f"KEYS, ARGV = keys, args {binds[operation]} return op_{operation}() end)"
        )
    return Library(name, f"#!lua name={name}\n" + "\n".join(parts) + "\n")


def on_cluster(keys: Sequence[str]) -> Sequence[str]:
    """The KEYS an operation names on a cluster. A hot operation sent the pool's
    prefix alone (it names the other keys itself) names the common keys there
    too: a migrating slot answers TRYAGAIN only when some named key is still on
    the old master, and the prefix and the guard never exist (an ASK would send
    the script to the new master, to run on half a pool)."""
    pool = pool_name_from_key(keys[0]) if len(keys) == 1 else None
    if pool is not None and keys[0] == PoolKeys(pool).prefix:
        return PoolKeys(pool).common
    return keys


@dataclass(frozen=True)
class Script:
    """One operation of the library, called with FCALL over a :class:`~redispool.wire.Wire`."""

    name: str
    function: str

    def _command(self, wire: Wire, keys: Sequence[str], args: Sequence[Any]) -> tuple[Any, ...]:
        if wire.on_cluster:  # a key that never exists: TRYAGAIN, not half a run, mid-migration
            keys = (*on_cluster(keys), guard_key(keys[0]))
        return ("FCALL", self.function, len(keys), *keys, *args)

    def _reply(self, wire: Wire, keys: Sequence[str], reply: Any) -> Any:
        if wire.on_cluster and self.name in VARIADIC_KEYS:
            return reply[: len(keys)]  # one entry per key: none for the guard
        return reply

    def __call__(self, wire: Wire, keys: Sequence[str], args: Sequence[Any]) -> Any:
        command = self._command(wire, keys, args)
        try:
            return self._reply(wire, keys, wire.call(*command))
        except ResponseError as exc:
            if "function not found" not in str(exc).lower():
                raise
            try:
                wire.call("FUNCTION", "LOAD", "REPLACE", library().source)
            except NoPermissionError as refused:
                raise NoPermissionError(
                    f"the server lacks redispool's library {library().name} and this user "
                    f"may not load code: {INSTALL_HINT} ({refused})"
                ) from refused
            return self._reply(wire, keys, wire.call(*command))

    def acked(
        self, wire: Wire, keys: Sequence[str], args: Sequence[Any], replicas: int, timeout_ms: int
    ) -> tuple[Any, int]:
        """The reply, and how many replicas acknowledged the call's writes
        (``WAIT replicas timeout_ms`` on the same connection, same round trip)."""
        command = self._command(wire, keys, args)
        try:
            reply, acks = wire.call_acked(command, replicas, timeout_ms)
        except ResponseError as exc:
            if "function not found" not in str(exc).lower():
                raise
            wire.call("FUNCTION", "LOAD", "REPLACE", library().source)
            reply, acks = wire.call_acked(command, replicas, timeout_ms)
        return self._reply(wire, keys, reply), acks


@cache
def load(name: str) -> Script:
    """The operation ``name`` (one of :data:`SCRIPT_NAMES`)."""
    if name not in SCRIPT_NAMES:
        raise ValueError(f"no such operation {name!r}")
    return Script(name, library().function(name))


@dataclass(frozen=True)
class Installed:
    """What :func:`install` did: the version now loaded and the versions removed."""

    library: str
    removed: tuple[str, ...]


def installed_versions(client: redis.Redis) -> list[str]:
    """The names of every version of redispool's library on the server, sorted."""
    reply: Any = client.function_list(library="redispool_*")
    names = []
    for entry in reply:
        if not isinstance(entry, dict):  # RESP2: a flat list of names and values
            entry = dict(zip(entry[::2], entry[1::2], strict=True))
        fields = entry
        name = fields.get(b"library_name", fields.get("library_name"))
        name = name.decode() if isinstance(name, bytes) else str(name)
        if LIBRARY_NAME.fullmatch(name):
            names.append(name)
    return sorted(names)


def install(client: Client, *, remove_old: bool = True) -> Installed:
    """Load this version's library (an operator's step); remove the other versions.

    Atomic per command: a client of this version never misses its functions
    (``FUNCTION LOAD REPLACE`` swaps the library in one step). Every other
    ``redispool_<hash>`` library is taken as no longer used and deleted
    (with ``remove_old=False`` they stay, for a rolling upgrade: install the
    new version first, move every client to it, then install again);
    libraries of other names are never touched. Needs a user allowed
    ``FUNCTION LOAD``/``DELETE`` and ``FUNCTION LIST``.

    On a Redis Cluster it does this on every master (the topology read
    afresh); replicas get the library by replication, and a master added
    later gets it from the first pool call that misses it (by a user allowed
    to load code) or from running ``install`` again.
    """
    removed: list[str] = []
    for node in masters(client, refresh=True):
        done = _install_one(node, remove_old)
        removed += [name for name in done.removed if name not in removed]
    return Installed(library().name, tuple(removed))


def _install_one(client: redis.Redis, remove_old: bool) -> Installed:
    current = library()
    client.function_load(current.source, replace=True)
    removed = []
    if remove_old:
        for name in installed_versions(client):
            if name != current.name:
                client.function_delete(name)
                removed.append(name)
    return Installed(current.name, tuple(removed))
