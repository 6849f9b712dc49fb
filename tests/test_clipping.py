"""Clipping methods: ACIQ's closed forms, the auto rule, and DS-ACIQ against its peers."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import gauss_activation, gelu_activation, laplace_activation
from hypothesis import given, settings
from hypothesis import strategies as st

from quantpipe_core.quant import clip_range, decode, encode, grid
from quantpipe_core.quant.aciq import (
    choose_distribution,
    gauss_alpha,
    half_laplace_alpha,
    laplace_alpha,
)
from quantpipe_core.quant.error import ExactError, HistogramError
from quantpipe_core.quant.observe import GroupStats

SHAPES = {"laplace": laplace_activation, "gelu": gelu_activation, "gauss": gauss_activation}


def quantization_mse(
    x: torch.Tensor, bits: int, method: str, granularity="tensor", transform="none", dist="auto"
) -> float:
    """Error of the round trip; unrotated by default, so that the method's ranges are tested."""
    sent = encode(x, bits, method, granularity=granularity, transform=transform, dist=dist)
    return torch.mean((decode(sent) - x) ** 2).item()


@pytest.mark.parametrize(("bits", "expected"), [(2, 2.83), (3, 3.89), (4, 5.03)])
def test_laplace_alpha_matches_banner_et_al(bits, expected):
    assert laplace_alpha(bits) == pytest.approx(expected, abs=0.01)


@pytest.mark.parametrize(("bits", "expected"), [(2, 1.71), (3, 2.15), (4, 2.55)])
def test_gauss_alpha_matches_banner_et_al(bits, expected):
    assert gauss_alpha(bits) == pytest.approx(expected, abs=0.01)


def test_half_laplace_clips_as_a_laplace_with_one_more_bit():
    for bits in range(1, 9):
        assert half_laplace_alpha(bits) == pytest.approx(laplace_alpha(bits + 1))


@pytest.mark.parametrize(
    ("shape", "expected"), [("laplace", "laplace"), ("gelu", "half-laplace"), ("gauss", "gauss")]
)
def test_auto_rule_recognises_the_activation_shape(shape, expected):
    x = SHAPES[shape](0)
    stats = GroupStats(x.reshape(1, -1), x.shape[-1])
    assert choose_distribution(stats)[0] == expected


def test_auto_rule_mirrors_for_negative_tails():
    x = -gelu_activation(0)
    lo, hi = clip_range(x, 3, "aciq")
    assert hi == pytest.approx(x.max().item())
    assert lo > x.min().item()


def test_aciq_ranges_stay_inside_the_data():
    for shape in SHAPES.values():
        x = shape(1)
        for bits in (2, 8, 16):
            lo, hi = clip_range(x, bits, "aciq")
            assert x.min().item() <= lo <= hi <= x.max().item()


@settings(max_examples=60, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    shape=st.sampled_from(sorted(SHAPES)),
    bits=st.integers(1, 8),
    dist=st.sampled_from(["auto", "laplace", "gauss", "half-laplace"]),
    transform=st.sampled_from(["none", "hadamard"]),
    granularity=st.sampled_from(["tensor", "token"]),
)
def test_ds_aciq_never_ends_worse_than_aciq(seed, shape, bits, dist, transform, granularity):
    """Exact on tensors up to the sample's size (every value is in the sample): per tensor the
    search's result is compared with its ACIQ start, per token with per-token ACIQ's ranges; the
    rotation keeps squared errors, so the guarantee holds rotated too."""
    x = SHAPES[shape](seed, (3, 17, 64))
    aciq = quantization_mse(x, bits, "aciq", granularity, transform, dist=dist)
    ds = quantization_mse(x, bits, "ds-aciq", granularity, transform, dist=dist)
    assert ds <= aciq * (1 + 1e-5) + 1e-12


