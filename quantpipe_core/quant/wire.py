"""The packet that crosses a link: fixed header, clip ranges, bit-packed payload, CRC32.

Layout, little-endian:

    offset  size        field
    0       4           magic b"QPAQ"
    4       1           format version (1)
    5       1           dtype of the tensor to rebuild: 0 float32, 1 float16, 2 bfloat16, 3 float64
    6       1           bits: 1..16, or 32 for float32 values sent as they are
    7       1           granularity: 0 one range for the tensor, 1 one range per token
    8       1           ndim (0..8)
    9       4 * ndim    shape, uint32 each
    ...     8 * groups  clip ranges (lo, hi) as float32; none when bits is 32
    ...     payload     bit-planes of the grid indices (see `packing.py`), or raw float32
    end-4   4           CRC32 of every byte before it

Magic and version come first and the CRC last in every version, so a decoder can always tell a
foreign packet, a future one, and a damaged one apart. No pickle: every field is a fixed type.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Sequence

import numpy as np
import torch

from quantpipe_core.quant import grid, packing
from quantpipe_core.quant.clipping import (
    GRANULARITIES,
    as_groups,
    check_bits,
    check_granularity,
    clip_method,
    group_ranges,
    observe,
)

MAGIC = b"QPAQ"
VERSION = 1
MAX_NDIM = 8
_PREFIX = struct.Struct("<4sBBBBB")
_CRC = struct.Struct("<I")
_DTYPES = (torch.float32, torch.float16, torch.bfloat16, torch.float64)


class PacketError(ValueError):
    """Bytes that cannot be decoded into a tensor; the subclass says why."""


class ForeignPacket(PacketError):
    """Not a QuantPipe packet at all."""


class UnsupportedVersion(PacketError):
    """A QuantPipe packet from a newer format version than this decoder reads."""


class TruncatedPacket(PacketError):
    """Fewer bytes than the packet's header announces."""


class CorruptPacket(PacketError):
    """The bytes were changed on the way: the checksum or the layout does not hold."""


def group_count(shape: Sequence[int], granularity: str) -> int:
    """Number of clip ranges a packet carries: one per tensor, or one per token."""
    if granularity == "tensor":
        return 1
    numel = int(np.prod(shape, dtype=np.int64))
    return numel // shape[-1] if numel else 0


def wire_size(shape: Sequence[int], bits: int, *, granularity: str = "tensor") -> int:
    """Exact length in bytes of what `encode` returns for a tensor of `shape`."""
    bits = check_bits(bits, allow_float=True)
    shape = _check_shape(shape)
    check_granularity(granularity)
    if granularity == "token" and not shape:
        raise ValueError("granularity 'token' needs a tensor with at least one dimension")
    numel = int(np.prod(shape, dtype=np.int64))
    if bits == grid.FLOAT_BITS:
        body = 4 * numel
    else:
        body = 8 * group_count(shape, granularity) + packing.payload_size(numel, bits)
    return _PREFIX.size + 4 * len(shape) + body + _CRC.size


def encode(
    x: torch.Tensor,
    bits: int,
    method: str = "ds-aciq",
    *,
    granularity: str = "tensor",
    dist: str = "auto",
    pct: float = 99.99,
) -> bytes:
    """Quantize `x` to `bits` bits with clip ranges from `method` and pack it for the wire.

    `bits` 32 sends float32 values as they are. Values outside a clip range saturate to its
    ends. `dist` and `pct` are passed to the clipping method (see `clip_range`).
    """
    bits = check_bits(bits, allow_float=True)
    chosen = clip_method(method, dist=dist, pct=pct)
    x2d = as_groups(x, granularity)
    shape = _check_shape(tuple(x.shape))
    if x.dtype not in _DTYPES:
        raise ValueError(f"unsupported dtype {x.dtype}; use one of {_DTYPES}")
    channels = shape[-1] if shape else 1
    prefix = _PREFIX.pack(
        MAGIC, VERSION, _DTYPES.index(x.dtype), bits, GRANULARITIES.index(granularity), len(shape)
    ) + struct.pack(f"<{len(shape)}I", *shape)
    stats = observe(x2d, channels)
    if bits == grid.FLOAT_BITS:
        body = x2d.numpy().tobytes()
    else:
        lo, hi = group_ranges(stats, bits, chosen)
        ranges = np.stack([lo, hi], axis=1).astype("<f4").tobytes()
        body = ranges + packing.pack(stats.quantize(lo, hi, bits), bits)
    packet = prefix + body
    return packet + _CRC.pack(zlib.crc32(packet))


