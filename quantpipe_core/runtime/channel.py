"""The wire protocol between two ranks, in one place: frames, acks and credits, each with its
authentication tag (`auth.Session`), over a gloo group of the two ranks only.

A frame is a header (int64 ``[frame_bytes, microbatch, bits]``; ``frame_bytes = 0`` ends the
stream) and a body (the carry frame, then its tag) as a uint8 tensor; the end of the stream has a
body of its tag alone. An ack or a credit is one uint8 tensor: the microbatch (int64,
little-endian) and its tag. Nothing is pickled, and every tag is checked before its message is
used: a forged, replayed or damaged message is a `ForgedMessage`. Microbatch numbers only grow
on a channel, so a genuine message sent again (replayed within the run) is refused too.
"""

from __future__ import annotations

import struct

import torch
import torch.distributed as dist

from quantpipe_core.runtime.auth import Session

MAX_FRAME_BYTES = 1 << 31


class ForgedMessage(Exception):
    """A message whose header or tag is not what this run's peer would send."""


class Channel:
    """Messages between this rank and `peer` on `group` (link `link`, or -1 for credits)."""

    def __init__(self, group: object, peer: int, link: int, session: Session) -> None:
        self.group, self.peer, self.link, self.session = group, peer, link, session
        self.last: dict[bytes, int] = {}  # the last microbatch received, per kind of message

    # ----- frames (sender -> receiver) -------------------------------------------------------

    def send_frame(self, microbatch: int, bits: int, frame: bytes | bytearray) -> None:
        body = bytearray(frame)
        body += self.session.tag(b"frame", self.link, microbatch, bits, frame)
        self._send_header(len(frame), microbatch, bits)
        self._send_bytes(body)

    def send_end(self) -> None:
        self._send_header(0, -1, 0)
        if self.session.tag_bytes:
            self._send_bytes(self.session.tag(b"end", self.link))

    def recv_frame(self) -> tuple[int, int, memoryview] | None:
        """(microbatch, bits, frame), or None at the end of the stream."""
        header = torch.zeros(3, dtype=torch.int64)
        dist.recv(header, src=self.peer, group=self.group)
        length, microbatch, bits = (int(v) for v in header.tolist())
        if length == 0:
            if self.session.tag_bytes and not self.session.valid(
                    self._recv_bytes(self.session.tag_bytes), b"end", self.link):
                raise ForgedMessage(f"a forged end of stream on link {self.link}")
            return None
        if not 0 < length <= MAX_FRAME_BYTES:
            raise ForgedMessage(f"corrupt header on link {self.link} (frame of {length} bytes)")
        body = self._recv_bytes(length + self.session.tag_bytes)
        frame, tag = body[:length], bytes(body[length:])
        if not self.session.valid(tag, b"frame", self.link, microbatch, bits, frame):
            raise ForgedMessage(
                f"frame for microbatch {microbatch} on link {self.link} fails its "
                "authentication tag (forged, damaged, or sent with another run key)"
            )
        self.check_order(b"frame", microbatch)
        return microbatch, bits, frame

    # ----- acks and credits (one number back) ------------------------------------------------

    def send_number(self, label: bytes, microbatch: int) -> None:
        """An ack (``b"ack"``) or a credit (``b"credit"``) for `microbatch`."""
        self._send_bytes(struct.pack("<q", microbatch) +
                         self.session.tag(label, self.link, microbatch))

    def recv_number(self, label: bytes) -> int:
        data = self._recv_bytes(8 + self.session.tag_bytes)
        (microbatch,) = struct.unpack("<q", data[:8])
        if not self.session.valid(bytes(data[8:]), label, self.link, microbatch):
            raise ForgedMessage(f"a forged {label.decode()} on link {self.link}")
        self.check_order(label, microbatch)
        return microbatch

    def check_order(self, label: bytes, microbatch: int) -> None:
        """Refuse a message of kind `label` for a microbatch not after the last one received."""
        last = self.last.get(label, -1)
        if microbatch <= last:
            raise ForgedMessage(f"a {label.decode()} for microbatch {microbatch} on link "
                                f"{self.link} after one for {last} (replayed or out of order)")
        self.last[label] = microbatch

    # ----- raw ---------------------------------------------------------------------------------

    def _send_header(self, *values: int) -> None:
        dist.send(torch.tensor(values, dtype=torch.int64), dst=self.peer, group=self.group)

    def _send_bytes(self, data: bytes | bytearray) -> None:
        send_bytes(data, self.peer, self.group)

    def _recv_bytes(self, size: int) -> memoryview:
        return recv_bytes(size, self.peer, self.group)


def send_bytes(data: bytes | bytearray, peer: int, group: object = None) -> None:
    """`data` to `peer` as one uint8 tensor (`group` None: the default group)."""
    buffer = data if isinstance(data, bytearray) else bytearray(data)
    dist.send(torch.frombuffer(buffer, dtype=torch.uint8), dst=peer, group=group)


def recv_bytes(size: int, peer: int, group: object = None) -> memoryview:
    """`size` bytes from `peer`, sent by `send_bytes`."""
    buffer = torch.empty(size, dtype=torch.uint8)
    dist.recv(buffer, src=peer, group=group)
    return memoryview(buffer.numpy())
