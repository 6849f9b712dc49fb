"""What crosses a link at a cut: every tensor of the carry, each in its own codec packet.

Frame: magic ``QPCF``, a count byte, then per tensor a name-length byte, the name (ASCII), the
packet length (uint32, little-endian) and the codec packet (which has its own CRC32). Tensors the
carry marks exact (the padding mask, 0/1) go at 1 bit with plain per-tensor min-max, which is
lossless for them; the rest at the link's bitwidth with the link's codec scheme (`Codec`, or its
label such as ``ds-aciq/hadamard/auto``).
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Sequence

from quantpipe_core.models.encoder import Carry
from quantpipe_core.models.staged import CarrySpec, StagedModel
from quantpipe_core.quant import (
    DEFAULT,
    Codec,
    CorruptPacket,
    ForeignPacket,
    TruncatedPacket,
    decode,
    encode,
)
from quantpipe_core.quant import wire_size as packet_size

MAGIC = b"QPCF"
EXACT_TENSORS = ("mask",)
EXACT = Codec("minmax", "none", "tensor")
_LENGTH = struct.Struct("<I")


def carry_wire_size(
    specs: Sequence[CarrySpec], bits: int, codec: Codec | str = DEFAULT
) -> int:
    """Exact bytes of the frame for these tensors at `bits`, known before encoding."""
    codec = Codec.parse(codec)
    size = len(MAGIC) + 1
    for spec in specs:
        tensor_bits, tensor_codec = (1, EXACT) if spec.exact else (bits, codec)
        size += 1 + len(spec.name) + _LENGTH.size
        size += packet_size(spec.shape, tensor_bits, **tensor_codec.options())
    return size


def encode_carry(carry: Carry, bits: int, codec: Codec | str = DEFAULT) -> bytes:
    """The frame for `carry` (names in sorted order, so the size never depends on dict order)."""
    codec = Codec.parse(codec)
    parts = [MAGIC, bytes([len(carry)])]
    for name in sorted(carry):
        if name in EXACT_TENSORS:
            packet = encode(carry[name], 1, **EXACT.options())
        else:
            packet = encode(carry[name], bits, **codec.options())
        parts += [bytes([len(name)]), name.encode("ascii"), _LENGTH.pack(len(packet)), packet]
    return b"".join(parts)


def decode_carry(frame: bytes | bytearray | memoryview) -> Carry:
    """The carry a frame holds; a damaged or foreign frame raises a `PacketError`."""
    view = memoryview(frame)
    if bytes(view[: len(MAGIC)]) != MAGIC:
        raise ForeignPacket(f"not a QuantPipe carry frame (starts with {bytes(view[:4])!r})")
    if len(view) < len(MAGIC) + 1:
        raise TruncatedPacket("carry frame cut before its tensor count")
    carry: Carry = {}
    offset = len(MAGIC) + 1
    for _ in range(view[len(MAGIC)]):
        if offset >= len(view):
            raise TruncatedPacket(f"carry frame cut after {len(carry)} tensors")
        name_end = offset + 1 + view[offset]
        if name_end + _LENGTH.size > len(view):
            raise TruncatedPacket(f"carry frame cut inside tensor {len(carry)}'s header")
        try:
            name = bytes(view[offset + 1 : name_end]).decode("ascii")
        except UnicodeDecodeError:
            raise CorruptPacket("carry frame has a tensor name that is not ASCII") from None
        (length,) = _LENGTH.unpack_from(view, name_end)
        start = name_end + _LENGTH.size
        if start + length > len(view):
            raise TruncatedPacket(f"carry frame cut inside tensor {name!r}")
        carry[name] = decode(view[start : start + length])
        offset = start + length
    if offset != len(view):
        raise CorruptPacket(f"carry frame has {len(view) - offset} bytes after its last tensor")
    return carry


def through_link(carry: Carry, bits: int, codec: Codec | str = DEFAULT) -> Carry:
    """The carry as the next stage receives it: encoded and decoded exactly as on the wire."""
    if bits == 32:  # float32 travels as it is: skip the copy, the values are the same
        return dict(carry)
    return decode_carry(encode_carry(carry, bits, codec))


def link_bytes(
    model: StagedModel, microbatch: int, *, tokens: int | None = None,
    codec: Codec | str = DEFAULT,
) -> Callable[[int, int], int]:
    """Bytes on a link cut after unit ``i`` at ``bits``: the partitioner's ``link_bytes``."""
    cut_ids = model.cut_ids

    def size(unit: int, bits: int) -> int:
        specs = model.carry_specs(cut_ids[unit], microbatch, tokens)
        return carry_wire_size(specs, bits, codec)

    return size