@pytest.mark.parametrize("shape", ["laplace", "gelu"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_ds_aciq_beats_minmax_at_two_bits(shape, seed):
    x = SHAPES[shape](seed)
    assert quantization_mse(x, 2, "ds-aciq") < 0.5 * quantization_mse(x, 2, "minmax")


@pytest.mark.parametrize("shape", ["laplace", "gelu"])
@pytest.mark.parametrize("bits", [2, 3, 4])
def test_ds_aciq_comes_within_five_percent_of_the_exhaustive_grid(shape, bits):
    x = SHAPES[shape](3, (8, 64, 128))
    assert quantization_mse(x, bits, "ds-aciq") <= 1.05 * quantization_mse(x, bits, "mse")


@pytest.mark.parametrize("shape", ["laplace", "gelu"])
def test_ds_aciq_improves_on_aciq_where_the_fit_is_loose(shape):
    """GeLU outputs are not exactly half-Laplace and Laplace at 4 bits is off the fitted optimum."""
    x = SHAPES[shape](4, (8, 64, 128))
    assert quantization_mse(x, 4, "ds-aciq") < 0.99 * quantization_mse(x, 4, "aciq")


def test_ds_aciq_leaves_a_bad_analytical_start_behind():
    """Outlier channels break the Laplace fit at high bitwidths; the search must walk out of it."""
    x = laplace_activation(5, (8, 64, 128))
    x[..., [3, 77]] *= 30.0
    aciq, ds = quantization_mse(x, 12, "aciq"), quantization_mse(x, 12, "ds-aciq")
    assert ds < 0.1 * aciq


def test_token_ranges_keep_small_tokens_that_a_tensor_range_flattens():
    scales = torch.logspace(-2, 2, 64).reshape(1, 64, 1)
    x = laplace_activation(6, (2, 64, 128)) * scales

    def relative_error_per_token(granularity: str, method: str) -> float:
        y = decode(encode(x, 4, method, granularity=granularity, transform="none"))
        return ((y - x) ** 2).mean(dim=-1).div(x.pow(2).mean(dim=-1)).mean().item()

    for method in ("minmax", "aciq", "ds-aciq"):
        assert relative_error_per_token("token", method) < 0.1
        assert relative_error_per_token("tensor", method) > 0.3


def test_percentile_at_100_is_minmax_and_lower_levels_clip_more():
    x = laplace_activation(7)
    assert clip_range(x, 4, "percentile", pct=100) == clip_range(x, 4, "minmax")
    lo99, hi99 = clip_range(x, 4, "percentile", pct=99)
    lo999, hi999 = clip_range(x, 4, "percentile", pct=99.9)
    assert lo999 < lo99 < 0 < hi99 < hi999
    assert (x <= hi99).float().mean().item() == pytest.approx(0.99, abs=0.002)


def test_clip_range_is_what_encode_uses():
    x = gelu_activation(8)
    lo, hi = clip_range(x, 3, "ds-aciq")
    y = decode(encode(x, 3, "ds-aciq", granularity="tensor", transform="none"))
    assert y.min().item() == pytest.approx(lo, abs=1e-6)
    assert y.max().item() == pytest.approx(hi, rel=1e-6)


@pytest.mark.parametrize("shape", ["laplace", "gelu"])
@pytest.mark.parametrize("bits", [2, 4, 8])
def test_histogram_estimate_tracks_the_exact_error(shape, bits):
    x = SHAPES[shape](9, (8, 64, 128))
    stats = GroupStats(x.reshape(1, -1), x.shape[-1])
    spread = x.abs().max().item()
    lo = np.array([[-0.5 * spread], [-0.2 * spread], [x.min().item()]])
    hi = np.array([[0.6 * spread], [0.3 * spread], [x.max().item()]])
    estimate = HistogramError(stats, bits).mse(lo, hi)
    exact = ExactError(stats, bits).mse(lo, hi)
    np.testing.assert_allclose(estimate, exact, rtol=0.1)


@settings(max_examples=60, deadline=None)
@given(
    seed=st.integers(0, 2**16),
    groups=st.sampled_from([1, 3]),
    bits=st.integers(1, 16),
    spread=st.sampled_from([1e-3, 1.0, 1e12]),  # squares summed in float32, as before
)
def test_exact_error_is_the_error_quantize_then_dequantize_carries(seed, groups, bits, spread):
    gen = torch.Generator().manual_seed(seed)
    x2d = torch.randn(groups, 257, generator=gen) * spread
    lo, hi = grid.as_float32_range(
        x2d.amin(dim=1).double().numpy() * 0.7, x2d.amax(dim=1).double().numpy() * 0.8
    )
    carried = grid.dequantize(grid.quantize(x2d, lo, hi, bits), lo, hi, bits) - x2d
    expected = carried.double().square().sum(dim=1).numpy()
    np.testing.assert_allclose(grid.squared_error(x2d, lo, hi, bits), expected, rtol=1e-5)
