"""Packs commands with numbers in them while SIGINTs arrive, for test_packing.

    python interrupted_packer.py MODULE SECONDS

MODULE is ``redispool`` (redispool.packing.pack_command) or ``hiredis``
(hiredis.pack_command itself). Each SIGINT raises one KeyboardInterrupt in a
packing loop; the process prints ``ok <packed> <interrupts>`` if it lives.
"""

from __future__ import annotations

import signal
import sys
import threading
import time
from types import FrameType

import hiredis

from redispool.packing import pack_command

armed = False


def _on_sigint(signum: int, frame: FrameType | None) -> None:
    global armed
    if armed:  # only inside the loop, once per arming
        armed = False
        raise KeyboardInterrupt


def main() -> None:
    global armed
    pack = pack_command if sys.argv[1] == "redispool" else hiredis.pack_command
    seconds = float(sys.argv[2])
    signal.signal(signal.SIGINT, _on_sigint)
    main_thread, stop = threading.main_thread(), threading.Event()

    def keep_interrupting() -> None:
        while not stop.wait(0.00003):
            signal.pthread_kill(main_thread.ident or 0, signal.SIGINT)

    threading.Thread(target=keep_interrupting, daemon=True).start()
    command = ("FCALL", "f", 1, "k", "w1", 1796154432053910, 2.5, "")
    packed = interrupts = 0
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        try:
            armed = True
            for _ in range(1000):
                pack(command)
                packed += 1
            armed = False
        except KeyboardInterrupt:
            interrupts += 1
    stop.set()
    print("ok", packed, interrupts, flush=True)


if __name__ == "__main__":
    main()
