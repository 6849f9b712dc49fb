"""The runtime's link sender reports its queue as the simulator does."""

from __future__ import annotations

from quantpipe_core.plan import LinkSpec, SourceSpec
from quantpipe_core.policy import FixedPolicy
from quantpipe_core.results import Records
from quantpipe_core.runtime.failure import Blame, Failure
from quantpipe_core.runtime.links import Sender
from quantpipe_core.sender import LinkSender


class RecordingChannel:
    """A link that delivers every frame at once, noting how many packets still wait for it
    when each one goes out."""

    link, peer = 0, 1

    def __init__(self, sender: LinkSender) -> None:
        self.sender, self.waiting, self.last = sender, [], -1

    def send_frame(self, microbatch: int, bits: int, frame: bytes) -> None:
        self.waiting.append(self.sender.queued)
        self.last = microbatch

    def recv_number(self, tag: bytes) -> int:
        return self.last

    def send_end(self) -> None:
        pass


def test_a_packet_on_the_link_no_longer_counts_as_waiting():
    """`Observation.queued_microbatches` counts packets waiting for the link, not the one on
    it: in the simulator a packet leaves that count when its transfer starts, and so it must
    in the runtime (the controller and bola read it)."""
    link = LinkSender(0, LinkSpec(None, {4: 100}, FixedPolicy(bits=4), (1,)), SourceSpec(8.0, 8),
                      (4,), 4, Records())
    channel = RecordingChannel(link)
    failure = Failure()
    sender = Sender(channel, link, Records(), failure, Blame("stage 0", str, 1.0),
                    clock=lambda: 0.0, past_end=lambda: False)
    for microbatch in range(3):
        sender.put(microbatch, 4, True, bytes(100))
    sender.close()
    sender.run()
    assert not failure.event.is_set(), failure.message
    assert channel.waiting == [2, 1, 0]
    assert link.queued == 0 and link.queued_bytes == 0


def test_the_runtime_tells_the_policy_how_late_a_microbatch_reached_its_stage():
    """A stage's clock starts at rank 0's start, where the source offers microbatch m at m
    periods: the stage's sender needs only the index to know the delay gathered upstream."""
    spec = LinkSpec(None, {4: 100}, FixedPolicy(bits=4), (1,), upstream_path_s=0.25)
    link = LinkSender(1, spec, SourceSpec(8.0, 8), (4,), 4, Records())
    sender = Sender(RecordingChannel(link), link, Records(), Failure(),
                    Blame("stage 1", str, 1.0), clock=lambda: 0.0, past_end=lambda: False)
    assert sender.next_packet(5.0, 2) == (4, False)  # offered at 2 s, 0.25 s of path
    assert link.upstream_delay_s == 2.75
