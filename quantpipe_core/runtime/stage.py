"""One pipeline stage as one process: torch.distributed (gloo over TCP) to its neighbours.

When the group forms, every rank proves it holds the run key (`auth`); the messages on each link
(its own gloo group of ranks k and k+1, so links never share a channel) are `channel.Channel`'s:
the sender sends a frame (`encode_carry`, then its tag); the receiver answers with an ack as soon
as the frame has arrived and its inbox has room, before it decodes or computes. The sender's
transfer time of a frame runs from the start of its send to the ack's arrival, so it counts the
delivery plus one ack's return trip, and a stage too slow for its input (a full inbox), never the
receiver's compute otherwise. Queues are bounded (`INBOX_FRAMES`, `OUTBOX_BYTES`): a slow stage
slows the stages before it instead of growing their memory.

Threads per rank: a receiver (link k-1), the compute loop (source on rank 0, sink on the last
rank) and a sender (link k), so a stage computes the next microbatch while a frame is on the
link, as in the simulator. In closed-loop mode the sink returns one credit per finished
microbatch to rank 0 on a group of its own (control, not microbatch data).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import queue
import secrets
import signal
import socket
import sys
import threading
import time
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from quantpipe_core.cli import echo
from quantpipe_core.config import Config
from quantpipe_core.heap import keep_large_allocations
from quantpipe_core.models.carry import decode_carry, encode_carry
from quantpipe_core.quant import PacketError
from quantpipe_core.results import Records
from quantpipe_core.runtime.auth import (
    NONCE_BYTES,
    PROOF_BYTES,
    AuthError,
    Handshake,
    Session,
    require_key_or_insecure,
)
from quantpipe_core.runtime.channel import Channel, ForgedMessage, recv_bytes, send_bytes
from quantpipe_core.runtime.lifetime import die_with_parent, watch_interrupts
from quantpipe_core.runtime.plan import RuntimePlan, resolve_runtime
from quantpipe_core.runtime.report import (
    records_to_json,
    write_clock,
    write_merged,
    write_rank_report,
)
from quantpipe_core.sender import LinkSender
from quantpipe_core.tasks import DigitsTop1, RandomImages, inputs_for, inputs_in, nearest_other

END = None
POLL_S = 0.2
HEARTBEAT_S = 1.0
INBOX_FRAMES = 2  # frames received but not yet computed; a full inbox holds the ack back
OUTBOX_BYTES = 64 << 20  # encoded frames waiting for the link (always room for one)
STORE_PREFIX = "quantpipe/"


def config_digest(plan: RuntimePlan) -> bytes:
    """What every rank must agree on: the model and its cuts, the codec, the policy, the source
    and the devices. Paths (a model folder, the links' traces) may differ between devices."""
    config = plan.config
    agreed = {
        "model": [Path(config.model.name).name, config.model.microbatch, config.model.tokens],
        "cuts": list(plan.cuts),
        "quant": dataclasses.asdict(config.quant),
        "policy": dataclasses.asdict(config.policy),
        "source": dataclasses.asdict(config.source),
        "devices": [device.name for device in config.devices],
    }
    return hashlib.sha256(json.dumps(agreed, sort_keys=True, default=str).encode()).digest()


def tensor_form(shape: tuple[int, ...]) -> tuple[int, int | None]:
    """What a stage can rely on in a tensor it receives: its number of dimensions and, for a
    hidden state, its feature width (batch and sequence lengths vary between microbatches)."""
    return len(shape), shape[-1] if len(shape) >= 3 else None


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
    key: bytes | None = None  # the run key (`auth.load_run_key`); None: unauthenticated
    insecure: bool = False  # allow no key on a non-loopback address
    fault: str = ""  # testing aid: "corrupt:N", "forge:N", "rename:N" (frame N), "die:N", "slow:MS"


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


class ByteBudget:
    """At most `limit` bytes waiting; there is always room for one item, however large."""

    def __init__(self, limit: int, failure: Failure) -> None:
        self.limit, self.used, self.failure = limit, 0, failure
        self.room = threading.Condition()

    def take(self, nbytes: int) -> None:
        with self.room:
            while self.used and self.used + nbytes > self.limit:
                self.room.wait(POLL_S)
                self.failure.check()
            self.used += nbytes

    def give(self, nbytes: int) -> None:
        with self.room:
            self.used -= nbytes
            self.room.notify_all()


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
        require_key_or_insecure(options.key, options.master_addr, options.insecure)
        self.name = self.who(self.rank)
        self.last = self.rank == self.world - 1
        torch.set_num_threads(config.devices[self.rank].threads)
        self.plan: RuntimePlan = resolve_runtime(config)
        self.stage = self.plan.model.split(self.plan.cuts)[self.rank]
        self.task = inputs_for(self.plan.model, config.model.microbatch) if (
            self.rank == 0 or self.last) else None
        self.records = Records()
        self.failure = Failure()
        self.inbox: queue.Queue = queue.Queue(maxsize=INBOX_FRAMES)
        self.outbox: queue.Queue = queue.Queue()
        self.outbox_budget = ByteBudget(OUTBOX_BYTES, self.failure)
        self.sender_lock = threading.Lock()
        self.sender: LinkSender | None = None
        if not self.last:
            self.sender = LinkSender(
                self.rank, self.plan.links[self.rank], self.plan.source,
                config.quant.allowed_bits, config.policy.window, self.records,
            )
        self.sink = SinkMetric(self.task) if self.last else None
        self.inbound = {} if self.rank == 0 else {  # name: (dimensions, features)
            spec.name: tensor_form(spec.shape) for spec in self.plan.model.carry_specs(
                self.plan.cuts[self.rank - 1], config.model.microbatch, config.model.tokens)}
        kind, _, at = options.fault.partition(":")
        self.fault_kind, self.fault_at = kind, int(at) if at else -1
        self.t0 = 0.0
        self.duration_s = options.duration_s if options.duration_s is not None else (
            config.run.duration_s or None)
        self.ended_by_duration = False
        self.never_offered = 0
        self.finish_lock = threading.Lock()
        self.finished = False
        self.reported = threading.Event()

    def who(self, rank: int) -> str:
        return f"stage {rank} ({self.config.devices[rank].name})"

    # ----- setup -----------------------------------------------------------------------------

    def connect(self) -> None:
        """Join the group through a store bound to `master_addr` alone, prove the run key, then
        open one channel per link (and one for credits) and agree on the run's start."""
        timeout = timedelta(seconds=self.options.timeout_s)
        self.store = self.rendezvous(timeout)
        dist.init_process_group("gloo", store=self.store, rank=self.rank,
                                world_size=self.world, timeout=timeout)
        self.session = self.authenticate()
        groups = [dist.new_group([k, k + 1], timeout=timeout) for k in range(self.world - 1)]
        credit_group = dist.new_group([0, self.world - 1], timeout=timeout)
        self.inlink = (Channel(groups[self.rank - 1], self.rank - 1, self.rank - 1,
                               self.session) if self.rank > 0 else None)
        self.outlink = (Channel(groups[self.rank], self.rank + 1, self.rank, self.session)
                        if not self.last else None)
        peer = self.world - 1 if self.rank == 0 else 0
        self.credits = Channel(credit_group, peer, -1, self.session)
        start = torch.tensor([time.time()], dtype=torch.float64)
        dist.broadcast(start, src=0)
        self.t0 = float(start.item())
        if self.rank == 0 and self.options.out is not None:
            write_clock(self.options.out, self.t0)

    def rendezvous(self, timeout: timedelta) -> dist.TCPStore:
        """Rank 0 serves the store on `master_addr` only (torch's own listens everywhere)."""
        addr, port = self.options.master_addr, self.options.master_port
        if self.rank != 0:
            return dist.TCPStore(addr, port, self.world, False, timeout)
        try:
            self.listener = socket.create_server((addr, port), backlog=128)
        except OSError as error:
            raise StageFailure(f"{self.name}: cannot listen on {addr}:{port}: "
                               f"{error.strerror or error}") from None
        return dist.TCPStore(addr, port, self.world, True, timeout, wait_for_workers=False,
                             master_listen_fd=self.listener.fileno())

    def authenticate(self) -> Session:
        """The challenge-response of `auth.Handshake`, before any activation flows."""
        handshake = Handshake(self.options.key, config_digest(self.plan))
        if self.rank == 0:
            salt = secrets.token_bytes(NONCE_BYTES)
            for peer in range(1, self.world):
                hello = handshake.hello(salt)
                self.handshake_send(peer, hello)
                answer = self.handshake_recv(peer, Handshake.ANSWER_BYTES)
                refusal = handshake.check_answer(peer, hello, answer)
                if refusal:
                    raise StageFailure(f"{self.name}: refused {self.who(peer)}: {refusal}")
                self.handshake_send(peer, handshake.proof_of_rank0(peer, hello, answer))
            return Session(self.options.key, salt)
        hello = self.handshake_recv(0, Handshake.HELLO_BYTES)
        answer = handshake.answer(self.rank, hello)
        self.handshake_send(0, answer)
        refusal = handshake.check_hello(self.rank, hello) or handshake.check_proof(
            self.rank, hello, answer, self.handshake_recv(0, PROOF_BYTES))
        if refusal:
            raise StageFailure(f"{self.name}: refused to run: {refusal}")
        return Session(self.options.key, hello[1:1 + NONCE_BYTES])

    def handshake_send(self, peer: int, data: bytes) -> None:
        try:
            send_bytes(data, peer)
        except Exception as error:
            raise self.handshake_failure(peer, error) from None

    def handshake_recv(self, peer: int, size: int) -> bytes:
        try:
            return bytes(recv_bytes(size, peer))
        except Exception as error:
            raise self.handshake_failure(peer, error) from None

    def handshake_failure(self, peer: int, error: BaseException) -> StageFailure:
        return StageFailure(f"{self.name}: {self.who(peer)} did not complete the run-key "
                            f"handshake ({self.describe(error)})")

    def clock(self) -> float:
        """Seconds since rank 0's start (wall clocks: see docs/runtime.md on clocks)."""
        return time.time() - self.t0

    # ----- threads ---------------------------------------------------------------------------

    @staticmethod
    def describe(error: BaseException) -> str:
        text = str(error).strip().splitlines()[0] if str(error).strip() else repr(error)
        return text.split(". This is typically")[0].split("] ", 1)[-1]  # gloo's source path

    def link_failure(self, where: str, peer: int, error: BaseException) -> str:
        """The message for `error` on a link or the credit channel: a stage's own failure as it
        is, a forged message under this stage's name, anything else as the peer's fault."""
        if isinstance(error, StageFailure):
            return str(error)
        if isinstance(error, ForgedMessage):
            return f"{self.name}: {error}"
        return self.peer_error(where, peer, error)

    def peer_error(self, where: str, peer: int, error: BaseException) -> str:
        text = self.describe(error)
        if "timed out" in text.lower() or "timeout" in text.lower():
            cause = (f"no answer from {self.who(peer)} {where} within "
                     f"{self.options.timeout_s:g} s")
        else:
            cause = f"{self.who(peer)} {where} is gone or the link broke ({text})"
        return f"{self.name}: {cause}"

    def wait_put(self, box: queue.Queue, item: Any) -> None:
        """Put `item` into a bounded queue, waiting for room while the run is healthy."""
        while True:
            try:
                box.put(item, timeout=POLL_S)
                return
            except queue.Full:
                self.failure.check()

    def receive_loop(self) -> None:
        assert self.inlink is not None
        channel = self.inlink
        try:
            while (item := channel.recv_frame()) is not None:
                arrived = self.clock()
                microbatch = item[0]
                self.wait_put(self.inbox, item)
                channel.send_number(b"ack", microbatch)
                self.records.link_arrive[microbatch, channel.link] = arrived
            self.wait_put(self.inbox, END)
            return
        except Exception as error:
            self.failure.set(self.link_failure(f"on link {channel.link}", channel.peer, error))
        with self.inbox.mutex:
            self.inbox.queue.clear()
        self.inbox.put(END)

    def send_loop(self) -> None:
        assert self.sender is not None and self.outlink is not None
        channel = self.outlink
        try:
            while True:
                item = self.outbox.get()
                if item is END:
                    channel.send_end()
                    return
                microbatch, bits, frame = item
                if self.past_end():  # it would arrive after the end: it cannot count
                    self.outbox_budget.give(len(frame))
                    continue
                start = self.clock()
                if self.fault_kind == "forge" and microbatch == self.fault_at:
                    forger = Channel(channel.group, channel.peer, channel.link,
                                     Session(secrets.token_bytes(32), b"another run"))
                    forger.send_frame(microbatch, bits, frame)  # testing aid: a forged frame
                else:
                    channel.send_frame(microbatch, bits, frame)
                acked = channel.recv_number(b"ack")
                send_s = self.clock() - start
                if acked != microbatch:
                    raise StageFailure(
                        f"{self.name}: link {channel.link} acknowledged microbatch {acked} "
                        f"while {microbatch} was sent"
                    )
                with self.sender_lock:
                    self.sender.delivered(len(frame), send_s)
                    self.sender.dequeue()
                self.outbox_budget.give(len(frame))
                self.records.link_bits[microbatch, channel.link] = bits
                self.records.link_bytes[microbatch, channel.link] = len(frame)
        except Exception as error:
            self.failure.set(self.link_failure(f"on link {channel.link}", channel.peer, error))

    # ----- the compute loop ------------------------------------------------------------------

    def limits(self) -> tuple[float | None, int | None]:
        count = self.options.microbatches
        if self.duration_s is None and count is None:
            assert self.task is not None
            count = len(self.task.microbatches)  # one pass of the data set
        return self.duration_s, count

    def past_end(self) -> bool:
        """The run's duration is over: as in the simulator, nothing done from now on counts, so
        the stages of an open loop drop what is still queued instead of working on it. (A closed
        loop has at most `max_in_flight` microbatches left, and each must return its credit.)"""
        return (self.duration_s is not None and self.plan.source.mode == "open"
                and self.clock() >= self.duration_s)

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
                    self.recv_credit()
                    credits += 1
                t = self.clock()
            else:
                t = microbatch * period
                self.failure.event.wait(max(0.0, t - self.clock()))
            self.failure.check()
            if duration is not None and (t >= duration or self.past_end()):
                self.ended_by_duration = True
                if not closed:
                    self.never_offered = max(0, math.ceil(duration / period) - microbatch)
                break
            yield microbatch, t, data[microbatch % len(data)]
            microbatch += 1
        if closed:
            while credits < microbatch:
                self.recv_credit()
                credits += 1

    def recv_credit(self) -> None:
        try:
            self.credits.recv_number(b"credit")
        except Exception as error:
            self.failure.set(self.link_failure("on the credit channel", self.credits.peer, error))
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
                carry = decode_carry(frame)
            except PacketError as error:
                raise StageFailure(
                    f"{self.name}: corrupt frame for microbatch {microbatch} from stage "
                    f"{link} on link {link}: {error}"
                ) from None
            forms = {name: tensor_form(tensor.shape) for name, tensor in carry.items()}
            if forms != self.inbound:
                raise StageFailure(
                    f"{self.name}: the frame for microbatch {microbatch} on link {link} holds "
                    f"{echo(forms)} (name: dimensions, features) where this stage takes "
                    f"{echo(self.inbound)}"
                )
            yield microbatch, None, carry

    def compute_loop(self) -> None:
        items = self.source_items() if self.rank == 0 else self.inbox_items()
        codec = self.config.quant.codec
        for microbatch, t_source, carry in items:
            if self.rank > 0 and self.past_end():
                continue  # drained, not computed: it would finish after the end
            if self.fault_kind == "die" and microbatch == self.fault_at:
                os._exit(3)  # testing aid: a crash, with nothing said and nothing written
            start = self.clock()
            if t_source is not None:
                self.records.t_source[microbatch] = t_source
                items = inputs_in(carry)
                if items != self.plan.source.items_per_microbatch:
                    self.records.items[microbatch] = items  # the data set's short last one
            self.records.stage_start[microbatch, self.rank] = start
            with torch.no_grad():
                out = self.stage(carry)
            if self.fault_kind == "slow":
                time.sleep(self.fault_at / 1000)  # testing aid: a stage slower than its input
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
            self.check_pace(microbatch, self.clock() - start)
            if self.fault_kind == "rename" and microbatch == self.fault_at:
                out = {f"x{name}": tensor for name, tensor in out.items()}  # testing aid
            frame = bytearray(encode_carry(out, bits, codec))
            if self.fault_kind == "corrupt" and microbatch == self.fault_at:
                frame[len(frame) // 2] ^= 0xFF  # testing aid: one flipped byte on the wire
            self.records.stage_end[microbatch, self.rank] = self.clock()
            self.outbox_budget.take(len(frame))
            with self.sender_lock:
                self.sender.enqueue(len(frame))
            self.outbox.put((microbatch, bits, frame))
            self.failure.check()

    def check_pace(self, microbatch: int, seconds: float) -> None:
        """A stage that takes longer than the timeout makes the next one give up waiting on its
        link; say here what took so long, or the run's only message is that link's timeout."""
        if seconds > self.options.timeout_s:
            raise StageFailure(
                f"{self.name}: microbatch {microbatch} took {seconds:.1f} s to compute and "
                f"choose its bits (policy {self.config.policy.name}), longer than --timeout-s "
                f"{self.options.timeout_s:g}: the next stage stops waiting for it"
            )

    def send_credit(self, microbatch: int) -> None:
        try:
            self.credits.send_number(b"credit", microbatch)
        except Exception as error:
            self.failure.set(self.link_failure("on the credit channel", self.credits.peer, error))
            raise StageFailure(self.failure.message) from None

    # ----- a whole run -----------------------------------------------------------------------

    def run(self) -> int:
        """Run this rank to the end; 0, or 1 after a fault (reported and written)."""
        threads = []
        try:
            self.connect()
            if self.rank > 0:
                threads.append(threading.Thread(target=self.receive_loop, daemon=True))
                threading.Thread(target=self.heartbeat, daemon=True).start()
            if not self.last:
                threads.append(threading.Thread(target=self.send_loop, daemon=True))
            for thread in threads:
                thread.start()
            self.compute_loop()
            if not self.last:
                self.outbox.put(END)
            for thread in threads:
                thread.join()  # each of its waits has the timeout: it ends
            self.failure.check()
            reports = self.gather(self.report(None))
        except Exception as error:
            message = str(error) if isinstance(error, (StageFailure, AuthError)) else (
                self.failure.message or f"{self.name}: {type(error).__name__}: {error}")
            print(f"quantpipe runtime: {message}", file=sys.stderr, flush=True)
            self.finish([self.report(message)])
            return 1
        self.finish(reports)
        return 0  # no destroy_process_group: it can block on a vanished peer; the process exits

    def interrupt(self, signum: signal.Signals) -> None:
        """Ctrl-C or SIGTERM (from the watcher thread): save what was measured, then exit."""
        when = f"t = {self.clock():.1f} s" if self.t0 else "before the run started"
        message = f"{self.name}: interrupted at {when} ({signum.name})"
        self.failure.set(message)
        print(f"quantpipe runtime: {message}", file=sys.stderr, flush=True)
        try:
            report = self.report(message)
            report["interrupted_at_s"] = self.clock() if self.t0 else 0.0
            self.finish([report])
        finally:  # whatever happened while saving, the interrupt ends the process
            sys.stderr.flush()
            os._exit(130)

    def heartbeat(self) -> None:
        """A counter in rank 0's store that rank 0 watches while it waits for this rank's
        report: a stage still working is waited for, a silent one is given up on."""
        try:
            store = dist.TCPStore(self.options.master_addr, self.options.master_port,
                                  self.world, False, timedelta(seconds=self.options.timeout_s))
            while not self.reported.wait(HEARTBEAT_S):
                store.add(f"{STORE_PREFIX}alive/{self.rank}", 1)
        except Exception:
            return  # rank 0 has gone: its store with it

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
                "sink": self.sink.result() if self.sink is not None else None,
                "never_offered": self.never_offered}

    def gather(self, mine: dict[str, Any]) -> list[dict[str, Any]]:
        """Every rank's report at rank 0, through rank 0's store, each with its tag."""
        if self.rank != 0:
            body = json.dumps(mine).encode()
            self.reported.set()
            self.store.set(f"{STORE_PREFIX}report/{self.rank}",
                           self.session.tag(b"report", self.rank, body) + body)
            return [mine]
        return [mine, *(self.await_report(rank) for rank in range(1, self.world))]

    def await_report(self, rank: int) -> dict[str, Any]:
        """Rank `rank`'s report, waiting as long as its heartbeat goes on."""
        key, alive = f"{STORE_PREFIX}report/{rank}", f"{STORE_PREFIX}alive/{rank}"
        beats, seen = -1, time.monotonic()
        while not self.store.check([key]):
            now = self.store.add(alive, 0)
            if now != beats:
                beats, seen = now, time.monotonic()
            elif time.monotonic() - seen > self.options.timeout_s:
                raise StageFailure(f"{self.name}: no report from {self.who(rank)} and no sign "
                                   f"of life for {self.options.timeout_s:g} s")
            time.sleep(POLL_S)
        data = self.store.get(key)
        tag, body = data[:self.session.tag_bytes], data[self.session.tag_bytes:]
        if not self.session.valid(tag, b"report", rank, body):
            raise StageFailure(f"{self.name}: the report of {self.who(rank)} fails its "
                               "authentication tag (forged, or sent with another run key)")
        return json.loads(body)

    def finish(self, reports: list[dict[str, Any]]) -> None:
        with self.finish_lock:
            if self.finished:
                return
            self.finished = True
            out = self.options.out
            if out is None:
                return
            write_rank_report(out, reports[0])
            if self.rank == 0:
                write_merged(out, self.plan, reports,
                             self.duration_s if self.ended_by_duration else None)


class SinkMetric:
    """Predictions and the measured metric: top-1 against labels (classifiers) or
    nearest-neighbour agreement with the float32 embeddings (sentence encoders). The compute
    loop adds while an interrupt's watcher thread may read the result: both hold `lock`."""

    def __init__(self, task: Any) -> None:
        self.lock = threading.Lock()
        self.task = task
        self.count = len(task.microbatches)
        self.correct = 0
        self.inputs = 0
        self.predictions: dict[int, list[int]] = {}
        self.latest: dict[int, torch.Tensor] = {}

    def add(self, microbatch: int, outputs: torch.Tensor) -> None:
        with self.lock:
            self._add(microbatch, outputs)

    def _add(self, microbatch: int, outputs: torch.Tensor) -> None:
        index = microbatch % self.count
        if isinstance(self.task, RandomImages):
            self.inputs += len(outputs)
        elif isinstance(self.task, DigitsTop1):
            size = inputs_in(self.task.microbatches[0])
            labels = self.task.labels[index * size : index * size + len(outputs)]
            predicted = outputs.argmax(1)
            self.correct += int((predicted == labels).sum())
            self.inputs += len(outputs)
            self.predictions[microbatch] = predicted.tolist()
        else:
            self.latest[index] = outputs
            self.inputs += len(outputs)

    def result(self) -> dict[str, Any]:
        with self.lock:
            return self._result()

    def _result(self) -> dict[str, Any]:
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
        size = inputs_in(self.task.microbatches[0])
        indices = sorted(self.latest)
        outputs = torch.cat([self.latest[i] for i in indices])
        rows = torch.cat([torch.arange(i * size, i * size + len(self.latest[i]))
                          for i in indices])
        if len(rows) < 2:
            return None
        reference = self.task.reference[rows]
        return float((nearest_other(outputs) == nearest_other(reference)).double().mean())


def run_rank(config: Config, options: RankOptions) -> int:
    """Run one rank (from the main thread); its exit code. A fault leaves daemon threads blocked
    in gloo: the caller exits the process at once (`os._exit`) rather than waiting for them.
    Ctrl-C or SIGTERM, or the death of the process that started it, saves the rank's report and
    exits with 130. The process keeps its large freed buffers (`heap.keep_large_allocations`):
    every microbatch has the same shapes."""
    keep_large_allocations()
    die_with_parent()
    rank = Rank(config, options)
    watch_interrupts(rank.interrupt)
    return rank.run()
