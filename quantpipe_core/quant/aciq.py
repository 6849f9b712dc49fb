"""ACIQ: analytical clipping (Banner, Nahshan, Soudry, "Post training 4-bit quantization of
convolutional networks for rapid-deployment", NeurIPS 2019).

Clipping at alpha trades the clipping error of the tails against the rounding error of a grid
spread over the clip range. For a fitted distribution the sum has a closed-form minimum:

- Laplace(mu, b), range [mu - alpha, mu + alpha]: alpha = b * W(3 * 4**bits), W Lambert's W.
- Gaussian(mu, sigma): the expected error has no closed-form minimiser; it is minimised
  numerically once per bitwidth (alpha / sigma = 1.71 at 2 bits, 2.15 at 3, 2.55 at 4).
- Half-Laplace (tensors out of GeLU/ReLU: a floor near zero and a heavy right tail): the whole
  grid covers one tail, so the rounding term is four times smaller and
  alpha = b * W(12 * 4**bits), range [floor, floor + alpha], b the mean distance above the floor.

The `auto` rule, per group, from statistics every method shares:
1. half-Laplace when the group is one-sided: the short side reaches less than a fifth as far from
   zero as the long side (GeLU's floor is -0.17, its tail reaches several units);
2. otherwise Gaussian when mean-absolute-deviation / std > 0.75 (0.80 for a Gaussian, 0.71 for
   a Laplace), Laplace when at or below it.
"""

from __future__ import annotations

from functools import cache

import numpy as np
from scipy.optimize import minimize_scalar
from scipy.special import erfc, lambertw

from quantpipe_core.quant.observe import GroupStats

DISTRIBUTIONS = ("laplace", "gauss", "half-laplace", "auto")
ONE_SIDED_RATIO = 0.2
GAUSS_MAD_RATIO = 0.75


def laplace_alpha(bits: int) -> float:
    """Optimal clip alpha / b for a Laplace of scale b."""
    return float(lambertw(3.0 * 4.0**bits).real)


def half_laplace_alpha(bits: int) -> float:
    """Optimal clip alpha / b for a one-sided Laplace (exponential) of scale b."""
    return float(lambertw(12.0 * 4.0**bits).real)


@cache
def gauss_alpha(bits: int) -> float:
    """Optimal clip alpha / sigma for a unit Gaussian, minimising Banner et al.'s expected error."""

    def expected_error(alpha: float) -> float:
        clipping = (alpha**2 + 1.0) * erfc(alpha / np.sqrt(2.0)) - np.sqrt(
            2.0 / np.pi
        ) * alpha * np.exp(-(alpha**2) / 2.0)
        rounding = alpha**2 / (3.0 * 4.0**bits)
        return clipping + rounding

    return float(minimize_scalar(expected_error, bounds=(0.1, 12.0), method="bounded").x)


def choose_distribution(stats: GroupStats) -> np.ndarray:
    """The `auto` rule of the module docstring: one distribution name per group."""
    reach_low, reach_high = np.maximum(-stats.min, 0.0), np.maximum(stats.max, 0.0)
    one_sided_pos = reach_low < ONE_SIDED_RATIO * reach_high
    one_sided_neg = reach_high < ONE_SIDED_RATIO * reach_low
    spread = (stats.std > 0) & np.isfinite(stats.std)  # inf where values near 3e38 overflow
    ratio = np.divide(stats.mean_abs_dev, stats.std, out=np.zeros(stats.groups), where=spread)
    names = np.where(ratio > GAUSS_MAD_RATIO, "gauss", "laplace").astype(object)
    names[one_sided_pos | one_sided_neg] = "half-laplace"
    return names


def aciq_range(stats: GroupStats, bits: int, dist: str) -> tuple[np.ndarray, np.ndarray]:
    """ACIQ clip range of each group, never wider than the group's own [min, max]."""
    names = choose_distribution(stats) if dist == "auto" else np.full(stats.groups, dist, object)
    lo, hi = stats.min.copy(), stats.max.copy()
    centre = np.clip(stats.mean, stats.min, stats.max)
    for name in set(names):
        g = names == name
        if name == "laplace":
            alpha = laplace_alpha(bits) * stats.mean_abs_dev[g]
            lo[g], hi[g] = centre[g] - alpha, centre[g] + alpha
        elif name == "gauss":
            alpha = gauss_alpha(bits) * stats.std[g]
            lo[g], hi[g] = centre[g] - alpha, centre[g] + alpha
        elif name == "half-laplace":
            lo[g], hi[g] = _half_laplace(stats, g, bits)
        else:
            raise ValueError(f"unknown distribution {name!r}; choose one of {DISTRIBUTIONS}")
    return np.maximum(lo, stats.min), np.minimum(hi, stats.max)


def _half_laplace(stats: GroupStats, g: np.ndarray, bits: int) -> tuple[np.ndarray, np.ndarray]:
    """Floor at the near end, alpha along the long tail (mirrored for negative tails)."""
    lo, hi, mean = stats.min[g], stats.max[g], stats.mean[g]
    tail_up = np.maximum(-lo, 0.0) <= np.maximum(hi, 0.0)
    b = np.where(tail_up, mean - lo, hi - mean)
    alpha = half_laplace_alpha(bits) * b
    return np.where(tail_up, lo, hi - alpha), np.where(tail_up, lo + alpha, hi)
