"""One pipeline stage as one process: torch.distributed (gloo over TCP) to its neighbours.

Wire protocol on link k (its own gloo group of ranks k and k+1, so links never share a channel):
the sender sends a header (int64 ``[frame_bytes, microbatch, bits]``; ``frame_bytes = 0`` ends
the stream), then the carry frame (`encode_carry`) as a uint8 tensor; the receiver answers with
an ack (int64 ``[microbatch]``) as soon as the frame has arrived, before it decodes or computes.
The sender's transfer time of a frame runs from the start of its send to the ack's arrival, so it
counts the delivery plus one ack's return trip, and never the receiver's compute.

Threads per rank: a receiver (link k-1), the compute loop (source on rank 0, sink on the last
rank) and a sender (link k), so a stage computes the next microbatch while a frame is on the
link, as in the simulator. In closed-loop mode the sink returns one credit per finished
microbatch to rank 0 on a group of its own (control, not microbatch data).
"""

from __future__ import annotations

import json
import os
import queue
import sys
import threading
import time
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from quantpipe_core.config import Config
from quantpipe_core.heap import keep_large_allocations
from quantpipe_core.models.carry import decode_carry, encode_carry
from quantpipe_core.quant import PacketError
from quantpipe_core.results import Records
from quantpipe_core.runtime.plan import RuntimePlan, resolve_runtime
from quantpipe_core.runtime.report import (
    records_to_json,
    write_clock,
    write_merged,
    write_rank_report,
)
from quantpipe_core.sender import LinkSender
from quantpipe_core.tasks import DigitsTop1, RandomImages, inputs_for, nearest_other

END = None
POLL_S = 0.2


class StageFailure(RuntimeError):
    """A fault that ends the run; the message names the stage and the cause."""


@dataclass(frozen=True)
class RankOptions:
    rank: int
    master_addr: str = "127.0.0.1"
    master_port: int = 29500
    out: Path | None = None
    timeout_s: float = 30.0
    duration_s: float | None = None  # None: run.duration_s of the config
    microbatches: int | None = None  # None: no count limit (one pass if there is no duration)
    fault: str = ""  # testing aid: "corrupt:N" (this rank corrupts frame N) or "die:N"


class Failure:
    """The first fault any thread of this rank saw."""

    def __init__(self) -> None:
        self.event = threading.Event()
        self.message = ""
        self.lock = threading.Lock()

    def set(self, message: str) -> None:
        with self.lock:
            if not self.event.is_set():
                self.message = message
                self.event.set()

    def check(self) -> None:
        if self.event.is_set():
            raise StageFailure(self.message)


