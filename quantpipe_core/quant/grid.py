"""The uniform asymmetric integer grid: one range per group, `2**bits` levels from lo to hi.

Both the codec and the clipping methods' error measurements go through these two functions,
so the error a method minimises is the error the wire really carries.

A tensor is seen as a 2-D view `(groups, values)`: one group for per-tensor ranges, one group
per token (vector along the last dimension) for per-token ranges.
"""

from __future__ import annotations

import numpy as np
import torch

MIN_BITS = 1
MAX_BITS = 16
FLOAT_BITS = 32


def levels(bits: int) -> int:
    """Index of the top level: a `bits`-bit grid has indices 0..levels(bits)."""
    return (1 << bits) - 1


def index_dtype(bits: int) -> torch.dtype:
    """Smallest torch dtype that holds every index of a `bits`-bit grid."""
    return torch.uint8 if bits <= 8 else torch.int32


def as_float32_range(lo: np.ndarray, hi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Round a range to float32, as the packet header stores it, keeping lo <= hi."""
    lo32 = np.asarray(lo, dtype=np.float32)
    hi32 = np.maximum(np.asarray(hi, dtype=np.float32), lo32)
    return lo32, hi32


def _steps(lo: np.ndarray, hi: np.ndarray, bits: int) -> np.ndarray:
    return (hi.astype(np.float64) - lo.astype(np.float64)) / levels(bits)


def quantize(x2d: torch.Tensor, lo: np.ndarray, hi: np.ndarray, bits: int) -> torch.Tensor:
    """Grid indices of a float32 `(groups, values)` tensor; values outside [lo, hi] saturate.

    `lo` and `hi` are float32 arrays with one entry per group (see `as_float32_range`).
    Rounds half up: shifting by half a step and truncating costs one pass less than rounding.
    """
    step = _steps(lo, hi, bits)
    inv = np.divide(1.0, step, out=np.zeros_like(step), where=step > 0)
    top = float(levels(bits))
    if x2d.shape[0] == 1:
        u = torch.sub(x2d, float(lo[0] - 0.5 * step[0])).mul_(float(inv[0]))
    else:
        shift = torch.from_numpy((lo - 0.5 * step).astype(np.float32)).unsqueeze(1)
        scale = torch.from_numpy(inv.astype(np.float32)).unsqueeze(1)
        u = torch.sub(x2d, shift).mul_(scale)
    return u.clamp_(0.0, top).to(index_dtype(bits))


def dequantize(q2d: torch.Tensor, lo: np.ndarray, hi: np.ndarray, bits: int) -> torch.Tensor:
    """Float32 values of grid indices: lo + index * step, per group."""
    step = _steps(lo, hi, bits)
    out = q2d.to(torch.float32)
    if q2d.shape[0] == 1:
        return out.mul_(float(step[0])).add_(float(lo[0]))
    step_t = torch.from_numpy(step.astype(np.float32)).unsqueeze(1)
    lo_t = torch.from_numpy(lo.astype(np.float32)).unsqueeze(1)
    return out.mul_(step_t).add_(lo_t)
