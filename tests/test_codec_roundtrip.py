"""The wire codec round trip, specified as properties over tensors, bitwidths and methods."""

from __future__ import annotations

import math
import struct
import zlib

import hypothesis.extra.numpy as hnp
import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from quantpipe_core.names import LOSSLESS
from quantpipe_core.quant import (
    GRANULARITIES,
    METHODS,
    TRANSFORMS,
    Codec,
    PacketError,
    decode,
    encode,
    grid,
    packing,
    wire_size,
)
from quantpipe_core.quant.transform import rotate

FAST_METHODS = ("minmax", "aciq", "ds-aciq", "percentile")

tensors = hnp.arrays(
    dtype=np.float32,
    shape=hnp.array_shapes(min_dims=1, max_dims=3, min_side=1, max_side=12),
    elements=st.floats(-1e3, 1e3, width=32, allow_subnormal=False),
).map(torch.from_numpy)
bitwidths = st.integers(1, 16)
granularities = st.sampled_from(GRANULARITIES)
codecs = st.builds(
    Codec,
    method=st.sampled_from(METHODS),
    transform=st.sampled_from(TRANSFORMS),
    granularity=granularities,
    outliers=st.one_of(st.integers(0, 3), st.just("auto")),
    seed=st.integers(0, 2**32 - 1),
    lossless=st.sampled_from(LOSSLESS),
)
cases = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
HEADER = 18  # version 2's fixed header, before the shape; version 3 adds the coder's byte


def read_packet(packet: bytes) -> dict:
    """The fields of a version-2 or 3 packet, read from the layout documented in `wire.py`."""
    _, version, _, bits, gran, ndim, transform, seed, k = struct.unpack_from("<4sBBBBBBII",
                                                                              packet)
    header = HEADER + (version == 3)
    shape = struct.unpack_from(f"<{ndim}I", packet, header)
    offset = header + 4 * ndim
    channels = np.frombuffer(packet, "<u4", count=k, offset=offset).astype(np.int64)
    offset += 4 * k
    rows = math.prod(shape) // shape[-1] if shape and math.prod(shape) else 1
    groups = rows if gran == 1 else 1
    ranges = np.frombuffer(packet, "<f4", count=2 * groups + 2 * bool(k), offset=offset)
    ranges = ranges.reshape(-1, 2).astype(np.float64)
    return {"bits": bits, "token": gran == 1, "transform": transform, "seed": seed,
            "channels": channels, "ranges": ranges[:groups], "apart": ranges[groups:],
            "rows": rows}


def assert_within_half_a_step(sent: np.ndarray, got: np.ndarray, ranges: np.ndarray, bits: int):
    """Each row of `got` is `sent` clipped to the row's range, within half a grid step."""
    lo, hi = ranges[:, :1], ranges[:, 1:]
    step = (hi - lo) / (2**bits - 1)
    # float32 arithmetic: lo + index * step rounds at the magnitude of the range's ends
    scale = np.maximum(np.maximum(np.abs(sent), np.abs(lo)), np.maximum(np.abs(hi), 1.0))
    slack = 1e-6 * scale * max(sent.shape[1], 1)
    assert np.all(lo <= hi)
    assert np.all(np.abs(got - np.clip(sent, lo, hi)) <= step / 2 + slack)


@cases
@given(x=tensors, bits=bitwidths, codec=codecs)
def test_values_come_back_within_half_a_step_of_their_grid(x, bits, codec):
    """In the domain the grid is laid on (rotated, if the packet says so), every value comes
    back within half a step of itself clipped to its range. Outlier channels come back within
    half a step of their own 16-bit grid, and the other channels exactly as if the outlier
    channels had been zeros sent without outliers."""
    packet = encode(x, bits, **codec.options())
    y = decode(packet)
    assert y.shape == x.shape and y.dtype == x.dtype
    fields = read_packet(packet)
    channels = torch.from_numpy(fields["channels"])
    if len(channels):
        rows = fields["rows"]
        xs, ys = x.reshape(rows, -1).double(), y.reshape(rows, -1).double()
        assert_within_half_a_step(xs[:, channels].reshape(1, -1).numpy(),
                                  ys[:, channels].reshape(1, -1).numpy(), fields["apart"], 16)
        zeroed = x.reshape(rows, -1).clone()
        zeroed[:, channels] = 0.0
        packet = encode(zeroed.reshape(x.shape), bits, **codec.with_options(outliers=0).options())
        rest = decode(packet).reshape(rows, -1)
        others = torch.ones(xs.shape[1], dtype=torch.bool)
        others[channels] = False
        assert torch.equal(rest[:, others], y.reshape(rows, -1)[:, others])
        x, y, fields = zeroed.reshape(x.shape), rest.reshape(x.shape), read_packet(packet)
    xs = x.reshape(fields["rows"], -1).double()
    ys = y.reshape(fields["rows"], -1).double()
    if fields["transform"]:
        xs = rotate(xs.float(), fields["seed"]).double()
        ys = rotate(ys.float(), fields["seed"]).double()
    groups = len(fields["ranges"])
    assert_within_half_a_step(xs.reshape(groups, -1).numpy(), ys.reshape(groups, -1).numpy(),
                              fields["ranges"], bits)


