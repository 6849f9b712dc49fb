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

`Rank` puts the parts together: `join` (rendezvous, handshake, channels), `links` (the two link
threads and their bounded queues), `driver` (the compute loop and the run's end), `gather` (the
reports at rank 0) and `failure` (the first fault, and messages that say where).
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from quantpipe_core.config import Config
from quantpipe_core.heap import keep_large_allocations
from quantpipe_core.results import Records
from quantpipe_core.runtime.auth import AuthError, require_key_or_insecure
from quantpipe_core.runtime.driver import Fault, Pace, SharedScore, StageDriver
from quantpipe_core.runtime.failure import Blame, Failure, StageFailure
from quantpipe_core.runtime.gather import Gathering
from quantpipe_core.runtime.join import Joiner, config_digest
from quantpipe_core.runtime.lifetime import die_with_parent, watch_interrupts
from quantpipe_core.runtime.links import Receiver, Sender
from quantpipe_core.runtime.plan import RuntimePlan, resolve_runtime
from quantpipe_core.runtime.report import (
    records_to_json,
    write_clock,
    write_merged,
    write_rank_report,
)
from quantpipe_core.sender import LinkSender
from quantpipe_core.tasks import inputs_for

__all__ = ["Rank", "RankOptions", "StageFailure", "run_rank"]

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


class Rank:
    """One rank's run: it joins the group, runs its link threads and compute loop, and
    reports what it measured (rank 0 merges every rank's report into the run's files)."""

    def __init__(self, config: Config, options: RankOptions) -> None:
        self.config, self.options = config, options
        self.rank, self.world = options.rank, len(config.devices)
        if self.world < 2:
            raise ValueError("the runtime needs at least two devices (one link)")
        if not 0 <= self.rank < self.world:
            raise ValueError(f"--rank {self.rank}: the config has {self.world} devices")
        require_key_or_insecure(options.key, options.master_addr, options.insecure)
        self.name = self.who(self.rank)
        self.last = self.rank == self.world - 1
        torch.set_num_threads(config.devices[self.rank].threads)
        self.plan: RuntimePlan = resolve_runtime(config)
        self.records, self.failure = Records(), Failure()
        self.blame = Blame(self.name, self.who, options.timeout_s)
        self.task = inputs_for(self.plan.model, config.model.microbatch,
                               config.model.tokens) if (self.rank == 0 or self.last) else None
        self.sink = SharedScore(self.task.running_score()) if self.last and self.task else None
        duration = options.duration_s if options.duration_s is not None else (
            config.run.duration_s or None)
        self.pace = Pace(self.clock, duration, options.microbatches,
                         self.plan.source.mode == "open")
        self.t0 = 0.0
        self.driver: StageDriver | None = None
        self.gathering: Gathering | None = None
        self.finish_lock = threading.Lock()
        self.finished = False

    def who(self, rank: int) -> str:
        return f"stage {rank} ({self.config.devices[rank].name})"

    def clock(self) -> float:
        """Seconds since rank 0's start (wall clocks: see docs/runtime.md on clocks)."""
        return time.time() - self.t0

    def start(self) -> list[threading.Thread]:
        """Join the run, then build the compute loop and start the link threads."""
        options, plan, fault = self.options, self.plan, Fault.parse(self.options.fault)
        self.joined = Joiner(self.rank, self.world, options.master_addr, options.master_port,
                             options.timeout_s, options.key, config_digest(plan), self.who).join()
        self.t0 = self.joined.t0
        if self.rank == 0 and options.out is not None:
            write_clock(options.out, self.t0)
        self.gathering = Gathering(self.rank, self.world, self.joined.store, self.joined.session,
                                   self.who, options.timeout_s)
        threads, inbox, sender = [], None, None
        if self.joined.inlink is not None:
            receiver = Receiver(self.joined.inlink, self.records, self.failure, self.blame,
                                self.clock)
            inbox = receiver.inbox
            threads.append(threading.Thread(target=receiver.run, daemon=True))
            threading.Thread(target=self.gathering.heartbeat, daemon=True,
                             args=(options.master_addr, options.master_port)).start()
        if self.joined.outlink is not None:
            link = LinkSender(self.rank, plan.links[self.rank], plan.source,
                              self.config.quant.allowed_bits, self.config.policy.window,
                              self.records)
            sender = Sender(self.joined.outlink, link, self.records, self.failure, self.blame,
                            self.clock, self.pace.past_end,
                            fault.at if fault.kind == "forge" else -1)
            threads.append(threading.Thread(target=sender.run, daemon=True))
        stage = plan.model.split(plan.cuts)[self.rank]
        self.driver = StageDriver(plan, self.rank, stage, self.records, self.failure, self.blame,
                                  self.pace, options.timeout_s, fault, self.task, sender, inbox,
                                  self.sink, self.joined.credits)
        for thread in threads:
            thread.start()
        return threads

    def run(self) -> int:
        """Run this rank to the end; 0, or 1 after a fault (reported and written)."""
        try:
            threads = self.start()
            assert self.driver is not None and self.gathering is not None
            self.driver.run()
            for thread in threads:
                thread.join()  # each of its waits has the timeout: it ends
            self.failure.check()
            reports = self.gathering.gather(self.report(None))
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

    def report(self, error: str | None) -> dict[str, Any]:
        return {"rank": self.rank, "records": self.records.snapshot(records_to_json),
                "error": error, "sink": self.sink.result() if self.sink is not None else None,
                "never_offered": self.driver.never_offered if self.driver else 0}

    def finish(self, reports: list[dict[str, Any]]) -> None:
        with self.finish_lock:
            if self.finished or self.options.out is None:
                self.finished = True
                return
            self.finished = True
            write_rank_report(self.options.out, reports[0])
            if self.rank == 0:
                ended = self.driver is not None and self.driver.ended_by_duration
                write_merged(self.options.out, self.plan, reports,
                             self.pace.duration_s if ended else None)


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
