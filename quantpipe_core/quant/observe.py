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

HISTOGRAM_BINS = 1024
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
        lo, hi = torch.aminmax(self.x2d, dim=1)
        return lo.double().numpy(), hi.double().numpy()

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
    def _deviation_norms(self) -> tuple[np.ndarray, np.ndarray]:
        """(mean |x - mean|, root mean (x - mean)**2) of each group, from one shared pass."""
        centre = torch.from_numpy(self.mean.astype(np.float32)).unsqueeze(1)
        dev = torch.sub(self.x2d, centre)
        n = max(self.x2d.shape[1], 1)
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
        """(counts, edges) of the whole tensor over [min, max], from a strided sample.

        Only for single-group views. The sample stride is a prime that does not divide the last
        dimension, so a strided sample still visits every channel (outlier channels included).
        """
        if self.groups != 1:
            raise ValueError("a histogram is kept only for per-tensor statistics")
        flat = self.x2d.reshape(-1)
        sample = flat[:: _sample_stride(flat.numel(), self.channels)]
        lo, hi = float(self.min[0]), float(self.max[0])
        counts = torch.histc(sample, HISTOGRAM_BINS, lo, hi).double().numpy()
        counts *= flat.numel() / max(sample.numel(), 1)
        return counts, np.linspace(lo, hi, HISTOGRAM_BINS + 1)

    def quantize(self, lo: np.ndarray, hi: np.ndarray, bits: int) -> torch.Tensor:
        """`grid.quantize` of the groups, memoised for the last (lo, hi, bits) asked."""
        key = np.stack([lo, hi]).astype(np.float32).tobytes() + bytes([bits])
        if self._last_quantized is None or self._last_quantized[0] != key:
            self._last_quantized = (key, grid.quantize(self.x2d, lo, hi, bits))
        return self._last_quantized[1]


def _sample_stride(numel: int, row: int) -> int:
    stride = max(1, numel // HISTOGRAM_SAMPLES)
    if stride == 1:
        return 1
    while not (_is_prime(stride) and row % stride != 0):
        stride += 1
    return stride


def _is_prime(n: int) -> bool:
    return n >= 2 and all(n % d for d in range(2, int(n**0.5) + 1))
