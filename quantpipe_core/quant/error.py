"""Quantization error of candidate clip ranges: estimated from a histogram, or exact.

The search methods compare many candidate ranges. Per tensor, each candidate is scored from one
histogram (no pass over the tensor); per token, each candidate is scored exactly, all tokens at
once. Both answer `mse(lo, hi)` for arrays of candidates shaped `(candidates, groups)`.
"""

from __future__ import annotations

import numpy as np
import torch

from quantpipe_core.quant import grid
from quantpipe_core.quant.observe import GroupStats


class ExactError:
    """Mean squared quantize-then-dequantize error of each group, one tensor pass a candidate."""

    def __init__(self, stats: GroupStats, bits: int) -> None:
        self.stats, self.bits = stats, bits

    def mse(self, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
        x2d = self.stats.x2d
        out = np.empty(np.shape(lo))
        for k in range(out.shape[0]):
            lo32, hi32 = grid.as_float32_range(lo[k], hi[k])
            q = self.stats.quantize(lo32, hi32, self.bits)
            err = grid.dequantize(q, lo32, hi32, self.bits).sub_(x2d)
            out[k] = _group_sum_of_squares(err)
        return out / max(x2d.shape[1], 1)


class HistogramError:
    """Expected error of a single-group tensor from its histogram, values uniform inside a bin.

    For each bin, the squared error is integrated exactly over the part of the bin below lo,
    inside [lo, hi] and above hi. Inside, the rounding error of a grid of step s is
    s**2 * (u - round(u))**2 with u = (x - lo) / s, whose antiderivative is closed-form.
    """

    def __init__(self, stats: GroupStats, bits: int) -> None:
        self._fit(*stats.histogram, bits)

    @classmethod
    def of_counts(cls, counts: np.ndarray, edges: np.ndarray, bits: int) -> HistogramError:
        """The estimate for a histogram given as it is (e.g. weighted)."""
        model = cls.__new__(cls)
        model._fit(counts, edges, bits)
        return model

    def _fit(self, counts: np.ndarray, edges: np.ndarray, bits: int) -> None:
        self.edges = np.asarray(edges, dtype=np.float64)
        width = np.maximum(np.diff(self.edges), 1e-300)
        self.weight = counts / width / max(float(counts.sum()), 1.0)
        self.top = grid.levels(bits)

    def mse(self, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
        """Each bin's error is an antiderivative's difference between the bin's edges, so the
        three antiderivatives are evaluated once per edge and differenced once."""
        lo3 = np.asarray(lo, dtype=np.float64)[..., None]
        hi3 = np.maximum(np.asarray(hi, dtype=np.float64)[..., None], lo3)
        e = self.edges
        below = np.minimum(e, lo3) - lo3  # (x - lo) where x < lo, else 0
        above = np.maximum(e, hi3) - hi3
        step = np.maximum((hi3 - lo3) / self.top, 1e-300)
        u = (np.minimum(np.maximum(e, lo3), hi3) - lo3) / step
        antiderivative = (below * below * below + above * above * above) / 3.0
        antiderivative += step * step * step * _sawtooth_integral(u)
        return np.diff(antiderivative, axis=-1) @ self.weight


def _group_sum_of_squares(err: torch.Tensor) -> np.ndarray:
    if err.shape[0] == 1:  # a dot product is several times faster than any other reduction
        return np.array([torch.dot(err[0], err[0]).item()])
    return err.square_().sum(dim=1).double().numpy()


def _sawtooth_integral(u: np.ndarray) -> np.ndarray:
    """Antiderivative of (u - round(u))**2, continuous, zero at u = -1/2."""
    n = np.floor(u + 0.5)
    v = u - n
    return n / 12.0 + (v * v * v + 0.125) / 3.0

