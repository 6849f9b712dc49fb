"""Fuzzing the decoders: whatever bytes arrive, `decode` and `decode_carry` give back finite
tensors or raise a PacketError; never another exception, never NaN or Inf (issue 14).

Damaged bytes (flipped bits, changed bytes, cuts, extra bytes) must all be refused: checksums
cover every byte. Forged bytes, whose checksums were recomputed after changing fields (shape,
bits, dtype, ranges set to NaN, Inf, reversed or huge, options, outlier indices, lengths, names),
get past the checksum, so the decoder's own checks must refuse them or decode them to finite
values. Seeded loops over packets and frames written from the layouts documented in `wire.py`
and `models/carry.py`: a failure names its case, which reproduces.
"""

from __future__ import annotations

import math
import struct
import zlib
from collections import Counter
from collections.abc import Callable

import numpy as np
import pytest
import torch

from quantpipe_core.models.carry import decode_carry, encode_carry
from quantpipe_core.quant import PacketError, decode, encode, grid, packing

CASES = {"damaged packets": 3000, "forged packets": 5000, "damaged frames": 1500,
         "forged frames": 1500}
NAN, INF = float("nan"), float("inf")
FLOAT32_MAX = float(np.finfo(np.float32).max)
U8_EDGES = (0, 1, 2, 3, 4, 7, 8, 9, 15, 16, 17, 31, 32, 33, 127, 128, 255)
U32_EDGES = (0, 1, 2, 3, 7, 8, 16, 17, 255, 2**16, 92682, 2**31 - 1, 2**31, 3037000500,
             2**32 - 1)
F32_EDGES = (NAN, INF, -INF, 0.0, -0.0, 1e-45, -1e-45, 1.0, -1.0, 65504.0, 70000.0, 1e30,
             -1e30, 3e38, -3e38, FLOAT32_MAX, -FLOAT32_MAX)


def crc(data: bytes) -> bytes:
    return struct.pack("<I", zlib.crc32(data))


def resealed(body: bytes) -> bytes:
    """A packet body (everything before the CRC) with a valid CRC32: a forgery."""
    return body + crc(body)


def version_1(x: torch.Tensor, bits: int) -> bytes:
    """A version-1 packet (min-max, one range), written from version 1's documented layout."""
    lo, hi = np.float32(x.min()), np.float32(x.max())
    q = grid.quantize(x.reshape(1, -1), np.array([lo]), np.array([hi]), bits)
    return resealed(struct.pack("<4sBBBBB", b"QPAQ", 1, 0, bits, 0, x.dim())
                    + struct.pack(f"<{x.dim()}I", *x.shape) + struct.pack("<ff", lo, hi)
                    + packing.pack(q, bits))