@cases
@given(x=tensors, bits=st.one_of(bitwidths, st.just(32)), codec=codecs)
def test_wire_size_is_exact_for_every_option(x, bits, codec):
    """Exact with bit-planes; with a lossless coder, the exact worst case: the packet is the
    bit-planes' one, or a coded one (version 3) that is shorter."""
    packet = encode(x, bits, **codec.options())
    size = wire_size(tuple(x.shape), bits, **codec.options())
    assert len(packet) == size or (codec.lossless != "none" and packet[4] == 3
                                   and len(packet) < size)


@cases
@given(x=tensors, bits=st.one_of(bitwidths, st.just(32)), codec=codecs)
def test_a_lossless_coder_changes_the_bytes_not_the_values(x, bits, codec):
    planes = encode(x, bits, **codec.with_options(lossless="none").options())
    for name in LOSSLESS:
        coded = encode(x, bits, **codec.with_options(lossless=name).options())
        assert coded == planes or len(coded) < len(planes)
        assert torch.equal(decode(coded), decode(planes))


@pytest.mark.parametrize("bits", [1, 2, 3, 4, 8, 12, 16])
def test_zstd_shortens_a_peaked_tensor_and_records_it_in_version_3(bits):
    u = torch.rand(16, 64, generator=torch.Generator().manual_seed(0)) - 0.5
    x = -0.1 * torch.sign(u) * torch.log1p(-2 * u.abs())  # Laplace(0, 0.1), seeded
    x[:, 3] *= 50.0  # an outlier channel: min-max's grid is mostly empty
    plain = {"method": "minmax", "transform": "none", "granularity": "tensor"}
    coded = encode(x, bits, lossless="zstd", **plain)
    assert coded[4] == 3 and coded[HEADER] == LOSSLESS.index("zstd")
    assert len(coded) < 0.9 * wire_size(x.shape, bits, lossless="zstd", **plain)
    assert torch.equal(decode(coded), decode(encode(x, bits, **plain)))


@given(numel=st.integers(0, 5000), bits=bitwidths)
def test_payload_costs_at_most_one_byte_per_bit_plane_over_the_bits(numel, bits):
    plain = {"transform": "none", "granularity": "tensor"}
    payload = wire_size((numel,), bits, **plain) - HEADER - 4 - 8 - 4  # one dim, range, CRC
    assert numel * bits / 8 <= payload <= numel * bits / 8 + bits


def test_a_three_bit_tensor_takes_three_bits_a_value():
    x = torch.randn(8000)
    assert len(encode(x, 3, "minmax", granularity="tensor")) == HEADER + 4 + 8 + 3000 + 4


def test_auto_granularity_takes_per_token_ranges_where_they_cost_at_most_a_tenth():
    # 8 bytes of range a token against 384 channels x 2 bits = 96 bytes of payload: per token
    assert read_packet(encode(torch.randn(4, 384), 2))["token"]
    # 64 channels x 2 bits = 16 bytes: a range a token would add half; one range instead
    assert not read_packet(encode(torch.randn(4, 64), 2))["token"]
    assert read_packet(encode(torch.randn(4, 64), 10))["token"]


@given(shape=hnp.array_shapes(min_dims=1, max_dims=3, min_side=1, max_side=2000),
       bits=bitwidths)
def test_auto_options_add_at_most_a_tenth_of_the_payload(shape, bits):
    """Per-token ranges and budgeted outlier channels together: the bytes the default adds to
    one range for the tensor stay within a tenth of the payload (and version 2's header)."""
    plain = wire_size(shape, bits, transform="none", granularity="tensor")
    payload = packing.payload_size(math.prod(shape), bits)
    assert wire_size(shape, bits) - plain <= 0.10 * payload + 1


def test_the_budget_sends_outlier_channels_where_the_ranges_leave_room():
    x = torch.randn(8, 32, 384)
    x[..., 11] *= 40.0
    assert len(read_packet(encode(x, 2))["channels"]) == 0  # token ranges take the tenth
    three_bits = read_packet(encode(x, 3))
    assert len(three_bits["channels"]) == 3 and 11 in three_bits["channels"]
    assert len(read_packet(encode(x, 4))["channels"]) == 5
    assert len(read_packet(encode(x, 16))["channels"]) == 0  # no finer than the rest
    assert len(read_packet(encode(x, 3, granularity="tensor"))["channels"]) == 0
    assert Codec.parse("ds-aciq/hadamard/auto/o0").label == "ds-aciq/hadamard/auto/o0"
    assert Codec.parse("ds-aciq/none/tensor/o0").label == "ds-aciq/none/tensor"


