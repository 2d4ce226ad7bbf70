"""The pool's Lua scripts: loaded from package data, run by SHA.

One ``.lua`` file per atomic operation. A line ``-- @include NAME`` inlines
``includes/NAME.lua`` (BullMQ's habit), so shared helpers such as
``release`` are written once. Scripts run with EVALSHA and are loaded again
after NOSCRIPT (a restarted or flushed server).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import TYPE_CHECKING, Any

from redis.exceptions import NoScriptError

if TYPE_CHECKING:
    from .wire import Wire

__all__ = ["SCRIPT_NAMES", "Script", "load", "source_of"]

SCRIPT_NAMES = (
    "add_worker",
    "cancel_wait",
    "checkin",
    "checkout",
    "configure",
    "leave_worker",
    "reap_workers",
    "reclaim",
    "register_worker",
    "remove_worker",
    "renew",
    "start_job",
    "status",
    "wait_tick",
)

_INCLUDE = re.compile(r"^-- @include (\w+)$", re.MULTILINE)


def _read(relative: str) -> str:
    return resources.files(__package__).joinpath("scripts").joinpath(relative).read_text("utf-8")


def source_of(name: str) -> str:
    """The script's text with its includes inlined."""
    return _INCLUDE.sub(lambda m: _read(f"includes/{m.group(1)}.lua"), _read(f"{name}.lua"))


@dataclass(frozen=True)
class Script:
    """One Lua script, run by SHA over a :class:`~redispool.wire.Wire`."""

    name: str
    source: str
    sha: str

    def __call__(self, wire: Wire, keys: Sequence[str], args: Sequence[Any]) -> Any:
        command = ("EVALSHA", self.sha, len(keys), *keys, *args)
        try:
            return wire.call(*command)
        except NoScriptError:
            wire.call("SCRIPT", "LOAD", self.source)
            return wire.call(*command)


@cache
def load(name: str) -> Script:
    """The script ``name`` (one of :data:`SCRIPT_NAMES`)."""
    source = source_of(name)
    return Script(name, source, hashlib.sha1(source.encode()).hexdigest())
