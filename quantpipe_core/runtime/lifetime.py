"""A rank's process lifetime: it dies with its parent, and an interrupt reaches it at once.

Python runs signal handlers in the main thread between bytecodes, so a rank whose main thread
waits in a gloo receive would not see Ctrl-C or SIGTERM until that receive times out. Instead the
signal's arrival is written to a pipe (`signal.set_wakeup_fd`) that a watcher thread reads, and the
watcher saves the rank's measurements while the main thread is still blocked.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import signal
import threading
from collections.abc import Callable

PARENT_ENV = "QUANTPIPE_PARENT_PID"
PR_SET_PDEATHSIG = 1
INTERRUPTS = (signal.SIGINT, signal.SIGTERM)


def die_with_parent() -> None:
    """SIGTERM to this process when its parent dies (even by SIGKILL), on Linux.

    A launcher passes its pid in ``QUANTPIPE_PARENT_PID``; if it died before this call, the
    signal would never come, so the process interrupts itself at once.
    """
    name = ctypes.util.find_library("c")
    if name is None:
        return
    try:
        prctl = ctypes.CDLL(name, use_errno=True).prctl
    except (OSError, AttributeError):
        return
    prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    parent = os.environ.get(PARENT_ENV, "")
    if parent.isascii() and parent.isdigit() and os.getppid() != int(parent):
        os.kill(os.getpid(), signal.SIGTERM)


def watch_interrupts(on_interrupt: Callable[[signal.Signals], None]) -> None:
    """Call `on_interrupt` from a watcher thread when SIGINT or SIGTERM arrives (main thread
    only: it installs the handlers). The process's default handlers no longer run."""
    read_end, write_end = os.pipe()
    os.set_blocking(write_end, False)
    signal.set_wakeup_fd(write_end, warn_on_full_buffer=False)
    for signum in INTERRUPTS:
        signal.signal(signum, lambda *_: None)

    def watch() -> None:
        on_interrupt(signal.Signals(os.read(read_end, 1)[0]))

    threading.Thread(target=watch, name="interrupt-watcher", daemon=True).start()
