"""Replay bandwidth traces onto the chain's htb-shaped links, in place and on wall-clock time.

Each change is ``tc class change dev IF parent P classid C htb rate R ceil R burst 15k`` run in
the link's host (``mnexec -a PID``): the htb qdisc, its class and its queue stay; only the rate
moves. (Mininet's ``TCIntf.config(bw=...)`` deletes and re-adds the root qdisc, dropping whatever
is queued.) One ``tc`` call costs a few milliseconds and Mahimahi traces change every millisecond,
so a trace is binned to at least `MIN_BIN_S` before replay (`replay_trace`).

Change ``i`` of a link is due at ``start + t_i`` on the monotonic clock, where ``start`` is fixed
when replay begins: the replayer sleeps until that instant, so late calls never push later ones
back (no accumulated drift). After a trace's end it loops or holds, like `Trace.rate_mbps`.
"""

from __future__ import annotations

import dataclasses
import heapq
import itertools
import re
import subprocess
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from quantpipe_core.config import Config, LinkConfig
from quantpipe_core.trace import Trace, load_link_trace

MIN_BIN_S = 0.1  # no rate changes finer than this
OUTAGE_MBPS = 8e-6  # htb's smallest rate (8 bit/s): what a trace's rate of 0 is replayed as
TC_TIMEOUT_S = 5.0

_CLASS = re.compile(r"^class htb (\S+) (?:root|parent (\S+))", re.MULTILINE)
_QDISC = re.compile(r"^qdisc htb (\S+) root", re.MULTILINE)


def replay_trace(link: LinkConfig, path: str | Path) -> Trace:
    """The link's trace as the simulator loads it, binned to at least `MIN_BIN_S` if it changes
    faster than that (`replay_config` makes the simulator bin it the same way)."""
    trace = load_link_trace(link, path)
    if _too_fast(trace):
        trace = load_link_trace(dataclasses.replace(link, bin_s=max(link.bin_s, MIN_BIN_S)), path)
    return trace


def replay_config(config: Config, path: str | Path) -> tuple[Config, list[str]]:
    """`config` with ``bin_s`` raised to `MIN_BIN_S` on every link whose trace changes faster
    than a replay can follow, so that the simulator sees the rates the emulator replays; and a
    note for each such link. `path` is the trace of links that name none."""
    changes, notes = {}, []
    for k, link in enumerate(config.links):
        if _too_fast(load_link_trace(link, link.trace or path)):
            changes[f"links.{k}.bin_s"] = max(link.bin_s, MIN_BIN_S)
            notes.append(f"link {k}: trace binned to {MIN_BIN_S:g} s for replay "
                         f"(bin_s was {link.bin_s:g}); the simulation uses the same bins")
    return (config.replace(**changes) if changes else config), notes


def _too_fast(trace: Trace) -> bool:
    starts = [*trace.starts_s, trace.duration_s]
    return min(b - a for a, b in itertools.pairwise(starts)) < MIN_BIN_S - 1e-9


def changes(trace: Trace) -> Iterator[tuple[float, float]]:
    """``(t_s, mbps)`` for every rate change of ``trace``, forever under ``end="loop"``."""
    period = 0
    while True:
        offset = period * trace.duration_s
        for start, mbps in trace.segments():
            yield offset + start, mbps
        if trace.end == "hold":
            yield trace.duration_s, trace.hold_mbps
            return
        period += 1


def replayable_mbps(mbps: float) -> float:
    """The htb rate for a trace's `mbps`: htb has no rate 0, so an outage is its smallest rate."""
    return max(mbps, OUTAGE_MBPS)


def in_host(pid: int, *command: str) -> subprocess.CompletedProcess:
    """Run ``command`` in the network namespace of the Mininet host with shell ``pid``."""
    return subprocess.run(
        ["mnexec", "-a", str(pid), *command], capture_output=True, text=True,
        timeout=TC_TIMEOUT_S, check=False,
    )


def _tagged(link: int, trace: Trace) -> Iterator[tuple[float, int, float]]:
    for t, mbps in changes(trace):
        yield t, link, mbps


@dataclass(frozen=True)
class HtbClass:
    """Where a link's rate lives: ``tc class change dev intf parent parent classid classid``."""

    pid: int
    intf: str
    parent: str
    classid: str

    @classmethod
    def find(cls, pid: int, intf: str) -> HtbClass:
        """The leaf htb class Mininet's TCLink made on ``intf`` (parsed from ``tc class show``)."""
        shown = in_host(pid, "tc", "class", "show", "dev", intf).stdout
        found = _CLASS.findall(shown)
        if len(found) != 1:
            raise RuntimeError(f"{intf}: expected one htb class, tc shows {shown!r}")
        classid, parent = found[0]
        if not parent:  # a root class's parent is the qdisc
            qdisc = _QDISC.search(in_host(pid, "tc", "qdisc", "show", "dev", intf).stdout)
            if qdisc is None:
                raise RuntimeError(f"{intf}: no root htb qdisc")
            parent = qdisc.group(1)
        return cls(pid, intf, parent, classid)

    def set_rate(self, mbps: float) -> None:
        rate = f"{replayable_mbps(mbps):.6f}Mbit"
        done = in_host(
            self.pid, "tc", "class", "change", "dev", self.intf, "parent", self.parent,
            "classid", self.classid, "htb", "rate", rate, "ceil", rate, "burst", "15k",
        )
        if done.returncode != 0:
            raise RuntimeError(f"{self.intf}: tc class change failed: {done.stderr.strip()}")


@dataclass(frozen=True)
class Applied:
    """One rate change: due at ``due_s``, ``tc`` started at ``began_s``, returned at ``done_s``
    (seconds from the replay's start)."""

    link: int
    mbps: float
    due_s: float
    began_s: float
    done_s: float


class Replayer(threading.Thread):
    """Sets each link's rate from its trace until `stop` (or ``duration_s``); a daemon thread.

    ``links[k]`` is link k's `HtbClass` (or anything with ``set_rate(mbps)``), ``traces[k]`` its
    trace. ``start`` (``time.monotonic()`` seconds) defaults to when the thread starts, so
    that ``start`` can be shared with the runtime's clock. Applied changes go to ``self.applied``;
    an error stops the replay and is kept in ``self.error``.
    """

    def __init__(
        self, links: Sequence, traces: Sequence[Trace], *, start: float | None = None,
        duration_s: float | None = None,
    ) -> None:
        super().__init__(name="trace-replayer", daemon=True)
        if len(links) != len(traces):
            raise ValueError(f"{len(links)} links but {len(traces)} traces")
        self.links, self.traces = list(links), list(traces)
        self.start_s = start
        self.duration_s = duration_s
        self.applied: list[Applied] = []
        self.error: BaseException | None = None
        self._stop_event = threading.Event()

    def start(self) -> None:
        if self.start_s is None:
            self.start_s = time.monotonic()
        super().start()

    def run(self) -> None:
        start = self.start_s
        assert start is not None
        events = heapq.merge(*(_tagged(k, trace) for k, trace in enumerate(self.traces)))
        try:
            for due, k, mbps in events:
                if self.duration_s is not None and due >= self.duration_s:
                    return
                if self._stop_event.wait(max(0.0, start + due - time.monotonic())):
                    return
                began = time.monotonic() - start
                self.links[k].set_rate(mbps)
                self.applied.append(Applied(k, mbps, due, began, time.monotonic() - start))
        except BaseException as error:  # kept for the caller: a thread cannot raise to it
            self.error = error

    def stop(self, timeout: float = 5.0) -> None:
        self._stop_event.set()
        if self.is_alive():
            self.join(timeout)
