"""The wire codec round trip, specified as properties over tensors, bitwidths and methods."""

from __future__ import annotations

import struct

import hypothesis.extra.numpy as hnp
import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from quantpipe_core.quant import METHODS, PacketError, decode, encode, wire_size

FAST_METHODS = ("minmax", "aciq", "ds-aciq", "percentile")

tensors = hnp.arrays(
    dtype=np.float32,
    shape=hnp.array_shapes(min_dims=1, max_dims=3, min_side=1, max_side=12),
    elements=st.floats(-1e3, 1e3, width=32, allow_subnormal=False),
).map(torch.from_numpy)
bitwidths = st.integers(1, 16)
granularities = st.sampled_from(["tensor", "token"])
cases = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def packet_ranges(packet: bytes, ndim: int, groups: int) -> np.ndarray:
    """The (lo, hi) rows a packet carries, read from the documented layout."""
    offset = 9 + 4 * ndim
    return np.frombuffer(packet, dtype="<f4", count=2 * groups, offset=offset).reshape(-1, 2)


@cases
@given(x=tensors, bits=bitwidths, method=st.sampled_from(METHODS), granularity=granularities)
def test_values_come_back_within_half_a_step_or_at_the_nearest_end(x, bits, method, granularity):
    packet = encode(x, bits, method, granularity=granularity)
    y = decode(packet)
    assert y.shape == x.shape and y.dtype == x.dtype
    groups = 1 if granularity == "tensor" else x.numel() // x.shape[-1]
    ranges = packet_ranges(packet, x.dim(), groups).astype(np.float64)
    lo, hi = ranges[:, :1], ranges[:, 1:]
    xs = x.reshape(groups, -1).double().numpy()
    ys = y.reshape(groups, -1).double().numpy()
    step = (hi - lo) / (2**bits - 1)
    # float32 arithmetic: lo + index * step rounds at the magnitude of the range's ends
    slack = 1e-6 * np.maximum(np.maximum(np.abs(xs), np.abs(lo)), np.maximum(np.abs(hi), 1.0))
    expected = np.clip(xs, lo, hi)
    assert np.all(lo <= hi)
    assert np.all(np.abs(ys - expected) <= step / 2 + slack)
    assert np.all((ys >= lo - slack) & (ys <= hi + slack))


@cases
@given(x=tensors, bits=st.one_of(bitwidths, st.just(32)), granularity=granularities)
def test_wire_size_is_exact(x, bits, granularity):
    packet = encode(x, bits, "minmax", granularity=granularity)
    assert len(packet) == wire_size(tuple(x.shape), bits, granularity=granularity)


@given(numel=st.integers(0, 5000), bits=bitwidths)
def test_payload_costs_at_most_one_byte_per_bit_plane_over_the_bits(numel, bits):
    header = wire_size((numel,), bits) - 9 - 4 - 8 - 4  # prefix, one dim, one range, CRC
    assert numel * bits / 8 <= header <= numel * bits / 8 + bits


def test_a_three_bit_tensor_takes_three_bits_a_value():
    x = torch.randn(8000)
    assert len(encode(x, 3, "minmax")) == 9 + 4 + 8 + 3000 + 4


@cases
@given(x=tensors, bits=bitwidths, data=st.data())
def test_any_flipped_byte_is_detected(x, bits, data):
    packet = bytearray(encode(x, bits, "minmax"))
    index = data.draw(st.integers(0, len(packet) - 1))
    packet[index] ^= data.draw(st.integers(1, 255))
    with pytest.raises(PacketError):
        decode(bytes(packet))


@cases
@given(x=tensors, bits=st.one_of(bitwidths, st.just(32)), data=st.data())
def test_any_cut_packet_is_detected(x, bits, data):
    packet = encode(x, bits, "minmax")
    cut = data.draw(st.integers(0, len(packet) - 1))
    with pytest.raises(PacketError):
        decode(packet[:cut])


def test_truncation_names_the_announced_size():
    packet = encode(torch.randn(4, 64), 4)
    with pytest.raises(
        PacketError, match=f"truncated packet: 50 bytes, its header announces {len(packet)}"
    ):
        decode(packet[:50])


def test_foreign_bytes_are_named_foreign():
    with pytest.raises(PacketError, match="not a QuantPipe packet"):
        decode(b"\x89PNG\r\n\x1a\n" + bytes(40))


def test_a_future_version_asks_for_an_upgrade():
    import zlib

    packet = bytearray(encode(torch.randn(3, 5), 4))
    packet[4] = 2
    body = bytes(packet[:-4])
    future = body + struct.pack("<I", zlib.crc32(body))
    with pytest.raises(PacketError, match="version 2 is newer"):
        decode(future)


def test_a_corrupt_byte_is_named_corrupt():
    packet = bytearray(encode(torch.randn(3, 50), 2))
    packet[30] ^= 0x10
    with pytest.raises(PacketError, match="corrupt packet: CRC32 mismatch"):
        decode(bytes(packet))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16, torch.float64])
def test_float32_packets_carry_the_values_as_they_are(dtype):
    x = torch.randn(2, 7, 5).to(dtype)
    y = decode(encode(x, 32))
    assert y.dtype == dtype
    assert torch.equal(y, x.float().to(dtype))


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("granularity", ["tensor", "token"])
@pytest.mark.parametrize("shape", [(0,), (3, 0), (0, 4), (2, 0, 5)])
def test_empty_tensors_round_trip(method, granularity, shape):
    x = torch.empty(shape)
    y = decode(encode(x, 4, method, granularity=granularity))
    assert y.shape == x.shape


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("granularity", ["tensor", "token"])
@pytest.mark.parametrize("bits", [1, 2, 8, 16])
@pytest.mark.parametrize("value", [0.0, 0.1, -3.75, 1e4])
def test_constant_tensors_round_trip_exactly(method, granularity, bits, value):
    x = torch.full((3, 16), value)
    assert torch.equal(decode(encode(x, bits, method, granularity=granularity)), x)


def test_a_scalar_tensor_round_trips():
    x = torch.tensor(2.5)
    assert decode(encode(x, 8)).shape == ()
    assert torch.equal(decode(encode(x, 8)), x)


@pytest.mark.parametrize("method", FAST_METHODS)
def test_other_dtypes_come_back_in_their_own_dtype(method):
    x = torch.randn(4, 16, dtype=torch.float64)
    y = decode(encode(x, 8, method))
    assert y.dtype == torch.float64
    assert torch.allclose(y, x, atol=0.1)


def test_decode_accepts_any_bytes_like_object():
    x = torch.randn(5, 6)
    packet = encode(x, 6)
    expected = decode(packet)
    assert torch.equal(decode(bytearray(packet)), expected)
    assert torch.equal(decode(memoryview(packet)), expected)
    assert torch.equal(decode(np.frombuffer(packet, np.uint8)), expected)
