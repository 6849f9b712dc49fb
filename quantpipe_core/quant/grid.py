"""The uniform asymmetric integer grid: one range per group, `2**bits` levels from lo to hi.

Both the codec and the clipping methods' error measurements go through these two functions,
so the error a method minimises is the error the wire really carries.

A tensor is seen as a 2-D view `(groups, values)`: one group for per-tensor ranges, one group
per token (vector along the last dimension) for per-token ranges.

Both work in float32, except where float32 would fail the grid: ranges whose ends reach near
float32's limit (3.4e38), where `x - lo` or `lo + index * step` would overflow to inf, and steps
below float32's smallest normal number, whose inverse overflows and which lose precision. Those
tensors go through float64.
"""

from __future__ import annotations

import numpy as np
import torch

FLOAT32_SAFE = 2.0**127  # |lo| + |hi| below it: every intermediate stays finite in float32
_FLOAT32_MAX = float(np.finfo(np.float32).max)
_FLOAT32_TINY = float(np.finfo(np.float32).tiny)


def levels(bits: int) -> int:
    """Index of the top level: a `bits`-bit grid has indices 0..levels(bits)."""
    return (1 << bits) - 1


def index_dtype(bits: int) -> torch.dtype:
    """Smallest torch dtype that holds every index of a `bits`-bit grid."""
    return torch.uint8 if bits <= 8 else torch.int32


def as_float32_range(lo: np.ndarray, hi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Round a range to float32, as the packet header stores it, keeping lo <= hi; ends past
    float32's limit (a wide range around values near it) stop at the limit."""
    lo32 = np.clip(lo, -_FLOAT32_MAX, _FLOAT32_MAX).astype(np.float32)
    hi32 = np.maximum(np.clip(hi, -_FLOAT32_MAX, _FLOAT32_MAX).astype(np.float32), lo32)
    return lo32, hi32


def _steps(lo: np.ndarray, hi: np.ndarray, bits: int) -> np.ndarray:
    return (hi.astype(np.float64) - lo.astype(np.float64)) / levels(bits)


def _needs_float64(lo: np.ndarray, hi: np.ndarray, step: np.ndarray) -> bool:
    """Whether some group's range reaches so far that float32 arithmetic on it could overflow,
    or its step is too small for float32 (see the module docstring)."""
    reach = np.abs(lo.astype(np.float64)) + np.abs(hi.astype(np.float64))
    return bool(np.any(reach >= FLOAT32_SAFE) or np.any((step > 0) & (step < _FLOAT32_TINY)))


def quantize(x2d: torch.Tensor, lo: np.ndarray, hi: np.ndarray, bits: int) -> torch.Tensor:
    """Grid indices of a float32 `(groups, values)` tensor; values outside [lo, hi] saturate.

    `lo` and `hi` are float32 arrays with one entry per group (see `as_float32_range`).
    Rounds half up: shifting by half a step and truncating costs one pass less than rounding.
    """
    return _positions(x2d, lo, hi, bits).to(index_dtype(bits))


def _positions(x2d: torch.Tensor, lo: np.ndarray, hi: np.ndarray, bits: int) -> torch.Tensor:
    """Each value's grid position plus a half, clamped to [0, levels]: truncated, the index."""
    step = _steps(lo, hi, bits)
    inv = np.divide(1.0, step, out=np.zeros_like(step), where=step > 0)
    top = float(levels(bits))
    shift = lo - 0.5 * step
    if _needs_float64(lo, hi, step):
        u = torch.sub(x2d.double(), torch.from_numpy(shift).unsqueeze(1))
        u.mul_(torch.from_numpy(inv).unsqueeze(1))
    elif x2d.shape[0] == 1:
        u = torch.sub(x2d, float(shift[0])).mul_(float(inv[0]))
    else:
        shift_t = torch.from_numpy(shift.astype(np.float32)).unsqueeze(1)
        scale = torch.from_numpy(inv.astype(np.float32)).unsqueeze(1)
        u = torch.sub(x2d, shift_t).mul_(scale)
    return u.clamp_(0.0, top)


def squared_error(x2d: torch.Tensor, lo: np.ndarray, hi: np.ndarray, bits: int) -> np.ndarray:
    """Sum of squared errors of each group of `dequantize(quantize(x2d))`, value for value the
    same arithmetic, without the index tensor: the cost of scoring a candidate range exactly."""
    step = _steps(lo, hi, bits)
    if _needs_float64(lo, hi, step):
        err = dequantize(quantize(x2d, lo, hi, bits), lo, hi, bits).sub_(x2d)
    elif x2d.shape[0] == 1:
        err = _positions(x2d, lo, hi, bits).floor_().mul_(float(step[0])).add_(float(lo[0]))
        err = err.sub_(x2d).reshape(-1)
        return np.array([torch.dot(err, err).item()])
    else:
        step_t = torch.from_numpy(step.astype(np.float32)).unsqueeze(1)
        lo_t = torch.from_numpy(lo.astype(np.float32)).unsqueeze(1)
        err = _positions(x2d, lo, hi, bits).floor_().mul_(step_t).add_(lo_t).sub_(x2d)
    return err.square_().sum(dim=1).double().numpy()


def dequantize(q2d: torch.Tensor, lo: np.ndarray, hi: np.ndarray, bits: int) -> torch.Tensor:
    """Float32 values of grid indices: lo + index * step, per group."""
    step = _steps(lo, hi, bits)
    if _needs_float64(lo, hi, step):
        out = q2d.to(torch.float64).mul_(torch.from_numpy(step).unsqueeze(1))
        return out.add_(torch.from_numpy(lo.astype(np.float64)).unsqueeze(1)).float()
    out = q2d.to(torch.float32)
    if q2d.shape[0] == 1:
        return out.mul_(float(step[0])).add_(float(lo[0]))
    step_t = torch.from_numpy(step.astype(np.float32)).unsqueeze(1)
    lo_t = torch.from_numpy(lo.astype(np.float32)).unsqueeze(1)
    return out.mul_(step_t).add_(lo_t)
