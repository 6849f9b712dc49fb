"""A stage's two link threads: the receiver of link k-1 and the sender of link k.

The receiver acks a frame as soon as it has arrived and its inbox has room, before the stage
decodes or computes it; the sender times a frame from the start of its send to the ack, so a
transfer counts the delivery and one ack's return trip, and a full inbox downstream (a stage too
slow for its input), never the receiver's compute otherwise. Queues are bounded (`INBOX_FRAMES`,
`OUTBOX_BYTES`): a slow stage slows the stages before it instead of growing their memory. The
wire protocol itself (frames, acks, credits, tags) is `channel.Channel`'s.
"""

from __future__ import annotations

import queue
import secrets
import threading
from collections.abc import Callable
from typing import Any

from quantpipe_core.results import Records
from quantpipe_core.runtime.auth import Session
from quantpipe_core.runtime.channel import Channel
from quantpipe_core.runtime.failure import Blame, Failure, StageFailure
from quantpipe_core.sender import LinkSender

END = None  # the last item of a queue
POLL_S = 0.2  # how often a waiting thread looks for a fault elsewhere
INBOX_FRAMES = 2  # frames received but not yet computed; a full inbox holds the ack back
OUTBOX_BYTES = 64 << 20  # encoded frames waiting for the link (always room for one)


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


def wait_put(box: queue.Queue, item: Any, failure: Failure) -> None:
    """Put `item` into a bounded queue, waiting for room while the run is healthy."""
    while True:
        try:
            box.put(item, timeout=POLL_S)
            return
        except queue.Full:
            failure.check()


class Receiver:
    """Link k-1's frames into the stage's bounded inbox, each acked once it has room."""

    def __init__(self, channel: Channel, records: Records, failure: Failure, blame: Blame,
                 clock: Callable[[], float]) -> None:
        self.channel, self.records, self.failure = channel, records, failure
        self.blame, self.clock = blame, clock
        self.inbox: queue.Queue = queue.Queue(maxsize=INBOX_FRAMES)

    def run(self) -> None:
        channel = self.channel
        try:
            while (item := channel.recv_frame()) is not None:
                arrived = self.clock()
                microbatch = item[0]
                wait_put(self.inbox, item, self.failure)
                channel.send_number(b"ack", microbatch)
                self.records.arrived(microbatch, channel.link, arrived)
            wait_put(self.inbox, END, self.failure)
            return
        except Exception as error:
            self.failure.set(self.blame.on_link(f"on link {channel.link}", channel.peer, error))
        with self.inbox.mutex:
            self.inbox.queue.clear()
        self.inbox.put(END)


class Sender:
    """The stage's encoded frames onto link k, in order, each timed to its ack; tells the
    link's `LinkSender` (the policy's side) what each delivery took."""

    def __init__(self, channel: Channel, link: LinkSender, records: Records, failure: Failure,
                 blame: Blame, clock: Callable[[], float], past_end: Callable[[], bool],
                 forge_at: int = -1) -> None:
        self.channel, self.link, self.records, self.failure = channel, link, records, failure
        self.blame, self.clock, self.past_end = blame, clock, past_end
        self.forge_at = forge_at  # testing aid: the frame sent under another run's key
        self.outbox: queue.Queue = queue.Queue()
        self.budget = ByteBudget(OUTBOX_BYTES, failure)
        self.lock = threading.Lock()  # the policy's side is shared with the compute loop

    def next_packet(self, now: float, microbatch: int) -> tuple[int, bool]:
        """`microbatch`'s bitwidth, and whether it goes through the link's coder."""
        with self.lock:
            return self.link.bits_for_next(now, microbatch), self.link.coding

    def put(self, microbatch: int, bits: int, coded: bool, frame: bytes | bytearray) -> None:
        """Queue a frame, waiting while the outbox is over its budget."""
        self.budget.take(len(frame))
        with self.lock:
            self.link.enqueue(len(frame), bits, coded)
        self.outbox.put((microbatch, bits, frame))

    def close(self) -> None:
        self.outbox.put(END)

    def run(self) -> None:
        channel = self.channel
        try:
            while (item := self.outbox.get()) is not END:
                microbatch, bits, frame = item
                if self.past_end():  # it would arrive after the end: it cannot count
                    self.budget.give(len(frame))
                    continue
                start = self.clock()
                with self.lock:
                    self.link.dequeue()  # on the link now: no longer waiting, as in the simulator
                self.send(microbatch, bits, frame)
                acked = channel.recv_number(b"ack")
                send_s = self.clock() - start
                if acked != microbatch:
                    raise self.failure_of(f"link {channel.link} acknowledged microbatch "
                                          f"{acked} while {microbatch} was sent")
                with self.lock:
                    self.link.delivered(len(frame), send_s)
                self.budget.give(len(frame))
                self.records.sent(microbatch, channel.link, bits, len(frame))
            channel.send_end()
        except Exception as error:
            self.failure.set(self.blame.on_link(f"on link {channel.link}", channel.peer, error))

    def send(self, microbatch: int, bits: int, frame: bytes | bytearray) -> None:
        channel = self.channel
        if microbatch == self.forge_at:
            channel = Channel(channel.group, channel.peer, channel.link,
                              Session(secrets.token_bytes(32), b"another run"))
        channel.send_frame(microbatch, bits, frame)

    def failure_of(self, cause: str) -> StageFailure:
        return StageFailure(f"{self.blame.name}: {cause}")
