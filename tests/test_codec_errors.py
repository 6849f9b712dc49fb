"""Bad input to the codec gets a clear ValueError, never a traceback from deep inside; bytes
`encode` cannot have written get a PacketError even when their checksum holds, and finite values
come back finite (issue 14, defects 5 and 6)."""

from __future__ import annotations

import struct
import zlib

import pytest
import torch

from quantpipe_core.models.carry import decode_carry, encode_carry
from quantpipe_core.quant import (
    METHODS,
    TRANSFORMS,
    PacketError,
    clip_range,
    decode,
    encode,
    wire_size,
)

x = torch.randn(4, 8)
NAN, INF = float("nan"), float("inf")
FLOAT32_MAX = torch.finfo(torch.float32).max
SHAPE_AT = 18  # version 2's fixed header comes before the shape (wire.py's layout)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
@pytest.mark.parametrize("bits", [2, 32])
@pytest.mark.parametrize("granularity", ["tensor", "token"])
def test_nan_and_inf_are_refused(bad, bits, granularity):
    y = x.clone()
    y[1, 3] = bad
    with pytest.raises(ValueError, match="NaN or Inf"):
        encode(y, bits, granularity=granularity)


@pytest.mark.parametrize("bits", [0, 17, 31, 33, -1, 8.0, True, "8", None])
def test_bits_out_of_range_are_refused(bits):
    with pytest.raises(ValueError, match="bits must be"):
        encode(x, bits)
    with pytest.raises(ValueError, match="bits must be"):
        wire_size((4, 8), bits)


def test_clip_range_has_no_float_bitwidth():
    with pytest.raises(ValueError, match=r"bits must be in 1\.\.16, got 32"):
        clip_range(x, 32, "aciq")


def test_unknown_method_lists_the_known_ones():
    with pytest.raises(ValueError, match=r"unknown clipping method 'kl'.*minmax, aciq, ds-aciq"):
        encode(x, 4, "kl")


@pytest.mark.parametrize("dtype", [torch.int32, torch.uint8, torch.bool, torch.complex64])
def test_non_float_tensors_are_refused(dtype):
    with pytest.raises(ValueError, match="floating-point"):
        encode(torch.zeros(3, 3, dtype=dtype), 8)


def test_non_tensors_are_refused():
    with pytest.raises(ValueError, match=r"expected a torch\.Tensor"):
        encode([1.0, 2.0], 8)


def test_unknown_granularity_dist_and_pct_are_refused():
    with pytest.raises(ValueError, match="unknown granularity 'channel'"):
        encode(x, 4, granularity="channel")
    with pytest.raises(ValueError, match="unknown dist 'cauchy'"):
        clip_range(x, 4, "aciq", dist="cauchy")
    with pytest.raises(ValueError, match="pct must be"):
        clip_range(x, 4, "percentile", pct=101)


def test_token_granularity_needs_a_dimension():
    with pytest.raises(ValueError, match="at least one dimension"):
        encode(torch.tensor(1.0), 4, granularity="token")


def test_too_many_dimensions_are_refused():
    with pytest.raises(ValueError, match="at most 8 dimensions"):
        encode(torch.zeros([1] * 9), 4)


def resealed(packet: bytes | bytearray) -> bytes:
    """`packet` with its CRC32 recomputed: a forgery the checksum cannot catch."""
    body = bytes(packet[:-4])
    return body + struct.pack("<I", zlib.crc32(body))


def forged_range(lo: float, hi: float, transform: str, dtype: torch.dtype = torch.float32) -> bytes:
    """A 4-bit per-tensor packet of a (4, 8) tensor whose header says its range is [lo, hi]."""
    packet = bytearray(encode(torch.randn(4, 8).to(dtype), 4, "minmax", transform=transform,
                              granularity="tensor"))
    struct.pack_into("<ff", packet, SHAPE_AT + 8, lo, hi)
    return resealed(packet)


@pytest.mark.parametrize("shape", [(0, 3037000500, 3037000500), (2**32 - 1,) * 3 + (0,)])
@pytest.mark.parametrize("bits", [4, 32])
def test_a_checksummed_shape_no_tensor_can_hold_is_a_packet_error(shape, bits):
    # empty, so the packet's size holds; but torch cannot make a tensor of that shape
    packet = bytearray(encode(torch.empty((0,) * len(shape)), bits, granularity="tensor"))
    struct.pack_into(f"<{len(shape)}I", packet, SHAPE_AT, *shape)
    with pytest.raises(PacketError, match="header fields are invalid"):
        decode(resealed(packet))


def test_wire_size_refuses_a_shape_no_tensor_can_hold():
    with pytest.raises(ValueError, match=r"too large for any tensor.*2\*\*63"):
        wire_size((3037000500,) * 2, 4)  # 3037000500**2 > 2**63 - 1
    assert wire_size((3037000499,) * 2, 4) > 0


@pytest.mark.parametrize("lo, hi", [(NAN, 1.0), (0.0, NAN), (-INF, 1.0), (0.0, INF), (1.0, -1.0)])
@pytest.mark.parametrize("transform", TRANSFORMS)
def test_a_checksummed_nan_inf_or_reversed_range_is_a_packet_error(lo, hi, transform):
    with pytest.raises(PacketError, match="not finite or is reversed"):
        decode(forged_range(lo, hi, transform))