class Rank:
    """Everything one rank does in a run."""

    def __init__(self, config: Config, options: RankOptions) -> None:
        self.config, self.options = config, options
        self.rank = options.rank
        self.world = len(config.devices)
        if self.world < 2:
            raise ValueError("the runtime needs at least two devices (one link)")
        if not 0 <= self.rank < self.world:
            raise ValueError(f"--rank {self.rank}: the config has {self.world} devices")
        self.name = f"stage {self.rank} ({config.devices[self.rank].name})"
        self.last = self.rank == self.world - 1
        torch.set_num_threads(config.devices[self.rank].threads)
        self.plan: RuntimePlan = resolve_runtime(config)
        self.stage = self.plan.model.split(self.plan.cuts)[self.rank]
        self.task = inputs_for(self.plan.model, config.model.microbatch) if (
            self.rank == 0 or self.last) else None
        self.records = Records()
        self.failure = Failure()
        self.inbox: queue.Queue = queue.Queue()
        self.outbox: queue.Queue = queue.Queue()
        self.sender_lock = threading.Lock()
        self.sender: LinkSender | None = None
        if not self.last:
            self.sender = LinkSender(
                self.rank, self.plan.links[self.rank], self.plan.source,
                config.quant.allowed_bits, config.policy.window, self.records,
            )
        self.sink = SinkMetric(self.task) if self.last else None
        kind, _, at = options.fault.partition(":")
        self.fault_kind, self.fault_at = kind, int(at) if at else -1
        self.t0 = 0.0

    # ----- setup -----------------------------------------------------------------------------

    def connect(self) -> None:
        timeout = timedelta(seconds=self.options.timeout_s)
        dist.init_process_group(
            "gloo", init_method=f"tcp://{self.options.master_addr}:{self.options.master_port}",
            rank=self.rank, world_size=self.world, timeout=timeout,
        )
        self.link_groups = [dist.new_group([k, k + 1], timeout=timeout)
                            for k in range(self.world - 1)]
        self.credit_group = dist.new_group([0, self.world - 1], timeout=timeout)
        start = torch.tensor([time.time()], dtype=torch.float64)
        dist.broadcast(start, src=0)
        self.t0 = float(start.item())
        if self.rank == 0 and self.options.out is not None:
            write_clock(self.options.out, self.t0)

    def clock(self) -> float:
        """Seconds since rank 0's start (wall clocks: see docs/runtime.md on clocks)."""
        return time.time() - self.t0

    # ----- threads ---------------------------------------------------------------------------

    def peer_error(self, link: int, peer: int, error: BaseException) -> str:
        text = str(error).strip().splitlines()[0] if str(error).strip() else repr(error)
        text = text.split(". This is typically")[0].split("] ", 1)[-1]  # gloo's source path
        who = f"stage {peer} ({self.config.devices[peer].name})"
        if "timed out" in text.lower() or "timeout" in text.lower():
            cause = f"no answer from {who} on link {link} within {self.options.timeout_s:g} s"
        else:
            cause = f"{who} on link {link} is gone or the link broke ({text})"
        return f"{self.name}: {cause}"

    def receive_loop(self) -> None:
        link, peer = self.rank - 1, self.rank - 1
        group = self.link_groups[link]
        try:
            while True:
                header = torch.zeros(3, dtype=torch.int64)
                dist.recv(header, src=peer, group=group)
                length, microbatch, bits = (int(v) for v in header.tolist())
                if length == 0:
                    self.inbox.put(END)
                    return
                if length < 0 or length > 1 << 31:
                    raise StageFailure(
                        f"{self.name}: corrupt header on link {link} (frame of {length} bytes)"
                    )
                frame = torch.empty(length, dtype=torch.uint8)
                dist.recv(frame, src=peer, group=group)
                arrived = self.clock()
                dist.send(torch.tensor([microbatch], dtype=torch.int64), dst=peer, group=group)
                self.records.link_arrive[microbatch, link] = arrived
                self.inbox.put((microbatch, bits, frame))
        except StageFailure as error:
            self.failure.set(str(error))
        except Exception as error:
            self.failure.set(self.peer_error(link, peer, error))
        self.inbox.put(END)

    def send_loop(self) -> None:
        assert self.sender is not None
        link, peer = self.rank, self.rank + 1
        group = self.link_groups[link]
        try:
            while True:
                item = self.outbox.get()
                if item is END:
                    dist.send(torch.zeros(3, dtype=torch.int64), dst=peer, group=group)
                    return
                microbatch, bits, frame = item
                start = self.clock()
                header = torch.tensor([len(frame), microbatch, bits], dtype=torch.int64)
                dist.send(header, dst=peer, group=group)
                dist.send(torch.frombuffer(frame, dtype=torch.uint8), dst=peer, group=group)
                ack = torch.zeros(1, dtype=torch.int64)
                dist.recv(ack, src=peer, group=group)
                send_s = self.clock() - start
                if int(ack.item()) != microbatch:
                    raise StageFailure(
                        f"{self.name}: link {link} acknowledged microbatch {int(ack.item())} "
                        f"while {microbatch} was sent"
                    )
                with self.sender_lock:
                    self.sender.delivered(len(frame), send_s)
                    self.sender.dequeue()
                self.records.link_bits[microbatch, link] = bits
                self.records.link_bytes[microbatch, link] = len(frame)
        except StageFailure as error:
            self.failure.set(str(error))
        except Exception as error:
            self.failure.set(self.peer_error(link, peer, error))

    # ----- the compute loop ------------------------------------------------------------------

    def limits(self) -> tuple[float | None, int | None]:
        duration = self.options.duration_s
        if duration is None:
            duration = self.config.run.duration_s or None
        count = self.options.microbatches
        if duration is None and count is None:
            assert self.task is not None
            count = len(self.task.microbatches)  # one pass of the data set
        return duration, count

    def source_items(self):
        """(microbatch, t_source, carry) at the source's pace, until the run's bound."""
        assert self.task is not None
        data = self.task.microbatches
        duration, count = self.limits()
        source = self.plan.source
        period = source.items_per_microbatch / source.target_rate_items_per_s
        closed = source.mode == "closed"
        credits = 0
        microbatch = 0
        while count is None or microbatch < count:
            if closed:
                while microbatch - credits >= source.max_in_flight:
                    credit = torch.zeros(1, dtype=torch.int64)
                    self.recv_credit(credit)
                    credits += 1
                t = self.clock()
            else:
                t = microbatch * period
                self.failure.event.wait(max(0.0, t - self.clock()))
            self.failure.check()
            if duration is not None and t >= duration:
                break
            yield microbatch, t, data[microbatch % len(data)]
            microbatch += 1
        if closed:
            while credits < microbatch:
                self.recv_credit(torch.zeros(1, dtype=torch.int64))
                credits += 1

    def recv_credit(self, credit: torch.Tensor) -> None:
        try:
            dist.recv(credit, src=self.world - 1, group=self.credit_group)
        except Exception as error:
            self.failure.set(self.peer_error(-1, self.world - 1, error).replace(
                "on link -1", "(credits)"))
            raise StageFailure(self.failure.message) from None

    def inbox_items(self):
        """(microbatch, t_arrival, carry) as frames arrive from the previous stage."""
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
                carry = decode_carry(frame.numpy().tobytes())
            except PacketError as error:
                raise StageFailure(
                    f"{self.name}: corrupt frame for microbatch {microbatch} from stage "
                    f"{link} on link {link}: {error}"
                ) from None
            yield microbatch, None, carry

    def compute_loop(self) -> None:
        items = self.source_items() if self.rank == 0 else self.inbox_items()
        codec = self.config.quant.codec
        for microbatch, t_source, carry in items:
            if self.fault_kind == "die" and microbatch == self.fault_at:
                os._exit(3)  # testing aid: a crash, with nothing said and nothing written
            start = self.clock()
            if t_source is not None:
                self.records.t_source[microbatch] = t_source
            self.records.stage_start[microbatch, self.rank] = start
            with torch.no_grad():
                out = self.stage(carry)
            if self.last:
                assert self.sink is not None
                self.sink.add(microbatch, out["hidden"])
                now = self.clock()
                self.records.stage_end[microbatch, self.rank] = now
                self.records.t_sink[microbatch] = now
                if self.plan.source.mode == "closed":
                    self.send_credit(microbatch)
                continue
            assert self.sender is not None
            with self.sender_lock:
                bits = self.sender.bits_for_next(start)
            frame = bytearray(encode_carry(out, bits, codec))
            if self.fault_kind == "corrupt" and microbatch == self.fault_at:
                frame[len(frame) // 2] ^= 0xFF  # testing aid: one flipped byte on the wire
            self.records.stage_end[microbatch, self.rank] = self.clock()
            with self.sender_lock:
                self.sender.enqueue(len(frame))
            self.outbox.put((microbatch, bits, frame))
            self.failure.check()

    def send_credit(self, microbatch: int) -> None:
        try:
            dist.send(torch.tensor([microbatch], dtype=torch.int64), dst=0,
                      group=self.credit_group)
        except Exception as error:
            self.failure.set(self.peer_error(-1, 0, error).replace("on link -1", "(credits)"))
            raise StageFailure(self.failure.message) from None

    # ----- a whole run -----------------------------------------------------------------------

    def run(self) -> int:
        """Run this rank to the end; 0, or 1 after a fault (reported and written)."""
        threads = []
        try:
            self.connect()
            if self.rank > 0:
                threads.append(threading.Thread(target=self.receive_loop, daemon=True))
            if not self.last:
                threads.append(threading.Thread(target=self.send_loop, daemon=True))
            for thread in threads:
                thread.start()
            self.compute_loop()
            if not self.last:
                self.outbox.put(END)
            for thread in threads:
                thread.join(self.options.timeout_s + 5)
            self.failure.check()
            if any(thread.is_alive() for thread in threads):
                raise StageFailure(f"{self.name}: a link thread did not finish")
            reports = self.gather(self.report(None))
        except Exception as error:
            message = str(error) if isinstance(error, StageFailure) else (
                self.failure.message or f"{self.name}: {type(error).__name__}: {error}")
            print(f"quantpipe runtime: {message}", file=sys.stderr, flush=True)
            self.finish([self.report(message)])
            return 1
        self.finish(reports)
        return 0  # no destroy_process_group: it can block on a vanished peer; the process exits

    def report(self, error: str | None) -> dict[str, Any]:
        for _ in range(5):  # link threads may still write after a fault
            try:
                records = records_to_json(self.records)
                break
            except RuntimeError:
                time.sleep(0.01)
        else:
            records = {}
        return {"rank": self.rank, "records": records, "error": error,
                "sink": self.sink.result() if self.sink is not None else None}

    def gather(self, mine: dict[str, Any]) -> list[dict[str, Any]]:
        """Every rank's report at rank 0 (JSON bytes over gloo: a report, not microbatch data)."""
        if self.rank != 0:
            data = json.dumps(mine).encode()
            dist.send(torch.tensor([len(data)], dtype=torch.int64), dst=0)
            dist.send(torch.frombuffer(bytearray(data), dtype=torch.uint8), dst=0)
            return [mine]
        reports = [mine]
        for rank in range(1, self.world):
            length = torch.zeros(1, dtype=torch.int64)
            dist.recv(length, src=rank)
            data = torch.empty(int(length.item()), dtype=torch.uint8)
            dist.recv(data, src=rank)
            reports.append(json.loads(data.numpy().tobytes()))
        return reports

    def finish(self, reports: list[dict[str, Any]]) -> None:
        out = self.options.out
        if out is None:
            return
        write_rank_report(out, reports[0])
        if self.rank == 0:
            write_merged(out, self.plan, reports, self.limits()[0])


class SinkMetric:
    """Predictions and the measured metric: top-1 against labels (classifiers) or
    nearest-neighbour agreement with the float32 embeddings (sentence encoders)."""

    def __init__(self, task: Any) -> None:
        self.task = task
        self.count = len(task.microbatches)
        self.correct = 0
        self.inputs = 0
        self.predictions: dict[int, list[int]] = {}
        self.latest: dict[int, torch.Tensor] = {}

    def add(self, microbatch: int, outputs: torch.Tensor) -> None:
        index = microbatch % self.count
        if isinstance(self.task, RandomImages):
            self.inputs += len(outputs)
        elif isinstance(self.task, DigitsTop1):
            size = len(next(iter(self.task.microbatches[0].values())))
            labels = self.task.labels[index * size : index * size + len(outputs)]
            predicted = outputs.argmax(1)
            self.correct += int((predicted == labels).sum())
            self.inputs += len(outputs)
            self.predictions[microbatch] = predicted.tolist()
        else:
            self.latest[index] = outputs
            self.inputs += len(outputs)

    def result(self) -> dict[str, Any]:
        if isinstance(self.task, RandomImages):
            return {"metric": None, "measured_accuracy": None, "inputs": self.inputs}
        if isinstance(self.task, DigitsTop1):
            value = self.correct / self.inputs if self.inputs else None
            return {"metric": "top1", "measured_accuracy": value, "inputs": self.inputs,
                    "predictions": {str(k): v for k, v in self.predictions.items()}}
        return {"metric": "nn_agreement", "measured_accuracy": self.agreement(),
                "inputs": self.inputs}

    def agreement(self) -> float | None:
        """nn_agreement over the inputs seen (all of them after one full pass)."""
        if not self.latest:
            return None
        size = len(next(iter(self.task.microbatches[0].values())))
        indices = sorted(self.latest)
        outputs = torch.cat([self.latest[i] for i in indices])
        rows = torch.cat([torch.arange(i * size, i * size + len(self.latest[i]))
                          for i in indices])
        if len(rows) < 2:
            return None
        reference = self.task.reference[rows]
        return float((nearest_other(outputs) == nearest_other(reference)).double().mean())


def run_rank(config: Config, options: RankOptions) -> int:
    """Run one rank; its exit code. A fault leaves daemon threads blocked in gloo: the caller
    exits the process at once (`os._exit`) rather than waiting for them. The process keeps its
    large freed buffers (`heap.keep_large_allocations`): every microbatch has the same shapes."""
    keep_large_allocations()
    return Rank(config, options).run()
