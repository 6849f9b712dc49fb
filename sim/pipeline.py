"""The SimPy model of a pipeline: a source, one process per stage and one per link.

A microbatch leaves the source, and at each stage is decoded (if it arrived over a link),
computed, and encoded at the bitwidth its link's policy chose, then waits for the link. A link
carries one packet at a time; a transfer lasts until the trace's capacity, integrated from the
moment it starts, has carried the packet's bits, plus a fixed latency. The sending stage's
policy decides every `window` microbatches from an `Observation` of what that stage measured:
only transfers already delivered count.

Everything here is already resolved (times in seconds, bytes per bitwidth, traces, policies);
`sim.simulate` builds these specs from a configuration.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import simpy

from quantpipe_core.policy import Observation, Policy, check_decision
from quantpipe_core.results import Records, WindowRecord


class CapacityTrace(Protocol):
    def finish_time(self, start_s: float, bits: float) -> float: ...

    def mean_mbps(self, t0: float, t1: float) -> float: ...


@dataclass(frozen=True)
class StageSpec:
    """One device's work per microbatch: compute, and codec time by bitwidth."""

    compute_s: float
    encode_s: Mapping[int, float] = field(default_factory=dict)  # for the link it sends on
    decode_s: Mapping[int, float] = field(default_factory=dict)  # for the link it receives from


@dataclass
class LinkSpec:
    """One link: its capacity trace, packet sizes, and the sending stage's policy."""

    trace: CapacityTrace
    packet_bytes: Mapping[int, int]
    policy: Policy
    tensor_shape: tuple[int, ...]
    latency_s: float = 0.0
    accuracy_by_bits: Mapping[int, float | None] | None = None


@dataclass(frozen=True)
class SourceSpec:
    """Open loop: one microbatch every `items_per_microbatch / target_rate` seconds; closed
    loop: a new one whenever fewer than `max_in_flight` are in the pipeline."""

    target_rate_items_per_s: float
    items_per_microbatch: int
    mode: str = "open"
    max_in_flight: int = 4


class LinkSender:
    """The sending side of a link: the policy's schedule and what the stage measured."""

    def __init__(self, index: int, spec: LinkSpec, source: SourceSpec, allowed: Sequence[int],
                 window: int, records: Records) -> None:
        self.index, self.spec, self.source = index, spec, source
        self.allowed, self.window, self.records = tuple(allowed), window, records
        self.schedule: list[int] = []
        self.window_index = -1
        self.delivered_bytes = 0
        self.delivered_s = 0.0
        self.history: list[float] = []
        self.measured: float | None = None
        self.queued = 0

    def bits_for_next(self, now: float) -> int:
        """The bitwidth of the next microbatch; asks the policy at each window's start."""
        if not self.schedule:
            self._decide(now)
        return self.schedule.pop(0)

    def delivered(self, nbytes: int, send_s: float) -> None:
        self.delivered_bytes += nbytes
        self.delivered_s += send_s

    def _decide(self, now: float) -> None:
        if self.delivered_s > 0:
            if self.measured is not None:
                self.history.append(self.measured)
            self.measured = self.delivered_bytes * 8 / self.delivered_s / 1e6
        last = self.records.windows[-1] if self.window_index >= 0 else None
        obs = Observation(
            now_s=now,
            window_index=self.window_index + 1,
            window_len=self.window,
            items_per_microbatch=self.source.items_per_microbatch,
            bytes_sent=self.delivered_bytes,
            send_s=self.delivered_s,
            measured_mbps=self.measured,
            history_mbps=tuple(self.history[-16:]),
            target_rate_items_per_s=self.source.target_rate_items_per_s,
            tensor_shape=self.spec.tensor_shape,
            allowed_bits=self.allowed,
            bits_last_window=tuple(last.bits) if last else (),
            packet_bytes=self.spec.packet_bytes,
            accuracy_by_bits=self.spec.accuracy_by_bits,
            queued_microbatches=self.queued,
        )
        self.schedule = check_decision(self.spec.policy.decide(obs), obs)
        if last is not None:
            last.t_end_s = now
        self.window_index += 1
        self.records.windows.append(
            WindowRecord(self.index, self.window_index, now, None, list(self.schedule),
                         self.measured)
        )
        self.delivered_bytes, self.delivered_s = 0, 0.0


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

    def run(self, until_s: float) -> Records:
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
        period = self.source.items_per_microbatch / self.source.target_rate_items_per_s
        closed = self.source.mode == "closed"
        microbatch = 0
        while True:
            if closed:
                yield self.in_flight.get(1)
            self.records.t_source[microbatch] = self.env.now
            yield self.inboxes[0].put((microbatch, None))
            microbatch += 1
            if not closed:
                yield self.env.timeout(period)

    def _stage(self, k: int):
        spec, last = self.stages[k], k == len(self.stages) - 1
        while True:
            microbatch, bits_in = yield self.inboxes[k].get()
            self.records.stage_start[microbatch, k] = self.env.now
            work = spec.compute_s + (spec.decode_s.get(bits_in, 0.0) if bits_in else 0.0)
            bits = None
            if not last:
                bits = self.senders[k].bits_for_next(self.env.now)
                work += spec.encode_s.get(bits, 0.0)
            yield self.env.timeout(work)
            self.records.stage_end[microbatch, k] = self.env.now
            if last:
                self.records.t_sink[microbatch] = self.env.now
                if self.source.mode == "closed":
                    yield self.in_flight.put(1)
            else:
                self.senders[k].queued += 1
                yield self.outboxes[k].put((microbatch, bits))

    def _link(self, k: int):
        spec, sender = self.links[k], self.senders[k]
        while True:
            microbatch, bits = yield self.outboxes[k].get()
            sender.queued -= 1
            nbytes = spec.packet_bytes[bits]
            start = self.env.now
            send_s = spec.trace.finish_time(start, nbytes * 8) - start
            yield self.env.timeout(send_s + spec.latency_s)
            sender.delivered(nbytes, send_s)
            self.records.link_bits[microbatch, k] = bits
            self.records.link_bytes[microbatch, k] = nbytes
            self.records.link_arrive[microbatch, k] = self.env.now
            yield self.inboxes[k + 1].put((microbatch, bits))

    def _progress(self, until_s: float):
        step = max(until_s / 100, 1e-3)
        while True:
            yield self.env.timeout(step)
            self.on_progress(self.env.now)
