"""The SimPy model of a pipeline: a source, one process per stage and one per link.

A microbatch leaves the source, and at each stage is decoded (if it arrived over a link),
computed, and encoded at the bitwidth its link's policy chose, through the link's lossless coder
or not as the policy chose, then waits for the link. A link
carries one packet at a time; a transfer lasts until the trace's capacity, integrated from the
moment it starts, has carried the packet's bits, plus a fixed latency. The sending stage's
policy decides every `window` microbatches from an `Observation` of what that stage measured:
only transfers already delivered count.

Everything here is already resolved (times in seconds, bytes per bitwidth, traces, policies);
`sim.simulate` builds these specs from a configuration.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence

import simpy

from quantpipe_core.plan import LinkSpec, SourceSpec, StageSpec
from quantpipe_core.results import Records
from quantpipe_core.sender import LinkSender
from quantpipe_core.trace import size_text

# A run's microbatches: each holds a few hundred bytes of records per stage and takes tens of
# microseconds to simulate, so a run of 1e10 (a target of 1e9 items/s, a trace of 1e300 s) is
# refused before it starts, and one of more than a few hundred thousand is announced.
MAX_MICROBATCHES = 5_000_000
WARN_MICROBATCHES = 500_000
BYTES_PER_STAGE = 300  # records of one microbatch at one stage
SECONDS_PER_STAGE = 15e-6  # wall time to simulate one microbatch at one stage


class RunSizeError(ValueError):
    """A run that would simulate more microbatches than the budget."""


class RunSizeWarning(UserWarning):
    """A run that will take a lot of memory or time: its estimate."""


def expected_microbatches(source: SourceSpec, until_s: float) -> float:
    """Microbatches the source offers in `until_s` at the target rate (the open loop's exact
    count; a closed loop offers about as many when it keeps up with its target)."""
    return until_s * source.target_rate_items_per_s / source.items_per_microbatch


def check_run_size(source: SourceSpec, until_s: float, stages: int) -> None:
    """Refuse a run beyond `MAX_MICROBATCHES` before it starts, and warn with an estimate of
    its memory and time above `WARN_MICROBATCHES`."""
    count = expected_microbatches(source, until_s)
    what = (f"{until_s:g} s at {source.target_rate_items_per_s:g} items/s in microbatches of "
            f"{source.items_per_microbatch} makes ~{count:.3g} microbatches")
    if not count <= MAX_MICROBATCHES:
        raise RunSizeError(
            f"{what}, above the budget of {MAX_MICROBATCHES:.3g}: shorten the run "
            "(run.duration_s, --duration; by default the trace's length) or lower "
            "source.target_rate (--target-rate)"
        )
    if count > WARN_MICROBATCHES:
        warnings.warn(
            f"{what}: expect ~{size_text(count * stages * BYTES_PER_STAGE)} of memory and "
            f"~{count * stages * SECONDS_PER_STAGE / 60:.2g} min", RunSizeWarning, stacklevel=2,
        )


class Pipeline:
    """The SimPy processes of one run; `run(until)` simulates and returns the records."""

    def __init__(
        self,
        stages: Sequence[StageSpec],
        links: Sequence[LinkSpec],
        source: SourceSpec,
        *,
        allowed_bits: Sequence[int],
        window: int,
        on_progress: Callable[[float], None] | None = None,
    ) -> None:
        if len(links) != len(stages) - 1:
            raise ValueError(f"{len(stages)} stages need {len(stages) - 1} links, got {len(links)}")
        if missing := [k for k, link in enumerate(links) if link.trace is None]:
            raise ValueError(
                f"the simulator needs a capacity trace on every link; link {missing[0]} has none"
            )
        self.env = simpy.Environment()
        self.stages, self.links, self.source = list(stages), list(links), source
        self.records = Records()
        self.inboxes = [simpy.Store(self.env) for _ in stages]
        self.outboxes = [simpy.Store(self.env) for _ in links]
        self.senders = [LinkSender(k, spec, source, allowed_bits, window, self.records)
                        for k, spec in enumerate(links)]
        self.in_flight = simpy.Container(self.env, capacity=source.max_in_flight,
                                         init=source.max_in_flight)
        self.on_progress = on_progress
        self.window = window

    def run(self, until_s: float) -> Records:
        windows = math.ceil(expected_microbatches(self.source, until_s) / self.window)
        for sender in self.senders:
            sender.expected_windows = windows
        self.env.process(self._source())
        for k in range(len(self.stages)):
            self.env.process(self._stage(k))
        for k in range(len(self.links)):
            self.env.process(self._link(k))
        if self.on_progress is not None:
            self.env.process(self._progress(until_s))
        self.env.run(until=until_s)
        return self.records

    def _source(self):
        period = self.source.period_s
        closed = self.source.mode == "closed"
        microbatch = 0
        while True:
            if microbatch >= MAX_MICROBATCHES:
                raise RunSizeError(
                    f"the source offered {MAX_MICROBATCHES:.3g} microbatches by "
                    f"{self.env.now:g} s, the budget of a run: shorten the run or lower "
                    "source.target_rate"
                )
            if closed:
                yield self.in_flight.get(1)
            self.records.offered(microbatch, self.env.now)
            yield self.inboxes[0].put((microbatch, None, None))
            microbatch += 1
            if not closed:
                yield self.env.timeout(period)

    def _stage(self, k: int):
        spec, last = self.stages[k], k == len(self.stages) - 1
        while True:
            microbatch, bits_in, coded_in = yield self.inboxes[k].get()
            self.records.started(microbatch, k, self.env.now)
            work = spec.compute_s
            if bits_in:
                work += spec.decode_s.get(bits_in, 0.0)
                if not coded_in:
                    work -= self.links[k - 1].coder_decode_s.get(bits_in, 0.0)
            bits = coded = None
            if not last:
                sender, link = self.senders[k], self.links[k]
                bits = sender.bits_for_next(self.env.now, microbatch)
                coded = sender.coding
                work += spec.encode_s.get(bits, 0.0)
                if not coded:
                    work -= link.coder_encode_s.get(bits, 0.0)
            yield self.env.timeout(work)
            self.records.finished(microbatch, k, self.env.now)
            if last:
                self.records.sunk(microbatch, self.env.now)
                if self.source.mode == "closed":
                    yield self.in_flight.put(1)
            else:
                nbytes = (link.packet_bytes if coded else sender.sizes.worst)[bits]
                sender.enqueue(nbytes, bits, coded)
                yield self.outboxes[k].put((microbatch, bits, coded, nbytes))

    def _link(self, k: int):
        spec, sender = self.links[k], self.senders[k]
        while True:
            microbatch, bits, coded, nbytes = yield self.outboxes[k].get()
            sender.dequeue()
            start = self.env.now
            send_s = spec.trace.finish_time(start, nbytes * 8 / spec.payload_share) - start
            yield self.env.timeout(send_s + spec.latency_s)
            sender.delivered(nbytes, send_s)
            self.records.sent(microbatch, k, bits, nbytes)
            self.records.arrived(microbatch, k, self.env.now)
            yield self.inboxes[k + 1].put((microbatch, bits, coded))

    def _progress(self, until_s: float):
        step = max(until_s / 100, 1e-3)
        while True:
            yield self.env.timeout(step)
            self.on_progress(self.env.now)
