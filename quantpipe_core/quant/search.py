"""Searches over clip ranges, per group, on an error model with `mse(lo, hi)`.

`directed_search` is the DS of DS-ACIQ: from a start range it tries moving each end (and both
ends together, outwards and inwards) by a step, takes the move that lowers the error most and
lengthens the step by half, or halves the step when no move helps. `grid_search` scores every
range of a grid: the exhaustive peer DS-ACIQ is measured against.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np

DS_MAX_STEPS = 12
DS_FIRST_STEP = 0.125
DS_MIN_STEP = 1.0 / 128
GRID_POINTS = 48


class ErrorModel(Protocol):
    def mse(self, lo: np.ndarray, hi: np.ndarray) -> np.ndarray: ...


# Moves tried at each step, as (lower end, upper end) multiples of the step.
_MOVES = np.array([(-1, 0), (1, 0), (0, -1), (0, 1), (-1, 1), (1, -1)], dtype=np.float64)


def directed_search(
    error: ErrorModel,
    lo: np.ndarray,
    hi: np.ndarray,
    floor: np.ndarray,
    ceiling: np.ndarray,
    *,
    max_steps: int = DS_MAX_STEPS,
) -> tuple[np.ndarray, np.ndarray]:
    """Improve each group's range [lo, hi] inside [floor, ceiling]; never returns a worse one.

    Steps start at DS_FIRST_STEP of the start range's width, grow by half after a move that
    lowers the error (so a start far from the best range is left quickly) and halve after a
    round with none, down to DS_MIN_STEP of it; at most `max_steps` rounds are scored.
    """
    lo, hi = lo.astype(np.float64).copy(), hi.astype(np.float64).copy()
    best = error.mse(lo[None], hi[None])[0]
    width = np.maximum(hi - lo, (ceiling - floor) * 1e-6)
    step = DS_FIRST_STEP * width
    for _ in range(max_steps):
        active = step >= DS_MIN_STEP * width
        if not active.any():
            break
        cand_lo = np.minimum(np.maximum(lo + _MOVES[:, :1] * step, floor), ceiling)
        cand_hi = np.minimum(np.maximum(hi + _MOVES[:, 1:] * step, cand_lo), ceiling)
        scores = error.mse(cand_lo, cand_hi)
        pick = scores.argmin(axis=0)
        groups = np.arange(lo.shape[0])
        better = active & (scores[pick, groups] < best)
        lo = np.where(better, cand_lo[pick, groups], lo)
        hi = np.where(better, cand_hi[pick, groups], hi)
        best = np.where(better, scores[pick, groups], best)
        step = np.where(better, step * 1.5, np.where(active, step / 2, step))
    return lo, hi


def grid_search(
    error: ErrorModel,
    floor: np.ndarray,
    centre: np.ndarray,
    ceiling: np.ndarray,
    *,
    points: int = GRID_POINTS,
) -> tuple[np.ndarray, np.ndarray]:
    """Best range of each group among `points` x `points` pairs of ends.

    Lower ends lie between `centre` and `floor`, upper ends between `centre` and `ceiling`, at
    fractions (k / points)**2 of the way out: dense near the centre, where heavy-tailed tensors
    put their best ends, and reaching the data's own extremes.
    """
    frac = (np.arange(1, points + 1) / points)[:, None] ** 2
    lo_axis = centre - frac * (centre - floor)
    hi_axis = centre + frac * (ceiling - centre)
    cand_lo = np.repeat(lo_axis, points, axis=0)
    cand_hi = np.tile(hi_axis, (points, 1))
    scores = error.mse(cand_lo, cand_hi)
    pick = scores.argmin(axis=0)
    groups = np.arange(floor.shape[0])
    return cand_lo[pick, groups], cand_hi[pick, groups]
