"""Bit packing of grid indices into bit-planes.

A `bits`-bit payload is `bits` planes; plane k holds bit k of every index, eight indices a byte
(index i in bit i % 8 of byte i // 8). Each plane costs ceil(n / 8) bytes, so any bitwidth costs
at most one byte per plane over n * bits / 8: a 3-bit tensor takes 3 bits a value, not 4.
Byte-aligned widths (8 and 16) are stored as plain little-endian integers, the same size.

Both directions work on 64-bit words of eight indices, so a plane costs a few operations per
eight values: a multiply gathers one bit of each of eight bytes into one byte, and a 256-entry
table spreads a byte back out into eight.
"""

from __future__ import annotations

import numpy as np
import torch

_LOW_BIT_OF_EACH_BYTE = np.uint64(0x0101010101010101)
_GATHER = np.uint64(0x0102040810204080)
_SPREAD = np.array(
    [sum(((b >> j) & 1) << (8 * j) for j in range(8)) for b in range(256)], dtype=np.uint64
)


def payload_size(numel: int, bits: int) -> int:
    """Exact payload bytes for `numel` indices of `bits` bits."""
    if bits % 8 == 0:
        return numel * bits // 8
    return bits * ((numel + 7) // 8)


def pack(q: torch.Tensor, bits: int) -> bytes:
    """Bytes of the index tensor `q` (uint8 for bits <= 8, int32 above), flattened."""
    flat = q.reshape(-1).numpy()
    if bits == 8:
        return flat.tobytes()
    if bits == 16:
        return flat.astype("<u2").tobytes()
    planes = [_planes_of_bytes(flat.astype(np.uint8), min(bits, 8))]
    if bits > 8:
        planes.append(_planes_of_bytes((flat >> 8).astype(np.uint8), bits - 8))
    return b"".join(planes)


def unpack(payload: memoryview, numel: int, bits: int) -> torch.Tensor:
    """Flat index tensor of `numel` indices (uint8 for bits <= 8, int32 above)."""
    if bits == 8:
        return torch.from_numpy(np.frombuffer(payload, dtype=np.uint8, count=numel).copy())
    if bits == 16:
        return torch.from_numpy(np.frombuffer(payload, dtype="<u2", count=numel).astype(np.int32))
    plane_bytes = (numel + 7) // 8
    planes = np.frombuffer(payload, dtype=np.uint8, count=bits * plane_bytes)
    planes = planes.reshape(bits, plane_bytes)
    low = _bytes_of_planes(planes[:8], numel)
    if bits < 8:
        return torch.from_numpy(low)
    high = _bytes_of_planes(planes[8:], numel)
    return torch.from_numpy(low.astype(np.int32) | (high.astype(np.int32) << 8))


def _planes_of_bytes(values: np.ndarray, planes: int) -> bytes:
    """Bit-planes 0..planes-1 of a uint8 array, each ceil(n / 8) bytes."""
    pad = -len(values) % 8
    words = np.concatenate([values, np.zeros(pad, np.uint8)]) if pad else values
    words = np.ascontiguousarray(words).view("<u8")
    out = np.empty((planes, len(words)), dtype=np.uint8)
    for k in range(planes):
        bit_k = (words >> np.uint64(k)) & _LOW_BIT_OF_EACH_BYTE
        out[k] = (bit_k * _GATHER) >> np.uint64(56)
    return out.tobytes()


def _bytes_of_planes(planes: np.ndarray, numel: int) -> np.ndarray:
    """uint8 values whose bit k comes from plane k (inverse of `_planes_of_bytes`)."""
    words = np.zeros(planes.shape[1], dtype="<u8")
    for k in range(planes.shape[0]):
        words |= _SPREAD[planes[k]] << np.uint64(k)
    return words.view(np.uint8)[:numel]
