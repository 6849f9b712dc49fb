"""Lossless coding of the payload (`lossless.py`): what a coded packet may and may not hold.

The round trip and exact worst-case size of every option combination are properties in
test_codec_roundtrip.py; here, the forged coded payloads a decoder must refuse before they take
memory: frames that claim or produce more than the packet's shape allows (decompression bombs),
frames without their size, and bytes after the frame.
"""

from __future__ import annotations

import struct
import zlib

import pytest
import torch
import zstandard

from quantpipe_core.quant import PacketError, decode, encode, symbols, wire_size

PLAIN = {"method": "minmax", "transform": "none", "granularity": "tensor", "lossless": "zstd"}
SHAPE = (16, 64)
BITS = 2
PREFIX = 19 + 4 * len(SHAPE) + 8  # version 3's header, the shape and one clip range


def coded_packet() -> bytes:
    x = torch.distributions.Laplace(0.0, 0.1).sample(SHAPE)
    x[:, 5] *= 40.0
    packet = encode(x, BITS, **PLAIN)
    assert packet[4] == 3
    return packet


def with_payload(packet: bytes, payload: bytes) -> bytes:
    """`packet` with its coded payload replaced, the CRC32 recomputed: a forgery."""
    body = packet[:PREFIX] + payload
    return body + struct.pack("<I", zlib.crc32(body))


def frame(data: bytes, **options: object) -> bytes:
    return zstandard.ZstdCompressor(level=1, **options).compress(data)


def claiming(coded: bytes, size: int) -> bytes:
    """A Zstandard frame whose header claims `size` bytes of content (a 4-byte field), the
    blocks left as they are: the header layout is RFC 8878's section 3.1.1.1."""
    descriptor = coded[4]
    single_segment = descriptor >> 5 & 1
    dict_bytes = (0, 1, 2, 4)[descriptor & 3]
    size_bytes = (single_segment, 2, 4, 8)[descriptor >> 6]
    kept = coded[5: 5 + (1 - single_segment) + dict_bytes]
    blocks = coded[5 + (1 - single_segment) + dict_bytes + size_bytes:]
    return coded[:4] + bytes([descriptor & 0x3F | 2 << 6]) + kept + size.to_bytes(4, "little") \
        + blocks


EXPECTED = symbols.byte_size(SHAPE[0] * SHAPE[1], BITS)


def test_the_forgery_helpers_rebuild_a_packet_that_decodes():
    packet = coded_packet()
    assert decode(with_payload(packet, packet[PREFIX:-4])).shape == SHAPE
    assert decode(with_payload(packet, claiming(packet[PREFIX:-4], EXPECTED))).shape == SHAPE


@pytest.mark.parametrize("claimed", [EXPECTED + 1, 2 * EXPECTED, 1 << 30, 2**32 - 1])
def test_a_frame_that_claims_more_than_the_shape_allows_is_refused(claimed):
    """Refused on the header's claim, before any memory is taken for it."""
    with pytest.raises(PacketError, match="claims"):
        decode(with_payload(coded_packet(), claiming(frame(bytes(EXPECTED)), claimed)))


def test_a_frame_that_claims_the_right_size_and_expands_past_it_is_refused():
    with pytest.raises(PacketError, match="coded payload"):
        decode(with_payload(coded_packet(), claiming(frame(bytes(2 * EXPECTED)), EXPECTED)))


def test_a_frame_without_its_size_is_refused():
    payload = frame(bytes(EXPECTED), write_content_size=False)
    with pytest.raises(PacketError, match="does not record its size"):
        decode(with_payload(coded_packet(), payload))


def test_bytes_after_the_frame_are_refused():
    packet = coded_packet()
    with pytest.raises(PacketError, match="bytes after its frame"):
        decode(with_payload(packet, packet[PREFIX:-4] + b"\x00"))


def test_a_coded_packet_no_shorter_than_its_bit_planes_is_refused():
    packet = coded_packet()
    planes = wire_size(SHAPE, BITS, **PLAIN)
    padding = bytes(planes - len(packet))  # now exactly as long as the bit-planes' packet
    with pytest.raises(PacketError, match="less than"):
        decode(with_payload(packet, packet[PREFIX:-4] + padding))


@pytest.mark.parametrize("code", [0, 2, 255])
def test_a_version_3_header_without_a_known_coder_is_refused(code):
    packet = bytearray(coded_packet())
    packet[18] = code
    body = bytes(packet[:-4])
    with pytest.raises(PacketError, match="header fields are invalid"):
        decode(body + struct.pack("<I", zlib.crc32(body)))


def test_garbage_in_place_of_a_frame_is_refused():
    packet = coded_packet()
    with pytest.raises(PacketError, match="not a Zstandard frame"):
        decode(with_payload(packet, b"\x00" * 40))


@pytest.mark.parametrize("bits", [5, 12])
def test_an_index_above_the_grid_is_refused(bits):
    """At 5-7 and 9-15 bits a symbol's byte(s) have bits to spare, and a forged index past the
    grid's top would decode beyond the range (to inf); at 1-4 bits the spare bits are masked."""
    x = torch.zeros(SHAPE)
    x[:, 0] = 50.0
    packet = encode(x, bits, **PLAIN)
    numel = SHAPE[0] * SHAPE[1]
    raw = bytearray(symbols.to_bytes(torch.zeros(numel, dtype=torch.uint8 if bits <= 8
                                                 else torch.int32), bits))
    raw[1] = 0xFF  # index 255 (5 bits) or 0xFF00 (12 bits)
    with pytest.raises(PacketError, match=f"beyond a {bits}-bit grid"):
        decode(with_payload(packet, frame(bytes(raw))))