def decode(data: bytes | bytearray | memoryview) -> torch.Tensor:
    """Rebuild the tensor of an `encode` packet; damaged or foreign bytes raise a PacketError."""
    view = memoryview(data).cast("B")
    n = len(view)
    if bytes(view[:4]) != MAGIC[: min(n, 4)]:
        raise ForeignPacket(
            f"not a QuantPipe packet: starts with {bytes(view[:4])!r}, not {MAGIC!r}"
        )
    if n < _PREFIX.size + _CRC.size:
        raise TruncatedPacket(
            f"truncated packet: {n} bytes, a header alone takes {_PREFIX.size + 4}"
        )
    (stored_crc,) = _CRC.unpack_from(view, n - _CRC.size)
    if zlib.crc32(view[: n - _CRC.size]) != stored_crc:
        expected = _announced_size(view)
        if expected is not None and n < expected:
            raise TruncatedPacket(f"truncated packet: {n} bytes, its header announces {expected}")
        raise CorruptPacket(f"corrupt packet: CRC32 mismatch over {n} bytes")
    _, version, dtype_code, bits, gran_code, ndim = _PREFIX.unpack_from(view, 0)
    if version > VERSION:
        raise UnsupportedVersion(
            f"packet format version {version} is newer than this decoder's ({VERSION}); "
            "upgrade quantpipe"
        )
    layout = _parse_layout(view, version, dtype_code, bits, gran_code, ndim)
    if layout is None:
        raise CorruptPacket("corrupt packet: the checksum holds but the header fields are invalid")
    dtype, shape, granularity, offset = layout
    if n != wire_size(shape, bits, granularity=granularity):
        raise CorruptPacket(
            f"corrupt packet: {n} bytes where shape {shape} at {bits} bits takes "
            f"{wire_size(shape, bits, granularity=granularity)}"
        )
    numel = int(np.prod(shape, dtype=np.int64))
    if bits == grid.FLOAT_BITS:
        values = torch.from_numpy(
            np.frombuffer(view, dtype="<f4", count=numel, offset=offset).copy()
        )
        return values.reshape(shape).to(dtype)
    groups = group_count(shape, granularity)
    ranges = np.frombuffer(view, dtype="<f4", count=2 * groups, offset=offset).reshape(groups, 2)
    lo, hi = ranges[:, 0].astype(np.float32), ranges[:, 1].astype(np.float32)
    payload = view[offset + 8 * groups : n - _CRC.size]
    q = packing.unpack(payload, numel, bits).reshape(groups, -1 if groups else 0)
    return grid.dequantize(q, lo, hi, bits).reshape(shape).to(dtype)


def _check_shape(shape: Sequence[int]) -> tuple[int, ...]:
    dims = tuple(shape)
    if len(dims) > MAX_NDIM:
        raise ValueError(f"tensors of at most {MAX_NDIM} dimensions can be sent, got {len(dims)}")
    if not all(isinstance(d, int | np.integer) and 0 <= d < 2**32 for d in dims):
        raise ValueError(f"shape must be non-negative integers below 2**32, got {shape!r}")
    return tuple(int(d) for d in dims)


def _parse_layout(
    view: memoryview, version: int, dtype_code: int, bits: int, gran_code: int, ndim: int
) -> tuple[torch.dtype, tuple[int, ...], str, int] | None:
    """(dtype, shape, granularity, offset of the ranges) from a header, or None if invalid."""
    valid = (
        version == VERSION
        and dtype_code < len(_DTYPES)
        and (grid.MIN_BITS <= bits <= grid.MAX_BITS or bits == grid.FLOAT_BITS)
        and gran_code < len(GRANULARITIES)
        and ndim <= MAX_NDIM
        and len(view) >= _PREFIX.size + 4 * ndim + _CRC.size
    )
    if not valid:
        return None
    shape = struct.unpack_from(f"<{ndim}I", view, _PREFIX.size)
    if GRANULARITIES[gran_code] == "token" and ndim == 0:
        return None
    return _DTYPES[dtype_code], shape, GRANULARITIES[gran_code], _PREFIX.size + 4 * ndim


def _announced_size(view: memoryview) -> int | None:
    """The size a (possibly damaged) header announces, if its fields make sense."""
    _, version, dtype_code, bits, gran_code, ndim = _PREFIX.unpack_from(view, 0)
    layout = _parse_layout(view, version, dtype_code, bits, gran_code, ndim)
    if layout is None:
        return None
    return wire_size(layout[1], bits, granularity=layout[2])
