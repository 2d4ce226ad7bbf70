"""A command's bytes are packed safely however an interrupt lands (redispool.packing).

hiredis.pack_command writes a number with PyObject_Repr, which runs pending signal
handlers; a KeyboardInterrupt there killed the process with a segmentation fault
(a Ctrl-C during a checkin, test_interrupts).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import hiredis
import pytest

from redispool.packing import pack_command

PACKER = Path(__file__).parent / "procs" / "interrupted_packer.py"


@pytest.mark.parametrize(
    "command",
    [("GET", "k"), ("SET", b"k", b"\xff"), ("FCALL", "f", 2, "a", "b", 10, 1.5, -3, 2**70),
     ("EXPIRE", "k", 0.1), ("X", memoryview(b"mv"))],
)  # fmt: skip
def test_the_bytes_are_hiredis_own(command: tuple[object, ...]) -> None:
    assert pack_command(command) == hiredis.pack_command(command)  # type: ignore[arg-type]


@pytest.mark.parametrize("junk", [True, None, object(), ["a"]])
def test_what_hiredis_refuses_is_refused(junk: object) -> None:
    with pytest.raises(TypeError):
        pack_command(("SET", "k", junk))


def test_packing_numbers_while_interrupts_land_never_crashes() -> None:
    # hiredis.pack_command itself, run the same way, dies of SIGSEGV within 3 s here
    done = subprocess.run(
        [sys.executable, str(PACKER), "redispool", "3"], capture_output=True, text=True,
        timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, f"died ({done.returncode}):\n{done.stderr}"
    _, packed, interrupts = done.stdout.split()
    assert int(packed) > 10_000 and int(interrupts) > 100, done.stdout
