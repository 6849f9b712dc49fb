"""A stage's compute loop: where its microbatches come from (the source's pace on rank 0, the
inbox elsewhere), its units, and where they go (the sender, or the sink's score); when the run
ends (a duration, a count, or one pass of the data set) and the closed loop's credits."""

from __future__ import annotations

import math
import os
import queue
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch

from quantpipe_core.cli import echo
from quantpipe_core.models import Carry
from quantpipe_core.models.carry import decode_carry, encode_carry
from quantpipe_core.names import values_label
from quantpipe_core.quant import PacketError
from quantpipe_core.results import Records
from quantpipe_core.runtime.channel import Channel
from quantpipe_core.runtime.failure import Blame, Failure, StageFailure
from quantpipe_core.runtime.links import END, POLL_S, Sender
from quantpipe_core.runtime.plan import RuntimePlan
from quantpipe_core.tasks import RunningScore, Task, inputs_in


def tensor_form(shape: tuple[int, ...]) -> tuple[int, int | None]:
    """What a stage can rely on in a tensor it receives: its number of dimensions and, for a
    hidden state, its feature width (batch and sequence lengths vary between microbatches)."""
    return len(shape), shape[-1] if len(shape) >= 3 else None


class SharedScore:
    """The sink's running score (the task's own), which the compute loop adds to while an
    interrupt's watcher thread may read it: both hold `lock`."""

    def __init__(self, score: RunningScore) -> None:
        self.score, self.lock = score, threading.Lock()

    def add(self, microbatch: int, outputs: torch.Tensor) -> None:
        with self.lock:
            self.score.add(microbatch, outputs)

    def result(self) -> dict[str, Any]:
        with self.lock:
            return self.score.result()


@dataclass(frozen=True)
class Fault:
    """A testing aid: "corrupt:N", "forge:N", "rename:N" (frame N), "die:N", "slow:MS"."""

    kind: str = ""
    at: int = -1

    @classmethod
    def parse(cls, text: str) -> Fault:
        kind, _, at = text.partition(":")
        return cls(kind, int(at) if at else -1)

    def on(self, kind: str, microbatch: int) -> bool:
        return self.kind == kind and microbatch == self.at


@dataclass
class Pace:
    """When the run ends: `duration_s` (None: none) of the clock, or `count` microbatches."""

    clock: Callable[[], float]
    duration_s: float | None
    count: int | None
    open_loop: bool

    def past_end(self) -> bool:
        """The duration is over: as in the simulator, nothing done from now on counts, so the
        stages of an open loop drop what is still queued instead of working on it. (A closed
        loop has at most `max_in_flight` microbatches left, and each must return its credit.)"""
        return self.open_loop and self.duration_s is not None and self.clock() >= self.duration_s


