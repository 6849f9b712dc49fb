"""Statistics of a tensor's groups, collected once and shared by every clipping method.

Kept apart from the range computations (as in `torch.ao.quantization.observer`): a method asks
for what it needs, and each statistic costs one pass over the data the first time it is asked.
The last quantization is kept too, so the codec does not quantize again with a range that a
method already quantized with while scoring it.
"""

from __future__ import annotations

from functools import cached_property

import numpy as np
import torch

from quantpipe_core.quant import grid

HISTOGRAM_BINS = 512
FLOAT32_MAX = float(np.finfo(np.float32).max)
HISTOGRAM_SAMPLES = 1 << 16


class GroupStats:
    """Lazily computed statistics of a float32 `(groups, values)` view, one entry per group."""

    def __init__(self, x2d: torch.Tensor, channels: int) -> None:
        """`channels` is the length of the tensor's last dimension (used to pick the sample)."""
        self.x2d = x2d
        self.channels = max(channels, 1)
        self._last_quantized: tuple[bytes, torch.Tensor] | None = None

    @property
    def groups(self) -> int:
        return self.x2d.shape[0]

    @cached_property
    def _minmax(self) -> tuple[np.ndarray, np.ndarray]:
        if self.groups == 1:  # the whole-tensor reduction is an order of magnitude faster
            lo, hi = torch.aminmax(self.x2d)
            return np.array([lo.item()]), np.array([hi.item()])
        # two reductions: torch.aminmax along a dimension is ~20x slower than both (torch 2.13)
        return self.x2d.amin(dim=1).double().numpy(), self.x2d.amax(dim=1).double().numpy()

    @property
    def min(self) -> np.ndarray:
        return self._minmax[0]

    @property
    def max(self) -> np.ndarray:
        return self._minmax[1]

    @cached_property
    def mean(self) -> np.ndarray:
        if self.groups == 1:
            return np.array([self.x2d.mean().item()])
        return self.x2d.mean(dim=1).double().numpy()

    @cached_property
    def sample(self) -> torch.Tensor:
        """A strided sample of a single-group view, `(1, values)`: every value of a small tensor,
        about HISTOGRAM_SAMPLES of a large one. The stride is a prime that does not divide the
        last dimension, so the sample still visits every channel (outlier channels included)."""
        if self.groups != 1:
            raise ValueError("a sample is kept only for per-tensor statistics")
        flat = self.x2d.reshape(-1)
        stride = _sample_stride(flat.numel(), self.channels)
        if stride == 1:
            return flat.unsqueeze(0)
        # one copy: every later pass over a strided view costs several times a contiguous one
        return flat[::stride].contiguous().unsqueeze(0)

    @cached_property
    def _deviation_norms(self) -> tuple[np.ndarray, np.ndarray]:
        """(mean |x - mean|, root mean (x - mean)**2) of each group, from one shared pass; of
        the sample for one group (the ACIQ fits need no more, and a full pass costs as much as
        the whole min-max encode)."""
        values = self.sample if self.groups == 1 else self.x2d
        centre = torch.from_numpy(self.mean.astype(np.float32)).unsqueeze(1)
        dev = torch.sub(values, centre)
        n = max(values.shape[1], 1)
        if self.groups == 1:  # whole-tensor reductions are much faster
            l1 = np.array([dev.abs().sum().item()])
            l2 = np.array([torch.dot(dev[0], dev[0]).item() ** 0.5])
        else:
            l1 = dev.abs().sum(dim=1).double().numpy()
            l2 = dev.square_().sum(dim=1).sqrt_().double().numpy()
        return l1 / n, l2 / np.sqrt(n)

    @property
    def mean_abs_dev(self) -> np.ndarray:
        """Mean absolute deviation from the mean: the maximum-likelihood Laplace scale."""
        return self._deviation_norms[0]

    @property
    def std(self) -> np.ndarray:
        return self._deviation_norms[1]

    @cached_property
    def histogram(self) -> tuple[np.ndarray, np.ndarray]:
        """(counts, edges) of the whole tensor over [min, max], from `sample`: HISTOGRAM_BINS
        bins, fewer for a small sample (about 16 values a bin, at least 128 bins)."""
        lo, hi = float(self.min[0]), float(self.max[0])
        bins = min(HISTOGRAM_BINS, max(128, self.sample.numel() // 16))
        counts = _bin_counts(self.sample.reshape(-1), lo, hi - lo, bins)
        counts *= self.x2d.numel() / max(self.sample.numel(), 1)
        return counts, np.linspace(lo, hi, bins + 1)

    def quantize(self, lo: np.ndarray, hi: np.ndarray, bits: int) -> torch.Tensor:
        """`grid.quantize` of the groups, memoised for the last (lo, hi, bits) asked."""
        key = np.stack([lo, hi]).astype(np.float32).tobytes() + bytes([bits])
        if self._last_quantized is None or self._last_quantized[0] != key:
            self._last_quantized = (key, grid.quantize(self.x2d, lo, hi, bits))
        return self._last_quantized[1]


def _bin_counts(values: torch.Tensor, lo: float, width: float, bins: int,
                weights: torch.Tensor | None = None) -> np.ndarray:
    """Float64 counts (or sums of `weights`) of `values` in `bins` equal bins over [lo, lo +
    width], the ends included (values outside go to the end bins); `torch.bincount` of the bin
    indices, which is several times faster than `torch.histc`. A range so narrow that its
    scale overflows float32 (values near its smallest normal) is binned in float64."""
    scale = bins / width if width > 0 else 0.0
    if scale >= FLOAT32_MAX:
        values = values.double()
    index = torch.sub(values, lo).mul_(scale).clamp_(0, bins - 1).to(torch.int64)
    return torch.bincount(index, weights=weights, minlength=bins).double().numpy()


def _sample_stride(numel: int, row: int) -> int:
    stride = max(1, numel // HISTOGRAM_SAMPLES)
    if stride == 1:
        return 1
    while not (_is_prime(stride) and row % stride != 0):
        stride += 1
    return stride


def _is_prime(n: int) -> bool:
    return n >= 2 and all(n % d for d in range(2, int(n**0.5) + 1))


class TokenScaled:
    """A per-token view divided by each token's reach, so that one range fits every token.

    Token t's values become ``u = (x - centre_t) / reach_t``: its centre is its mean (inside its
    range), its reach the farther of its min and max from the centre, so every token spans [-1,
    1] on at least one side. A range [a, b] of ``u`` is the range ``centre_t + reach_t * [a, b]``
    of token t, and its squared error there is ``reach_t**2`` times the error in ``u``: a
    histogram of a sample of ``u`` weighted by ``reach_t**2`` estimates the whole tensor's error
    of a shared [a, b]. The sample is whole tokens, evenly spaced.
    """

    BINS = 256

    def __init__(self, stats: GroupStats) -> None:
        x2d = stats.x2d
        values = max(x2d.shape[1], 1)
        self.token = stats
        self.centre = np.clip(stats.mean, stats.min, stats.max)
        reach = np.maximum(self.centre - stats.min, stats.max - self.centre)
        self.reach = np.where(reach > 0, reach, 1.0)
        every = max(1, x2d.numel() // HISTOGRAM_SAMPLES)
        self.sampled = slice(None, None, every)
        centre = torch.from_numpy(self.centre[::every].astype(np.float32)).unsqueeze(1)
        reach = torch.from_numpy(self.reach[::every].astype(np.float32)).unsqueeze(1)
        self.u = (x2d[::every] - centre).div_(reach).reshape(-1)
        self.weight = reach.double().square_().expand(-1, values).reshape(-1)
        self.stats = GroupStats(self.u.unsqueeze(0), 1)
        # every token's extremes in its own units: the far tails a sample may miss
        self.floor = float(np.min((stats.min - self.centre) / self.reach))
        self.ceiling = float(np.max((stats.max - self.centre) / self.reach))

    def histogram(self) -> tuple[np.ndarray, np.ndarray]:
        """(counts weighted by each token's squared reach, edges) over every token's extremes."""
        lo, width = self.floor, max(self.ceiling - self.floor, 1e-12)
        counts = _bin_counts(self.u.double(), lo, width, self.BINS, self.weight)
        return counts, np.linspace(lo, lo + width, self.BINS + 1)

    def token_ranges(self, a: float, b: float, *, cut: bool) -> tuple[np.ndarray, np.ndarray]:
        """Each token's range for the normalised range [a, b]; `cut` to the token's own
        extremes, or not (the histogram scored uncut ranges; cut ones have finer grids)."""
        lo, hi = self.centre + a * self.reach, self.centre + b * self.reach
        if cut:
            lo, hi = np.maximum(lo, self.token.min), np.minimum(hi, self.token.max)
        return lo, np.maximum(hi, lo)
