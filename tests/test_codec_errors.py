"""Bad input to the codec gets a clear ValueError, never a traceback from deep inside."""

from __future__ import annotations

import pytest
import torch

from quantpipe_core.quant import clip_range, encode, wire_size

x = torch.randn(4, 8)


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
