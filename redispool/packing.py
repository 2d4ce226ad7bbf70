"""A command's RESP bytes, packed by hiredis, safe against an interrupt.

``hiredis.pack_command`` (3.5.0) turns a number into text with
``PyObject_Repr``, which runs pending signal handlers first: a
``KeyboardInterrupt`` raised there comes back as a NULL that hiredis does not
check, and the process dies of a segmentation fault. A Ctrl-C during a
checkin did that (test_interrupts, about once in 3,000 rounds under load;
hiredis alone, packing ``("GET", 12345)`` while SIGINTs arrive, within 3 s).
Numbers are made text here, in Python, where an interrupt is an ordinary
exception; hiredis then only copies strings and bytes.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import hiredis

__all__ = ["pack_command"]

#: hiredis packs a command in C (its stub's argument type is a 1-tuple: widened here).
_pack: Callable[[tuple[Any, ...]], bytes] = hiredis.pack_command


def pack_command(args: tuple[Any, ...]) -> bytes:
    """``hiredis.pack_command(args)``, its ``int`` and ``float`` items written as
    hiredis writes them (their ``repr``) before it sees them; anything else as
    hiredis takes it (a type it refuses still raises its ``TypeError``)."""
    return _pack(
        tuple([a if (t := type(a)) is not int and t is not float else repr(a) for a in args])
    )
