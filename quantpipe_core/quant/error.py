"""Quantization error of candidate clip ranges: estimated from a histogram, or exact.

The search methods compare many candidate ranges. Per tensor, each candidate is scored from one
histogram (no pass over the tensor); per token, each candidate is scored exactly, all tokens at
once. Both answer `mse(lo, hi)` for arrays of candidates shaped `(candidates, groups)`.
"""

from __future__ import annotations

import numpy as np

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
            out[k] = grid.squared_error(x2d, *grid.as_float32_range(lo[k], hi[k]), self.bits)
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
        density = counts / width / max(float(counts.sum()), 1.0)
        # sum_j (A[j+1] - A[j]) * density[j] == A @ (density shifted by one - density), for the
        # antiderivative A at the edges: one product instead of a difference and a product
        padded = np.concatenate([[0.0], density, [0.0]])
        self.edge_weight = (padded[:-1] - padded[1:]) / 3.0
        self.top = grid.levels(bits)

    def mse(self, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
        """Each bin's error is an antiderivative's difference between the bin's edges, so the
        antiderivatives are evaluated once per edge (in place where it can: the candidates are
        few and the edges hundreds, so each array pass counts)."""
        lo3 = np.asarray(lo, dtype=np.float64)[..., None]
        hi3 = np.maximum(np.asarray(hi, dtype=np.float64)[..., None], lo3)
        e = self.edges
        step = np.maximum((hi3 - lo3) / self.top, 1e-300)
        below = np.minimum(e - lo3, 0.0)  # (x - lo) where x < lo, else 0
        above = np.maximum(e - hi3, 0.0)
        antiderivative = below * below
        antiderivative *= below
        below = np.multiply(above, above, out=below)
        below *= above
        antiderivative += below
        u = np.minimum(e, hi3, out=above)  # the grid position: (x - lo) / step inside [lo, hi]
        u -= lo3
        np.maximum(u, 0.0, out=u)
        u /= step
        antiderivative += 3.0 * step * step * step * _sawtooth_integral(u)
        return antiderivative @ self.edge_weight


def _sawtooth_integral(u: np.ndarray) -> np.ndarray:
    """Antiderivative of (u - round(u))**2, continuous, zero at u = -1/2."""
    n = np.floor(u + 0.5)
    v = u - n
    return n / 12.0 + (v * v * v + 0.125) / 3.0

