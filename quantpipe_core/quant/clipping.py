"""Clipping methods: each turns a tensor's group statistics into one clip range per group.

One small class per method behind one interface, `ranges(stats, bits) -> (lo, hi)`:

- `minmax`: the data's own extremes; no clipping error, the coarsest grid.
- `aciq`: Banner et al.'s closed-form clip for a fitted distribution (see `aciq.py`).
- `ds-aciq`: ACIQ's range, then a directed search on the tensor's real quantization error
  (see `search.py`). Per tensor it searches on a histogram and finishes with one exact
  comparison against the ACIQ start on the strided sample the histogram came from, so it never
  ends worse than ACIQ on that sample (every value of a tensor up to 65,536 values).
  Per token it divides each token by its own reach (`observe.TokenScaled`), so that one range
  of the normalised values is a range per token; ACIQ's fit of the normalised sample is the
  start, and the search runs on their histogram weighted by each token's squared reach, which
  makes the estimate the whole tensor's error: one histogram instead of a search per token. The
  ranges found, cut to each token's own extremes (a finer grid) or not, and per-token ACIQ's
  ranges are then compared exactly on the sampled tokens, and the least error wins: so it never
  ends worse than per-token ACIQ there.
- `percentile`: the pct-th and (100 - pct)-th percentiles.
- `mse`: exhaustive grid search of both ends on the quantization error.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Protocol

import numpy as np
import torch

from quantpipe_core.names import CLIP_METHODS, check_bits, check_choice, check_registry
from quantpipe_core.quant import grid
from quantpipe_core.quant.aciq import DISTRIBUTIONS, aciq_range
from quantpipe_core.quant.error import ExactError, HistogramError
from quantpipe_core.quant.observe import GroupStats, TokenScaled
from quantpipe_core.quant.search import GRID_POINTS, directed_search, grid_search

METHODS = tuple(CLIP_METHODS)
RANGE_GROUPS = ("tensor", "token")
TOKEN_GRID_POINTS = 16


class ClipMethod(Protocol):
    def ranges(self, stats: GroupStats, bits: int) -> tuple[np.ndarray, np.ndarray]: ...


class MinMax:
    def ranges(self, stats: GroupStats, bits: int) -> tuple[np.ndarray, np.ndarray]:
        return stats.min, stats.max


class Aciq:
    def __init__(self, dist: str) -> None:
        self.dist = dist

    def ranges(self, stats: GroupStats, bits: int) -> tuple[np.ndarray, np.ndarray]:
        return aciq_range(stats, bits, self.dist)


class DsAciq:
    def __init__(self, dist: str) -> None:
        self.dist = dist

    def ranges(self, stats: GroupStats, bits: int) -> tuple[np.ndarray, np.ndarray]:
        if stats.groups > 1:
            return _token_scaled_search(stats, bits, self.dist)
        start_lo, start_hi = aciq_range(stats, bits, self.dist)
        lo, hi = directed_search(HistogramError(stats, bits), start_lo, start_hi, stats.min,
                                 stats.max)
        if np.array_equal(lo, start_lo) and np.array_equal(hi, start_hi):
            return lo, hi
        on_sample = ExactError(GroupStats(stats.sample, stats.channels), bits)
        exact = on_sample.mse(np.stack([start_lo, lo]), np.stack([start_hi, hi]))
        keep_start = exact[0] <= exact[1]
        return np.where(keep_start, start_lo, lo), np.where(keep_start, start_hi, hi)


class Percentile:
    def __init__(self, pct: float) -> None:
        self.pct = pct

    def ranges(self, stats: GroupStats, bits: int) -> tuple[np.ndarray, np.ndarray]:
        n = stats.x2d.shape[1]
        if n == 0:
            return stats.min, stats.max
        k_hi = min(max(math.ceil(self.pct / 100.0 * n), 1), n)
        k_lo = n + 1 - k_hi
        lo = torch.kthvalue(stats.x2d, k_lo, dim=1).values.double().numpy()
        hi = torch.kthvalue(stats.x2d, k_hi, dim=1).values.double().numpy()
        return lo, hi


class MseGrid:
    def ranges(self, stats: GroupStats, bits: int) -> tuple[np.ndarray, np.ndarray]:
        estimate = _error_model(stats, bits)
        points = TOKEN_GRID_POINTS if isinstance(estimate, ExactError) else GRID_POINTS
        centre = np.clip(stats.mean, stats.min, stats.max)
        return grid_search(estimate, stats.min, centre, stats.max, points=points)


def _token_scaled_search(
    stats: GroupStats, bits: int, dist: str
) -> tuple[np.ndarray, np.ndarray]:
    """Per-token DS-ACIQ on the token-normalised tensor (see `TokenScaled`)."""
    scaled = TokenScaled(stats)
    start_lo, start_hi = aciq_range(scaled.stats, bits, dist)
    estimate = HistogramError.of_counts(*scaled.histogram(), bits)
    floor, ceiling = np.array([scaled.floor]), np.array([scaled.ceiling])
    lo, hi = directed_search(estimate, start_lo, start_hi, floor, ceiling)
    candidates = [scaled.token_ranges(lo[0], hi[0], cut=cut) for cut in (False, True)]
    rows = scaled.sampled
    sampled = GroupStats(stats.x2d[rows], stats.channels)
    own_fits = aciq_range(sampled, bits, dist)  # per-token ACIQ, a token's fit being its own
    errors = ExactError(sampled, bits).mse(
        np.stack([*(c[0][rows] for c in candidates), own_fits[0]]),
        np.stack([*(c[1][rows] for c in candidates), own_fits[1]]),
    ).sum(axis=1)
    best = int(errors.argmin())
    return candidates[best] if best < len(candidates) else aciq_range(stats, bits, dist)


def _error_model(stats: GroupStats, bits: int) -> ExactError | HistogramError:
    """Histogram estimate for one group (no tensor pass per candidate), exact for many."""
    if stats.groups == 1:
        return HistogramError(stats, bits)
    return ExactError(stats, bits)


def check_dist_pct(dist: str, pct: float) -> None:
    """Refuse an unknown ACIQ distribution or a percentile outside (50, 100]."""
    check_choice("dist", dist, DISTRIBUTIONS)
    if isinstance(pct, bool) or not (isinstance(pct, int | float) and 50.0 < pct <= 100.0):
        raise ValueError(f"pct must be a number in (50, 100], got {pct!r}")


# Each method's class, built from the codec's options (ACIQ's `dist`, the percentile's `pct`);
# its name and one-line description are in quantpipe_core.names.CLIP_METHODS.
BUILDERS: dict[str, Callable[[str, float], ClipMethod]] = {
    "minmax": lambda dist, pct: MinMax(),
    "aciq": lambda dist, pct: Aciq(dist),
    "ds-aciq": lambda dist, pct: DsAciq(dist),
    "percentile": lambda dist, pct: Percentile(float(pct)),
    "mse": lambda dist, pct: MseGrid(),
}
check_registry("clipping methods", BUILDERS, CLIP_METHODS)


def clip_method(method: str, *, dist: str = "auto", pct: float = 99.99) -> ClipMethod:
    """The clipping method named `method`, with its options checked."""
    check_dist_pct(dist, pct)
    check_choice("clipping method", method, METHODS)
    return BUILDERS[method](dist, pct)


def check_granularity(granularity: str) -> None:
    check_choice("granularity", granularity, RANGE_GROUPS)


def as_groups(x: torch.Tensor, granularity: str) -> torch.Tensor:
    """Float32 `(groups, values)` view of a float tensor: one group, or one per token."""
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"expected a torch.Tensor, got {type(x).__name__}")
    if not x.is_floating_point():
        raise ValueError(f"expected a floating-point tensor, got dtype {x.dtype}")
    check_granularity(granularity)
    x32 = x.detach().to(device="cpu", dtype=torch.float32).contiguous()
    if granularity == "tensor":
        return x32.reshape(1, -1)
    if x32.dim() == 0:
        raise ValueError("granularity 'token' needs a tensor with at least one dimension")
    return x32.reshape(-1, x32.shape[-1]) if x32.shape[-1] else x32.reshape(0, 0)


def observe(x2d: torch.Tensor, channels: int) -> GroupStats:
    """Statistics of the groups of `x2d`; refuses NaN and Inf."""
    stats = GroupStats(x2d, channels)
    if x2d.numel() and not (np.isfinite(stats.min).all() and np.isfinite(stats.max).all()):
        raise ValueError("tensor contains NaN or Inf; only finite values can be quantized")
    return stats


def group_ranges(stats: GroupStats, bits: int, method: ClipMethod) -> tuple[np.ndarray, np.ndarray]:
    """Float32 clip range of each group, as the packet stores it; (0, 0) for empty groups."""
    if stats.x2d.numel() == 0:
        zeros = np.zeros(stats.groups, dtype=np.float32)
        return zeros, zeros.copy()
    lo, hi = grid.as_float32_range(*method.ranges(stats, bits))
    usable = np.isfinite(lo) & np.isfinite(hi)
    if usable.all():
        return lo, hi
    # a method's statistics overflowed (values near float32's limit): keep the group's extremes
    return grid.as_float32_range(np.where(usable, lo, stats.min), np.where(usable, hi, stats.max))


def clip_range(
    x: torch.Tensor, bits: int, method: str, *, dist: str = "auto", pct: float = 99.99
) -> tuple[float, float]:
    """The per-tensor clip range (lo, hi) that `method` picks for quantizing `x` to `bits` bits.

    The ends are rounded to float32, exactly as `encode` stores and uses them.
    """
    bits = check_bits(bits, allow_float=False)
    chosen = clip_method(method, dist=dist, pct=pct)
    x2d = as_groups(x, "tensor")
    lo, hi = group_ranges(observe(x2d, x.shape[-1] if x.dim() else 1), bits, chosen)
    return float(lo[0]), float(hi[0])