class StageDriver:
    """The compute loop of one stage."""

    def __init__(self, plan: RuntimePlan, rank: int, stage: torch.nn.Module, records: Records,
                 failure: Failure, blame: Blame, pace: Pace, timeout_s: float, fault: Fault,
                 task: Task | None, sender: Sender | None, inbox: queue.Queue | None,
                 sink: SharedScore | None, credits: Channel) -> None:
        self.plan, self.rank, self.stage, self.records = plan, rank, stage, records
        self.failure, self.blame, self.pace, self.timeout_s = failure, blame, pace, timeout_s
        self.fault, self.task, self.sender, self.inbox = fault, task, sender, inbox
        self.sink, self.credits = sink, credits
        self.ended_by_duration = False
        self.never_offered = 0
        config = plan.config
        self.inbound = {} if rank == 0 else {  # name: (dimensions, features)
            spec.name: tensor_form(spec.shape) for spec in plan.model.carry_specs(
                plan.cuts[rank - 1], config.model.microbatch, config.model.tokens)}

    def run(self) -> None:
        items = self.source_items() if self.rank == 0 else self.inbox_items()
        for microbatch, t_source, carry in items:
            if self.rank > 0 and self.pace.past_end():
                continue  # drained, not computed: it would finish after the end
            if self.fault.on("die", microbatch):
                os._exit(3)  # testing aid: a crash, with nothing said and nothing written
            self.compute(microbatch, t_source, carry)
        if self.sender is not None:
            self.sender.close()

    def compute(self, microbatch: int, t_source: float | None, carry: Carry) -> None:
        clock = self.pace.clock
        start = clock()
        if t_source is not None:
            items = inputs_in(carry)
            full = items == self.plan.source.items_per_microbatch
            self.records.offered(microbatch, t_source, None if full else items)
        self.records.started(microbatch, self.rank, start)
        with torch.no_grad():
            out = self.stage(carry)
        if self.fault.kind == "slow":
            time.sleep(self.fault.at / 1000)  # testing aid: a stage slower than its input
        if self.sender is None:
            assert self.sink is not None
            self.sink.add(microbatch, out["hidden"])
            now = clock()
            self.records.finished(microbatch, self.rank, now)
            self.records.sunk(microbatch, now)
            if self.plan.source.mode == "closed":
                self.credit("send", lambda: self.credits.send_number(b"credit", microbatch))
            return
        bits, coded = self.sender.next_packet(start, microbatch)
        self.check_pace(microbatch, clock() - start)
        if self.fault.on("rename", microbatch):
            out = {f"x{name}": tensor for name, tensor in out.items()}  # testing aid
        codec = self.plan.config.link_codec(self.rank)
        frame = bytearray(encode_carry(out, bits, codec if coded else values_label(codec)))
        if self.fault.on("corrupt", microbatch):
            frame[len(frame) // 2] ^= 0xFF  # testing aid: one flipped byte on the wire
        self.records.finished(microbatch, self.rank, clock())
        self.sender.put(microbatch, bits, coded, frame)
        self.failure.check()

    def source_items(self) -> Iterator[tuple[int, float, Carry]]:
        """(microbatch, t_source, carry) at the source's pace, until the run's bound."""
        assert self.task is not None
        data, pace, source = self.task.microbatches, self.pace, self.plan.source
        count = pace.count if pace.count is not None or pace.duration_s is not None else len(data)
        period = source.period_s
        closed = source.mode == "closed"
        credits = microbatch = 0
        while count is None or microbatch < count:
            if closed:
                while microbatch - credits >= source.max_in_flight:
                    self.credit("receive", lambda: self.credits.recv_number(b"credit"))
                    credits += 1
                t = pace.clock()
            else:
                t = microbatch * period
                self.failure.event.wait(max(0.0, t - pace.clock()))
            self.failure.check()
            if pace.duration_s is not None and (t >= pace.duration_s or pace.past_end()):
                self.ended_by_duration = True
                if not closed:
                    self.never_offered = max(0, math.ceil(pace.duration_s / period) - microbatch)
                break
            yield microbatch, t, data[microbatch % len(data)]
            microbatch += 1
        while closed and credits < microbatch:
            self.credit("receive", lambda: self.credits.recv_number(b"credit"))
            credits += 1

    def credit(self, verb: str, exchange: Callable[[], Any]) -> None:
        """One credit exchange with the other end of the closed loop."""
        try:
            exchange()
        except Exception as error:
            self.failure.set(self.blame.on_link("on the credit channel", self.credits.peer,
                                                error))
            raise StageFailure(self.failure.message) from None

    def inbox_items(self) -> Iterator[tuple[int, None, Carry]]:
        """(microbatch, None, carry) as frames arrive from the previous stage."""
        assert self.inbox is not None
        link = self.rank - 1
        while True:
            try:
                item = self.inbox.get(timeout=POLL_S)
            except queue.Empty:
                self.failure.check()
                continue
            if item is END:
                self.failure.check()
                return
            microbatch, _bits, frame = item
            try:
                carry = decode_carry(frame)
            except PacketError as error:
                raise StageFailure(
                    f"{self.blame.name}: corrupt frame for microbatch {microbatch} from stage "
                    f"{link} on link {link}: {error}"
                ) from None
            forms = {name: tensor_form(tensor.shape) for name, tensor in carry.items()}
            if forms != self.inbound:
                raise StageFailure(
                    f"{self.blame.name}: the frame for microbatch {microbatch} on link {link} "
                    f"holds {echo(forms)} (name: dimensions, features) where this stage takes "
                    f"{echo(self.inbound)}"
                )
            yield microbatch, None, carry

    def check_pace(self, microbatch: int, seconds: float) -> None:
        """A stage that takes longer than the timeout makes the next one give up waiting on its
        link; say here what took so long, or the run's only message is that link's timeout."""
        if seconds > self.timeout_s:
            raise StageFailure(
                f"{self.blame.name}: microbatch {microbatch} took {seconds:.1f} s to compute and "
                f"choose its bits (policy {self.plan.config.policy.name}), longer than "
                f"--timeout-s {self.timeout_s:g}: the next stage stops waiting for it"
            )
