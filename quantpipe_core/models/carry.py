"""What crosses a link at a cut: every tensor of the carry, each in its own codec packet.

Frame (format version 2; version 1 had no version byte and no table checksum), little-endian:
magic ``QPCF``, the version byte, a count byte, then per tensor a name-length byte, the name
(ASCII) and its packet's length (uint32); the CRC32 of all of that (the table); then the codec
packets in the table's order. Each packet ends with its own CRC32, so every byte of the frame is
under a checksum, and the payload goes through one CRC pass, not two: a damaged frame raises a
`PacketError` before any name or length is used. Tensors the carry marks exact (the padding
mask, 0/1) go at 1 bit with plain per-tensor min-max, which is lossless for them; the rest at the
link's bitwidth with the link's codec scheme (`Codec`, or its label such as
``ds-aciq/hadamard/auto``).
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Callable, Sequence

from quantpipe_core.models.encoder import Carry
from quantpipe_core.models.staged import CarrySpec, StagedModel
from quantpipe_core.names import FLOAT_BITS
from quantpipe_core.quant import (
    DEFAULT,
    Codec,
    CorruptPacket,
    ForeignPacket,
    TruncatedPacket,
    UnsupportedVersion,
    decode,
    encode,
)
from quantpipe_core.quant import wire_size as packet_size

MAGIC = b"QPCF"
FRAME_VERSION = 2
EXACT_TENSORS = ("mask",)
EXACT = Codec("minmax", "none", "tensor")
_PREFIX = struct.Struct("<4sBB")  # magic, version, count
_LENGTH = struct.Struct("<I")
_CRC = struct.Struct("<I")


def carry_wire_size(
    specs: Sequence[CarrySpec], bits: int, codec: Codec | str = DEFAULT
) -> int:
    """Exact bytes of the frame for these tensors at `bits`, known before encoding."""
    codec = Codec.parse(codec)
    size = _PREFIX.size + _CRC.size
    for spec in specs:
        tensor_bits, tensor_codec = (1, EXACT) if spec.exact else (bits, codec)
        size += 1 + len(spec.name) + _LENGTH.size
        size += packet_size(spec.shape, tensor_bits, **tensor_codec.options())
    return size


def encode_carry(carry: Carry, bits: int, codec: Codec | str = DEFAULT) -> bytes:
    """The frame for `carry` (names in sorted order, so the size never depends on dict order)."""
    codec = Codec.parse(codec)
    names = sorted(carry)
    packets = [
        encode(carry[name], 1, **EXACT.options()) if name in EXACT_TENSORS
        else encode(carry[name], bits, **codec.options())
        for name in names
    ]
    table = b"".join([_PREFIX.pack(MAGIC, FRAME_VERSION, len(names))] + [
        bytes([len(name)]) + name.encode("ascii") + _LENGTH.pack(len(packet))
        for name, packet in zip(names, packets, strict=True)
    ])
    return b"".join([table, _CRC.pack(zlib.crc32(table)), *packets])


def decode_carry(frame: bytes | bytearray | memoryview) -> Carry:
    """The carry a frame holds; a damaged or foreign frame raises a `PacketError`."""
    view = memoryview(frame).cast("B")
    entries, offset = _read_table(view)
    carry: Carry = {}
    for name, length in entries:
        if offset + length > len(view):
            raise TruncatedPacket(f"carry frame cut inside tensor {name!r}")
        carry[name] = decode(view[offset : offset + length])
        offset += length
    if offset != len(view):
        raise CorruptPacket(f"carry frame has {len(view) - offset} bytes after its last tensor")
    return carry


def _read_table(view: memoryview) -> tuple[list[tuple[str, int]], int]:
    """The (name, packet length) entries of a frame's table and the offset of its first packet.
    Only bounds are trusted before the table's CRC32 holds; names are read after."""
    if bytes(view[: len(MAGIC)]) != MAGIC:
        raise ForeignPacket(f"not a QuantPipe carry frame (starts with {bytes(view[:4])!r})")
    if len(view) < _PREFIX.size:
        raise TruncatedPacket("carry frame cut before its tensor count")
    _, version, count = _PREFIX.unpack_from(view)
    if version != FRAME_VERSION:
        raise UnsupportedVersion(f"carry frame format version {version}; this stage reads "
                                 f"version {FRAME_VERSION}: run one QuantPipe on every rank")
    spans: list[tuple[memoryview, int]] = []
    offset = _PREFIX.size
    for _ in range(count):
        if offset >= len(view):
            raise TruncatedPacket(f"carry frame cut after {len(spans)} tensors' entries")
        name_end = offset + 1 + view[offset]
        if name_end + _LENGTH.size > len(view):
            raise TruncatedPacket(f"carry frame cut inside tensor {len(spans)}'s entry")
        spans.append((view[offset + 1 : name_end], *_LENGTH.unpack_from(view, name_end)))
        offset = name_end + _LENGTH.size
    if offset + _CRC.size > len(view):
        raise TruncatedPacket("carry frame cut before its table's checksum")
    if zlib.crc32(view[:offset]) != _CRC.unpack_from(view, offset)[0]:
        raise CorruptPacket("corrupt carry frame: CRC32 mismatch over its table of tensors")
    return _named(spans), offset + _CRC.size


def _named(spans: list[tuple[memoryview, int]]) -> list[tuple[str, int]]:
    """The table's entries with their names read; only a forged table (its checksum holds)
    can have names that are not ASCII or appear twice."""
    try:
        names = [bytes(name).decode("ascii") for name, _ in spans]
    except UnicodeDecodeError:
        raise CorruptPacket("carry frame has a tensor name that is not ASCII") from None
    if len(set(names)) != len(names):
        raise CorruptPacket(f"carry frame names a tensor twice: {names}")
    return [(name, length) for name, (_, length) in zip(names, spans, strict=True)]


def through_link(carry: Carry, bits: int, codec: Codec | str = DEFAULT) -> Carry:
    """The carry as the next stage receives it: encoded and decoded exactly as on the wire."""
    if bits == FLOAT_BITS:  # float32 travels as it is: skip the copy, the values are the same
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