def sample_packets() -> list[bytes]:
    """Packets of every kind: bitwidths, granularities, transforms, outliers, dtypes, shapes
    (scalar and empty included), coded payloads (version 3) and format version 1."""
    gen = torch.Generator().manual_seed(14)

    def t(*shape: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        return torch.randn(*shape, generator=gen).to(dtype)

    plain = {"transform": "none", "granularity": "tensor"}
    peaked = t(24, 32) * 0.01
    peaked[:, 7], peaked[:, 9] = 30.0, -20.0  # min-max's grid mostly empty: coding shortens it
    return [
        *(encode(t(4, 8), bits, "minmax", **plain) for bits in (1, 3, 8, 16, 32)),
        encode(t(3, 5, 16), 4, "ds-aciq", granularity="token"),
        encode(t(3, 5, 16), 9, transform="hadamard", granularity="tensor", outliers=2),
        encode(t(6, 32), 2, outliers=3),
        encode(t(7), 5),
        encode(torch.tensor(1.5), 8),
        encode(torch.empty(0, 8), 4),
        encode(t(2, 8, dtype=torch.float16), 6),
        encode(t(2, 8, dtype=torch.bfloat16), 32),
        encode(t(2, 8, dtype=torch.float64), 12, granularity="token", outliers=1),
        *(encode(peaked, bits, "minmax", lossless="zstd", **plain) for bits in (2, 4, 12)),
        encode(peaked, 3, "minmax", lossless="zstd", transform="none", granularity="tensor",
               outliers=1),
        version_1(t(5, 6), 3),
    ]


def sample_frames() -> list[bytes]:
    gen = torch.Generator().manual_seed(6)
    hidden = torch.randn(2, 5, 16, generator=gen)
    return [
        encode_carry({"hidden": hidden, "mask": torch.ones(2, 5)}, 4),
        encode_carry({"hidden": hidden[0]}, 2, "minmax/none/tensor"),
        encode_carry({"hidden": hidden, "gelu": hidden.relu()}, 32),
        encode_carry({}, 8),
    ]


def field_offsets(packet: bytes) -> list[tuple[int, str]]:
    """(offset, struct code) of each header field, outlier index, clip-range end and raw float32
    value of a packet (which may be forged already), from the layouts documented in `wire.py`."""
    end = len(packet) - 4

    def slots(at: int, count: int) -> list[int]:  # 4-byte fields that lie inside the body
        return [at + 4 * i for i in range(min(count, max(0, (end - at) // 4)))]

    version, bits, granularity, ndim = packet[4], packet[6], packet[7], packet[8]
    if version == 1:
        fields, at, k = [(offset, "B") for offset in range(4, 9)], 9, 0
    else:
        fields = [(offset, "B") for offset in range(4, 10)] + [(10, "I"), (14, "I")]
        at, k = 18, struct.unpack_from("<I", packet, 14)[0]
        if version == 3:  # the coder's byte
            fields, at = [*fields, (18, "B")], 19
    shape = [struct.unpack_from("<I", packet, offset)[0] for offset in slots(at, ndim)]
    fields += [(offset, "I") for offset in slots(at, ndim + k)]
    at += 4 * (ndim + k)
    numel = math.prod(shape)
    rows = numel // shape[-1] if shape and numel else int(numel > 0)
    floats = numel if bits == 32 else 2 * (rows if granularity else 1) + 2 * bool(k)
    return fields + [(offset, "f") for offset in slots(at, floats)]


def forged_field(packet: bytes, rng: np.random.Generator) -> bytes:
    """`packet` with one field set to an edge or random value (or a range reversed), resealed."""
    body = bytearray(packet[:-4])
    fields = field_offsets(packet)
    offset, code = fields[rng.integers(len(fields))]
    if code == "f" and rng.random() < 0.2:  # swap a range's ends: reversed if they differed
        first_range = min(at for at, field in fields if field == "f")
        start = offset - (offset - first_range) % 8
        if start + 8 <= len(body):
            lo, hi = struct.unpack_from("<ff", body, start)
            struct.pack_into("<ff", body, start, hi, lo)
            return resealed(bytes(body))
    edges = {"B": U8_EDGES, "I": U32_EDGES, "f": F32_EDGES}[code]
    if rng.random() < 0.8:
        value = edges[rng.integers(len(edges))]
    elif code == "f":
        value = float(rng.normal() * 10.0 ** rng.integers(-40, 39))
    else:
        value = int(rng.integers(256 if code == "B" else 2**32))
    struct.pack_into(f"<{code}", body, offset, value)
    return resealed(bytes(body))


def forged_length(packet: bytes, rng: np.random.Generator) -> bytes:
    """`packet` with bytes added or removed (at the end or inside), resealed."""
    body = packet[:-4]
    at = int(rng.integers(4, len(body) + 1))
    count = int(rng.integers(1, 17))
    if rng.random() < 0.5:
        return resealed(body[:at] + rng.bytes(count) + body[at:])
    return resealed(body[:at] + body[at + count:])


def forged_payload(packet: bytes, rng: np.random.Generator) -> bytes:
    """`packet` with random bytes anywhere after the magic, resealed."""
    body = bytearray(packet[:-4])
    for _ in range(rng.integers(1, 4)):
        body[rng.integers(4, len(body))] = rng.integers(256)
    return resealed(bytes(body))


FORGERIES: tuple[Callable[[bytes, np.random.Generator], bytes], ...] = (
    forged_field, forged_field, forged_field, forged_length, forged_payload,
)


def forged(packet: bytes, rng: np.random.Generator) -> bytes:
    """One to three forgeries in a row, each resealed."""
    for _ in range(rng.integers(1, 4)):
        packet = FORGERIES[rng.integers(len(FORGERIES))](packet, rng)
        if len(packet) < 22:  # too short for another field to forge
            break
    return packet


def damaged(data: bytes, rng: np.random.Generator) -> bytes:
    """`data` with flipped bits, a changed byte, a cut, or extra bytes; checksums untouched."""
    kind = rng.integers(4)
    if kind == 0:
        flipped = bytearray(data)
        for _ in range(rng.integers(1, 4)):
            flipped[rng.integers(len(data))] ^= 1 << int(rng.integers(8))
        return bytes(flipped)
    if kind == 1:
        changed = bytearray(data)
        at = rng.integers(len(data))
        changed[at] ^= int(rng.integers(1, 256))
        return bytes(changed)
    if kind == 2:
        return data[: rng.integers(len(data))]
    return data + rng.bytes(int(rng.integers(1, 17)))


def outcome(decoder: Callable[[bytes], object], data: bytes, case: str) -> str:
    """"refused: <the PacketError's message>" or "decoded" (finite tensors);
    any other exception, or a NaN or Inf, fails the test naming the case."""
    try:
        result = decoder(data)
    except PacketError as error:
        return f"refused: {error}"
    except Exception as error:  # the finding this test is for
        pytest.fail(f"{case}: {type(error).__name__}: {error}")
    tensors = result.values() if isinstance(result, dict) else [result]
    for tensor in tensors:
        assert isinstance(tensor, torch.Tensor), case
        assert torch.isfinite(tensor).all(), f"{case}: NaN or Inf decoded"
    return "decoded"


def assert_damage_refused(decoder, samples: list[bytes], kind: str, seed: int) -> None:
    """Every `CASES[kind]` damaged copy of `samples` is refused by `decoder`."""
    rng = np.random.default_rng(seed)
    for case in range(CASES[kind]):
        sample = samples[case % len(samples)]
        got = outcome(decoder, damaged(sample, rng), f"{kind} case {case}")
        assert got.startswith("refused"), f"{kind} case {case} decoded"


def test_every_damaged_packet_is_refused():
    assert_damage_refused(decode, sample_packets(), "damaged packets", seed=1)


def test_forged_packets_with_valid_crcs_decode_to_finite_values_or_are_refused():
    rng = np.random.default_rng(2)
    packets = sample_packets()
    seen = Counter(
        outcome(decode, forged(packets[case % len(packets)], rng), f"forged packet case {case}")
        for case in range(CASES["forged packets"])
    )
    # the forgeries get past the checksum, to every other check
    assert not any("CRC32" in answer for answer in seen)
    assert seen["decoded"] > 0.05 * CASES["forged packets"]
    for check in ("header fields are invalid", "bytes where shape", "outlier channel indices",
                  "clip range is not finite", "too wide to undo the rotation",
                  "float32 value is NaN", "is newer than", "coded payload"):
        assert any(check in answer for answer in seen), check


def frame_parts(frame: bytes) -> tuple[list[bytes], list[bytes]]:
    """(names, packets) of a frame, read from the layout documented in `models/carry.py`."""
    names, lengths, at = [], [], 6
    for _ in range(frame[5]):
        names.append(frame[at + 1: at + 1 + frame[at]])
        at += 1 + frame[at]
        lengths.append(struct.unpack_from("<I", frame, at)[0])
        at += 4
    at += 4  # the table's CRC32
    packets = []
    for length in lengths:
        packets.append(frame[at: at + length])
        at += length
    return names, packets


def frame_of(names: list[bytes], lengths: list[int], body: bytes, version: int = 2) -> bytes:
    """A frame whose table says `names` and `lengths`, with a valid table CRC32, then `body`."""
    table = b"QPCF" + bytes([version, len(names)]) + b"".join(
        bytes([len(name)]) + name + struct.pack("<I", length)
        for name, length in zip(names, lengths, strict=True)
    )
    return table + crc(table) + body


def forged_frame(frame: bytes, packets_pool: list[bytes], rng: np.random.Generator) -> bytes:
    """`frame` with a forged table (a name renamed, made non-ASCII or repeated, an entry dropped
    or added, a length changed) or a forged packet, its table CRC32 recomputed."""
    names, packets = frame_parts(frame)
    lengths = [len(packet) for packet in packets]
    kind = rng.integers(6) if names else 3
    i = rng.integers(len(names)) if names else 0
    if kind == 0:  # rename: random, non-ASCII, empty, or another entry's name
        names[i] = [rng.bytes(int(rng.integers(0, 12))), b"hidd\xe9n", b"",
                    names[rng.integers(len(names))]][rng.integers(4)]
    elif kind == 1:  # a packet length off by a little or a lot
        lengths[i] = int([0, lengths[i] - 1, lengths[i] + 1, 2**32 - 1,
                          rng.integers(2**32)][rng.integers(5)])
    elif kind == 2:  # an entry dropped, its packet with it or left behind
        del names[i], lengths[i]
        if rng.random() < 0.5:
            del packets[i]
    elif kind == 3:  # an entry more, with a forged packet
        packet = forged(packets_pool[rng.integers(len(packets_pool))], rng)
        names, packets, lengths = [*names, b"extra"], [*packets, packet], [*lengths, len(packet)]
    elif kind == 4:  # a forged packet in place of one, its length right
        packets[i] = forged(packets[i], rng)
        lengths[i] = len(packets[i])
    else:  # another frame version
        return frame_of(names, lengths, b"".join(packets), version=int(rng.integers(256)))
    return frame_of(names, lengths, b"".join(packets))


def test_every_damaged_carry_frame_is_refused():
    assert_damage_refused(decode_carry, sample_frames(), "damaged frames", seed=3)


def test_forged_carry_frames_with_valid_crcs_decode_to_finite_values_or_are_refused():
    rng = np.random.default_rng(4)
    frames, packets = sample_frames(), sample_packets()
    seen = Counter(
        outcome(decode_carry, forged_frame(frames[case % len(frames)], packets, rng),
                f"forged frame case {case}")
        for case in range(CASES["forged frames"])
    )
    assert not any("over its table" in answer for answer in seen)
    assert seen["decoded"] > 0.05 * CASES["forged frames"]
    for check in ("not ASCII", "names a tensor twice", "frame format version", "cut inside",
                  "bytes after its last tensor"):
        assert any(check in answer for answer in seen), check


def test_the_fuzz_runs_at_least_ten_thousand_cases():
    assert sum(CASES.values()) >= 10_000
