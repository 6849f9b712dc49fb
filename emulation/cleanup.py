"""Remove stale Mininet state, and guarantee clean-up on exit, error, Ctrl-C and SIGTERM.

`guarded()` runs `clean()` before the block, so a crashed run's network
does not break the next one, and again after it however it ends. SIGTERM and SIGHUP are turned
into `KeyboardInterrupt` inside the block (Python already does that for SIGINT), so ``finally``
clauses (``net.stop()``, stopping the replayer) run before the clean-up.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import threading
import time
from collections.abc import Iterator

CLEAN_TIMEOUT_S = 60.0


def leftovers() -> dict[str, list[str]]:
    """What a run may leave behind: named namespaces, Mininet veths, Mininet shell processes."""
    netns = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    links = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True).stdout
    veths = [
        line.split(":")[1].strip().split("@")[0]
        for line in links.splitlines()
        if line.split(":")[1].strip().startswith("h") and "-eth" in line.split(":")[1]
    ]
    procs = subprocess.run(["pgrep", "-f", "mininet:"], capture_output=True, text=True).stdout
    return {"netns": netns.split(), "veths": veths, "processes": procs.split()}


def clean() -> None:
    """Kill stale Mininet host shells and delete the chain's veths (quiet, idempotent).

    Not ``mn -c``: besides this it deletes every ``/tmp/*.log`` and ``/tmp/*.out`` on the machine,
    which are not Mininet's to remove. A host's namespace goes with its shell.
    """
    subprocess.run(["pkill", "-9", "-f", "mininet:"], capture_output=True, check=False)
    deadline = time.monotonic() + CLEAN_TIMEOUT_S
    while leftovers()["processes"] and time.monotonic() < deadline:
        time.sleep(0.05)
    for name in leftovers()["veths"]:
        subprocess.run(["ip", "link", "del", name], capture_output=True, check=False)


def _interrupt(signum, _frame) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


@contextlib.contextmanager
def guarded(clean_before: bool = True) -> Iterator[None]:
    """Clean stale state, run the block, clean again on every way out (also SIGTERM/SIGHUP)."""
    if os.geteuid() != 0:
        raise PermissionError("Mininet emulation needs root")
    if clean_before:
        clean()
    previous = {}
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGTERM, signal.SIGHUP):
            previous[sig] = signal.signal(sig, _interrupt)
    try:
        yield
    finally:
        if threading.current_thread() is threading.main_thread():
            # a second Ctrl-C must not cut the clean-up short
            previous.setdefault(signal.SIGINT, signal.signal(signal.SIGINT, signal.SIG_IGN))
        try:
            clean()
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