@pytest.mark.parametrize("bad", [NAN, INF, -INF])
def test_a_checksummed_nan_or_inf_float32_value_is_a_packet_error(bad):
    packet = bytearray(encode(x, 32))
    struct.pack_into("<f", packet, SHAPE_AT + 8 + 4 * 5, bad)
    with pytest.raises(PacketError, match="float32 value is NaN or Inf"):
        decode(resealed(packet))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16])
def test_a_checksummed_range_up_to_float32s_limit_decodes_to_finite_values(dtype):
    """Computed in float32, lo + index * step overflowed to inf; a dtype narrower than float32
    saturates at its own largest value."""
    y = decode(forged_range(-FLOAT32_MAX, FLOAT32_MAX, "none", dtype))
    assert y.dtype == dtype and torch.isfinite(y).all()
    assert y.abs().max() == min(FLOAT32_MAX, torch.finfo(dtype).max)


def test_a_rotated_range_too_wide_to_rotate_back_is_a_packet_error():
    with pytest.raises(PacketError, match="too wide to undo the rotation"):
        decode(forged_range(-3e38, 3e38, "hadamard"))


NEAR_LIMIT = {
    "straddling zero": torch.linspace(-1.0, 1.0, 64).reshape(4, 16) * FLOAT32_MAX,
    "all near the top": FLOAT32_MAX - torch.linspace(0.0, 1e37, 64).reshape(4, 16),
}


@pytest.mark.parametrize("values", NEAR_LIMIT.values(), ids=NEAR_LIMIT.keys())
@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("transform", TRANSFORMS)
@pytest.mark.parametrize("granularity", ["tensor", "token"])
@pytest.mark.parametrize("bits", [1, 4, 16])
def test_finite_values_near_float32s_limit_come_back_finite(
    values, method, transform, granularity, bits
):
    y = decode(encode(values, bits, method, transform=transform, granularity=granularity))
    assert y.shape == values.shape and torch.isfinite(y).all()


@pytest.mark.parametrize("values", NEAR_LIMIT.values(), ids=NEAR_LIMIT.keys())
def test_values_near_float32s_limit_stay_within_half_a_step(values):
    y = decode(encode(values, 16, "minmax", transform="none", granularity="tensor"))
    step = (values.double().max() - values.double().min()) / (2**16 - 1)
    rounding = 2.0**103  # half of float32's spacing near its limit: the decoded value's rounding
    assert (y.double() - values.double()).abs().max() <= step / 2 + rounding


def test_a_tensor_too_large_to_rotate_is_sent_unrotated_and_says_so():
    transform_at = 9
    assert encode(NEAR_LIMIT["straddling zero"], 4)[transform_at] == TRANSFORMS.index("none")
    smaller = NEAR_LIMIT["straddling zero"] * 1e-30
    assert encode(smaller, 4)[transform_at] == TRANSFORMS.index("hadamard")


def test_an_empty_tensor_with_a_huge_last_dimension_costs_no_memory():
    """The rotation's signs are not made for a dimension no value lies along (16 GiB here)."""
    assert decode(encode(torch.empty(0, 2**31), 4)).shape == (0, 2**31)



@pytest.mark.parametrize("bits", [8, 16])
def test_values_in_float32s_subnormal_range_stay_within_half_a_step(bits):
    """Their steps are below float32's smallest normal number: in float32 the step's inverse
    overflowed, and every value went as the top of its range."""
    values = torch.tensor([[1.0, 2.0, 1.5, 1.2, 1.9, 1.1]]) * 1e-40
    y = decode(encode(values, bits, "minmax", transform="none", granularity="tensor"))
    step = (values.double().max() - values.double().min()) / (2**bits - 1)
    rounding = 2.0**-150  # half of float32's spacing among subnormal numbers
    assert (y.double() - values.double()).abs().max() <= step / 2 + rounding


@pytest.mark.parametrize("method", ["ds-aciq", "mse"])
def test_a_range_as_narrow_as_float32s_smallest_normal_number_is_histogrammed(method):
    """Its histogram's scale (bins / width) overflows float32: the bins became NaN and
    `bincount` raised (found by the codec's property tests)."""
    x = torch.tensor([0.0, 1.1755e-38])
    y = decode(encode(x, 1, method, transform="none", granularity="tensor", outliers=0))
    assert (y - x).abs().max() <= 1.1755e-38 / 2


def test_every_single_bit_flip_of_a_carry_frame_is_a_packet_error():
    """Tensor names and lengths are under a checksum too: a flip in a name was decoded as a
    renamed tensor (such as 'hiddeo') that the next stage did not know."""
    gen = torch.Generator().manual_seed(6)
    frame = encode_carry({"hidden": torch.randn(2, 5, 16, generator=gen),
                          "mask": torch.ones(2, 5)}, 4)
    for bit in range(8 * len(frame)):
        damaged = bytearray(frame)
        damaged[bit // 8] ^= 1 << (bit % 8)
        with pytest.raises(PacketError):
            decode_carry(bytes(damaged))


def test_a_carry_frame_of_another_format_version_is_refused_by_name():
    frame = bytearray(encode_carry({"hidden": x}, 4))
    frame[4] = 1
    with pytest.raises(PacketError, match="carry frame format version 1"):
        decode_carry(bytes(frame))
