"""Grid indices as whole symbols in bytes, the layout a byte-wise entropy coder reads well.

Bit-planes (`packing.py`) spread one index over `bits` bytes, so a byte's statistics are no
longer those of the indices. Here a byte holds whole indices: 8, 4 or 2 of them at 1, 2 or 4
bits (index i in bits ``(i % k) * bits`` of byte ``i // k``), 2 at 3 bits (6 of the 8 bits
used: Zstandard shortened MiniLM's and the digits ViT's 3-bit indices more so than packed
three to three bytes), one at 5 to 8 bits, and two bytes (little-endian) at 9 to 16 bits.

Both directions work on whole words of a few indices (shifts and masks over the array, a
256-entry table for 2 bits), not one pass per index position.
"""

from __future__ import annotations

import numpy as np
import torch


def per_byte(bits: int) -> int:
    """Indices a byte holds (none share bytes above 8 bits)."""
    return {1: 8, 2: 4, 3: 2, 4: 2}.get(bits, 1)


def can_exceed_grid(bits: int) -> bool:
    """Whether bytes of this layout can hold an index above a `bits`-bit grid's top (one index
    a byte at 5 to 7 bits, two bytes at 9 to 15): decoders must check what they read."""
    return per_byte(bits) == 1 and bits not in (8, 16)


def byte_size(numel: int, bits: int) -> int:
    """Bytes of `numel` indices of `bits` bits in this layout."""
    if bits > 8:
        return 2 * numel
    k = per_byte(bits)
    return (numel + k - 1) // k


def to_bytes(q: torch.Tensor, bits: int) -> np.ndarray:
    """The indices `q` (uint8 up to 8 bits, int32 above), flattened, in this layout: a
    contiguous uint8 array, which coders read as a buffer (no copy into `bytes`)."""
    flat = q.reshape(-1).numpy()
    if bits > 8:
        return flat.astype("<u2").view(np.uint8)
    k = per_byte(bits)
    if k == 1:
        return np.ascontiguousarray(flat)
    pad = -len(flat) % k
    words = np.concatenate([flat, np.zeros(pad, np.uint8)]) if pad else np.ascontiguousarray(flat)
    if k == 8:
        return np.packbits(words, bitorder="little")
    if k == 4:  # four bytes -> one: byte j's index moves to bits 2j
        w = words.view("<u4")
        folded = _shifted_right_or(_shifted_right_or(w, 6), 12)
    else:  # two bytes -> one: the second at bits `bits`
        folded = _shifted_right_or(words.view("<u2"), 8 - bits)
    return folded.astype(np.uint8)


def from_bytes(data: bytes | memoryview, numel: int, bits: int) -> torch.Tensor:
    """Flat index tensor of `numel` indices (uint8 up to 8 bits, int32 above)."""
    if bits > 8:
        return torch.from_numpy(np.frombuffer(data, dtype="<u2", count=numel).astype(np.int32))
    raw = np.frombuffer(data, dtype=np.uint8, count=byte_size(numel, bits))
    k = per_byte(bits)
    if k == 1:
        return torch.from_numpy(raw.copy())
    if k == 8:
        out = np.unpackbits(raw, bitorder="little")
    elif k == 4:  # a byte's four indices -> four bytes: bits 4-7 to the upper half, then 2-3
        w = raw.astype("<u4")
        _or_shifted_and_mask(w, 12, 0x000F000F)
        _or_shifted_and_mask(w, 6, 0x03030303)
        out = w.view(np.uint8)
    else:
        w = raw.astype("<u2")
        _or_shifted_and_mask(w, 8 - bits, ((1 << bits) - 1) * 0x0101)
        out = w.view(np.uint8)
    return torch.from_numpy(out[:numel])  # a fresh array: no copy


def _shifted_right_or(w: np.ndarray, shift: int) -> np.ndarray:
    """``w | w >> shift`` with one new array."""
    out = np.right_shift(w, w.dtype.type(shift))
    out |= w
    return out


def _or_shifted_and_mask(w: np.ndarray, shift: int, mask: int) -> None:
    """``w = (w | w << shift) & mask`` in place, with one temporary."""
    shifted = np.left_shift(w, w.dtype.type(shift))
    w |= shifted
    w &= w.dtype.type(mask)