def test_outlier_channels_are_the_largest_and_travel_at_16_bits():
    x = torch.randn(16, 384)
    x[:, [7, 300]] *= 50.0
    packet = encode(x, 2, outliers=2)
    fields = read_packet(packet)
    assert list(fields["channels"]) == [7, 300]
    y = decode(packet)
    step = (fields["apart"][0, 1] - fields["apart"][0, 0]) / (2**16 - 1)
    assert (y[:, [7, 300]] - x[:, [7, 300]]).abs().max() <= step / 2 + 1e-5
    assert len(packet) == wire_size(x.shape, 2, outliers=2)


def test_the_rotation_spreads_an_outlier_channel_so_one_range_fits():
    x = torch.randn(64, 384) * 0.5
    x[:, 11] = 40.0
    plain = decode(encode(x, 3, transform="none", granularity="tensor"))
    rotated = decode(encode(x, 3, transform="hadamard", granularity="tensor"))
    assert (rotated - x).square().mean() < 0.5 * (plain - x).square().mean()


def encode_version_1(x: torch.Tensor, bits: int) -> bytes:
    """A version-1 packet (min-max, one range), written from version 1's documented layout."""
    lo, hi = np.float32(x.min()), np.float32(x.max())
    q = grid.quantize(x.reshape(1, -1), np.array([lo]), np.array([hi]), bits)
    body = (struct.pack("<4sBBBBB", b"QPAQ", 1, 0, bits, 0, x.dim())
            + struct.pack(f"<{x.dim()}I", *x.shape) + struct.pack("<ff", lo, hi)
            + packing.pack(q, bits))
    return body + struct.pack("<I", zlib.crc32(body))


@pytest.mark.parametrize("bits", [1, 3, 8, 16])
def test_version_1_packets_still_decode(bits):
    x = torch.randn(6, 40)
    y = decode(encode_version_1(x, bits))
    step = float(x.max() - x.min()) / (2**bits - 1)
    assert y.shape == x.shape
    assert (y - x).abs().max() <= step / 2 + 1e-5


def test_version_1_damage_is_still_detected():
    packet = bytearray(encode_version_1(torch.randn(6, 40), 4))
    packet[20] ^= 0x40
    with pytest.raises(PacketError, match="CRC32"):
        decode(bytes(packet))


@pytest.mark.parametrize("option, value, message", [
    ("transform", "fourier", "unknown transform 'fourier'"),
    ("granularity", "channel", "unknown granularity 'channel'"),
    ("outliers", -1, "outliers must be a non-negative integer"),
    ("outliers", 1.5, "outliers must be a non-negative integer"),
    ("seed", 2**32, "seed must be an integer"),
    ("seed", "7", "seed must be an integer"),
    ("lossless", "gzip", "unknown lossless 'gzip'"),
])
def test_bad_options_are_refused_naming_the_option(option, value, message):
    with pytest.raises(ValueError, match=message):
        encode(torch.randn(4, 8), 4, **{option: value})
    with pytest.raises(ValueError, match=message):
        wire_size((4, 8), 4, **{option: value})


def test_an_unknown_option_is_refused():
    with pytest.raises(TypeError, match="colour"):
        encode(torch.randn(4, 8), 4, colour="red")


@cases
@given(x=tensors, bits=bitwidths, codec=codecs, data=st.data())
def test_any_flipped_byte_is_detected(x, bits, codec, data):
    packet = bytearray(encode(x, bits, **codec.options()))
    index = data.draw(st.integers(0, len(packet) - 1))
    packet[index] ^= data.draw(st.integers(1, 255))
    with pytest.raises(PacketError):
        decode(bytes(packet))


@cases
@given(x=tensors, bits=st.one_of(bitwidths, st.just(32)), codec=codecs, data=st.data())
def test_any_cut_packet_is_detected(x, bits, codec, data):
    packet = encode(x, bits, **codec.options())
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
    packet = bytearray(encode(torch.randn(3, 5), 4))
    packet[4] = 4
    body = bytes(packet[:-4])
    future = body + struct.pack("<I", zlib.crc32(body))
    with pytest.raises(PacketError, match="version 4 is newer"):
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
@pytest.mark.parametrize("granularity", GRANULARITIES)
@pytest.mark.parametrize("shape", [(0,), (3, 0), (0, 4), (2, 0, 5)])
def test_empty_tensors_round_trip(method, granularity, shape):
    x = torch.empty(shape)
    for outliers in (0, 2):
        y = decode(encode(x, 4, method, granularity=granularity, outliers=outliers))
        assert y.shape == x.shape


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("granularity", ["tensor", "token"])
@pytest.mark.parametrize("bits", [1, 2, 8, 16])
@pytest.mark.parametrize("value", [0.0, 0.1, -3.75, 1e4])
def test_constant_tensors_round_trip_exactly_unrotated(method, granularity, bits, value):
    x = torch.full((3, 16), value)
    sent = encode(x, bits, method, granularity=granularity, transform="none")
    assert torch.equal(decode(sent), x)


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
