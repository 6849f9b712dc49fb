"""Orthogonal rotations of the last dimension, applied before clipping and undone after decoding.

Pretrained transformers carry a few outlier channels that stretch any shared clip range. A
random-sign Walsh-Hadamard rotation (as in QuIP#, QuaRot) spreads each channel over a block of
channels, so one range fits all of them; being orthonormal, it changes no squared error, so a
clip range that lowers the error of the rotated tensor lowers the original's by as much.

The last dimension `n` is cut into blocks of `b`, the largest power of two dividing it (384 ->
3 blocks of 128); each block is rotated by `H_b D`, with `H_b` the normalised Hadamard matrix and
`D` random signs. `H_b` is applied as a mixed-radix fast transform: `H_b` is the Kronecker
product of Hadamard matrices of at most 16 points, each applied along its own axis as a small
matrix product, so the cost is O(n * 16 * log16 b), not the O(n * b) of a dense product.

The signs come from a seed by SplitMix64 (defined here, not by any library's random stream), so
a seed in a packet means the same rotation on every machine and every version.

Every sum of the transform adds at most `b` values, so values whose magnitude times `b` stays
below 2**127 rotate either way without overflowing float32 (`fits_rotation`); the codec sends
larger tensors unrotated.
"""

from __future__ import annotations

import math
from functools import cache, lru_cache

import numpy as np
import torch

MAX_RADIX = 16
ROTATION_LIMIT = 2.0**127


def block_size(n: int) -> int:
    """Length of the rotated blocks of a last dimension of `n`: its largest power-of-two divisor."""
    return n & -n if n > 0 else 1


def fits_rotation(reach: float, n: int) -> bool:
    """Whether values up to `reach` in magnitude, along a last dimension of `n`, can be rotated
    and rotated back in float32 with every intermediate sum finite (False for NaN)."""
    return bool(reach * block_size(n) < ROTATION_LIMIT)


@cache
def _hadamard(points: int) -> torch.Tensor:
    """Unnormalised Sylvester-Hadamard matrix of `points` (a power of two) points."""
    h = torch.ones(1, 1)
    while h.shape[0] < points:
        h = torch.cat([torch.cat([h, h], 1), torch.cat([h, -h], 1)], 0)
    return h


@cache
def _factors(b: int) -> tuple[list[torch.Tensor], torch.Tensor]:
    """`H_b` as Kronecker factors of at most MAX_RADIX points: the unnormalised ones applied
    along middle axes, and the last one with the whole normalisation `1 / sqrt(b)` folded in."""
    radices = []
    rest = b
    while rest > 1:
        radices.append(min(rest, MAX_RADIX))
        rest //= radices[-1]
    *outer, last = radices
    return [_hadamard(r) for r in outer], _hadamard(last) / math.sqrt(b)


@lru_cache(maxsize=64)
def signs(n: int, seed: int) -> torch.Tensor:
    """`n` float32 signs (+1 or -1), a fixed function of `seed` (SplitMix64 of seed + index).
    Kept for the shapes and seeds a link sends again every microbatch; never written to."""
    with np.errstate(over="ignore"):
        z = (np.uint64(seed) + np.arange(1, n + 1, dtype=np.uint64)
             * np.uint64(0x9E3779B97F4A7C15))
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z = z ^ (z >> np.uint64(31))
    return torch.from_numpy(np.where(z >> np.uint64(63), -1.0, 1.0).astype(np.float32))


def _walsh_hadamard(x: torch.Tensor) -> torch.Tensor:
    """Normalised Hadamard transform of each block of the last dimension of a float32 tensor."""
    n = x.shape[-1]
    b = block_size(n)
    if b == 1 or x.numel() == 0:
        return x.clone()  # callers may write into the result
    outer, last = _factors(b)
    y = x.reshape(-1, b)
    tail = b
    for factor in outer:  # along a middle axis: a batch of (radix x radix) @ (radix x tail)
        tail //= factor.shape[0]
        y = torch.matmul(factor, y.reshape(-1, factor.shape[0], tail))
    # along the last axis (H is symmetric)
    return torch.matmul(y.reshape(-1, last.shape[0]), last).reshape(x.shape)


def rotate(x: torch.Tensor, seed: int, zeroed: torch.Tensor | None = None) -> torch.Tensor:
    """`x` (float32) rotated along its last dimension: H (D x). The channels `zeroed` (indices
    of the last dimension) count as zeros: their signs are zero, which costs no extra pass."""
    if x.dim() == 0 or x.numel() == 0:  # nothing to rotate: no signs for a huge empty dimension
        return x.clone()
    d = signs(x.shape[-1], seed)
    if zeroed is not None and zeroed.numel():
        d = d.clone()
        d[zeroed] = 0.0
    return _walsh_hadamard(x * d)


def unrotate(y: torch.Tensor, seed: int) -> torch.Tensor:
    """Inverse of `rotate`: D (H y), since H is symmetric and orthonormal and D its own inverse."""
    if y.dim() == 0 or y.numel() == 0:
        return y.clone()
    return _walsh_hadamard(y).mul_(signs(y.shape[-1], seed))
