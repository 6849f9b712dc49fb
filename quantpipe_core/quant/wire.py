"""The packet that crosses a link: header, options, clip ranges, bit-packed payload, CRC32.

Layout of format version 2, little-endian:

    offset  size        field
    0       4           magic b"QPAQ"
    4       1           format version (2)
    5       1           dtype of the tensor to rebuild: 0 float32, 1 float16, 2 bfloat16, 3 float64
    6       1           bits: 1..16, or 32 for float32 values sent as they are
    7       1           clip ranges: 0 one for the tensor, 1 one per token
    8       1           ndim (0..8)
    9       1           transform: 0 none, 1 Hadamard rotation of the last dimension
    10      4           seed of the rotation's signs (uint32)
    14      4           k, outlier channels sent apart (uint32)
    18      4 * ndim    shape, uint32 each
    ...     4 * k       the outlier channels' indices, increasing (uint32)
    ...     8 * groups  clip ranges (lo, hi) as float32, of the rotated tensor if rotated
    ...     8           the outlier channels' range (lo, hi), if k > 0
    ...     payload     bit-planes of the grid indices (see `packing.py`), or raw float32; the
                        outlier channels are zeros there
    ...     payload     the outlier channels' values, 16-bit indices on their own min-max grid
    end-4   4           CRC32 of every byte before it

Version 3 is version 2 with one more header byte, 18: the lossless coder of the payload (1
zstd, `lossless.py`); its payload is the coded grid indices, as long as the packet's length says.
`encode` writes it only where it is shorter than the version-2 packet of the same tensor, so
`wire_size` (the version-2 size) stays the exact worst case; without a coder it writes version 2.
Version 1 (still decoded) is version 2 without bytes 9..17 and without outliers. At 32 bits the
options are recorded as none. Magic and version come first and the CRC last in every version,
so a decoder can always tell a foreign packet, a future one and a damaged one apart. No pickle:
every field is a fixed type.
"""

from __future__ import annotations

import math
import struct
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np
import torch

from quantpipe_core.names import FLOAT_BITS, LOSSLESS, TRANSFORMS, check_bits, is_bits
from quantpipe_core.quant import grid, lossless, packing
from quantpipe_core.quant.clipping import (
    RANGE_GROUPS,
    as_groups,
    clip_method,
    group_ranges,
    observe,
)
from quantpipe_core.quant.observe import GroupStats
from quantpipe_core.quant.scheme import (
    OUTLIER_BITS,
    Codec,
    max_outliers,
    outlier_count,
    resolve_granularity,
)
from quantpipe_core.quant.transform import fits_rotation, rotate, unrotate

MAGIC = b"QPAQ"
VERSION = 3  # the newest this decoder reads
PLANES_VERSION = 2  # what `encode` writes for bit-planes
CODED_VERSION = 3  # what it writes for a coded payload
MAX_NDIM = 8
TENSOR_LIMIT = 2**63
_PREFIX_V1 = struct.Struct("<4sBBBBB")
_PREFIX = struct.Struct("<4sBBBBBBII")
_PREFIX_V3 = struct.Struct("<4sBBBBBBIIB")
_CRC = struct.Struct("<I")
_DTYPES = (torch.float32, torch.float16, torch.bfloat16, torch.float64)


class PacketError(ValueError):
    """Bytes that cannot be decoded into a tensor; the subclass says why."""


class ForeignPacket(PacketError):
    """Not a QuantPipe packet at all."""


class UnsupportedVersion(PacketError):
    """A QuantPipe packet (or carry frame) of a format version this decoder does not read."""


class TruncatedPacket(PacketError):
    """Fewer bytes than the packet's header announces."""


class CorruptPacket(PacketError):
    """The bytes were changed on the way: the checksum or the layout does not hold."""


@dataclass(frozen=True)
class Layout:
    """What a packet's header says: everything its size and its decoding depend on."""

    version: int
    dtype: torch.dtype
    bits: int
    granularity: str  # "tensor" or "token", resolved
    shape: tuple[int, ...]
    transform: str
    seed: int
    outliers: int
    lossless: str = "none"  # the coder asked for; version 3 packets record it

    @property
    def numel(self) -> int:
        return math.prod(self.shape)

    @property
    def rows(self) -> int:
        """Vectors along the last dimension."""
        return self.numel // self.shape[-1] if self.shape and self.numel else int(self.numel > 0)

    @property
    def channels(self) -> int:
        """Length of the last dimension (1 for a scalar)."""
        return self.shape[-1] if self.shape else 1

    @property
    def groups(self) -> int:
        return self.rows if self.granularity == "token" else 1

    @property
    def header_size(self) -> int:
        prefix = {1: _PREFIX_V1, 2: _PREFIX, 3: _PREFIX_V3}[self.version].size
        return prefix + 4 * len(self.shape) + 4 * self.outliers

    @property
    def planes_size(self) -> int:
        """Bytes of the grid indices as bit-planes (of the float32 values at 32 bits)."""
        if self.bits == FLOAT_BITS:
            return 4 * self.numel
        return packing.payload_size(self.numel, self.bits)

    @property
    def fixed_size(self) -> int:
        """Bytes of everything but the grid indices' payload."""
        if self.bits == FLOAT_BITS:
            return self.header_size + _CRC.size
        body = 8 * self.groups
        if self.outliers:
            body += 8 + packing.payload_size(self.rows * self.outliers, OUTLIER_BITS)
        return self.header_size + body + _CRC.size

    @property
    def size(self) -> int:
        """The packet's bytes with its indices as bit-planes: exact for versions 1 and 2."""
        return self.fixed_size + self.planes_size

    @property
    def planes_layout(self) -> Layout:
        """The version-2 layout of the same tensor: a coded packet must be shorter."""
        return replace(self, version=PLANES_VERSION)


def _layout(shape: Sequence[int], bits: int, codec: Codec, dtype: torch.dtype) -> Layout:
    shape = _check_shape(shape)
    granularity = resolve_granularity(shape, bits, codec.granularity)
    if granularity == "token" and not shape:
        raise ValueError("granularity 'token' needs a tensor with at least one dimension")
    if bits == FLOAT_BITS:
        return Layout(PLANES_VERSION, dtype, bits, "tensor", shape, "none", 0, 0)
    return Layout(PLANES_VERSION, dtype, bits, granularity, shape, codec.transform, codec.seed,
                  outlier_count(shape, bits, codec), codec.lossless)


def wire_size(shape: Sequence[int], bits: int, **options: object) -> int:
    """Exact length in bytes of what `encode` returns for a tensor of `shape` with `options`
    (those of `encode`; the defaults are `scheme.DEFAULT`'s); with a `lossless` coder, the
    exact worst case (`encode` codes the payload only where that makes the packet shorter)."""
    bits = check_bits(bits, allow_float=True)
    return _layout(shape, bits, Codec(**options), torch.float32).size


def encode(x: torch.Tensor, bits: int, method: str = "ds-aciq", **options: object) -> bytes:
    """Quantize `x` to `bits` bits and pack it for the wire.

    `options` are `Codec`'s fields: `transform`, `granularity`, `outliers`, `seed`, `lossless`,
    `dist`, `pct`; any left out take the defaults (`scheme.DEFAULT`). `bits` 32 sends float32
    values as they are. Values outside a clip range saturate to its ends.
    """
    bits = check_bits(bits, allow_float=True)
    codec = Codec(method=method, **options)
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"expected a torch.Tensor, got {type(x).__name__}")
    if not x.is_floating_point():
        raise ValueError(f"expected a floating-point tensor, got dtype {x.dtype}")
    if x.dtype not in _DTYPES:
        raise ValueError(f"unsupported dtype {x.dtype}; use one of {_DTYPES}")
    layout = _layout(tuple(x.shape), bits, codec, x.dtype)
    x32 = as_groups(x, "tensor").reshape(layout.rows, layout.channels)
    if bits == FLOAT_BITS:
        observe(x32.reshape(1, -1), 1)  # refuses NaN and Inf, as every bitwidth does
        return _sealed([_header(layout), x32.numpy().tobytes()])
    channels = apart_range = apart_payload = b""
    indices = None
    if layout.outliers:
        indices = _outlier_channels(x32, layout.outliers)
        apart_stats = observe(x32[:, indices].reshape(1, -1), layout.outliers)
        lo, hi = grid.as_float32_range(apart_stats.min, apart_stats.max)
        channels = indices.numpy().astype("<u4").tobytes()
        apart_range = np.stack([lo, hi], axis=1).astype("<f4").tobytes()
        apart_payload = packing.pack(apart_stats.quantize(lo, hi, OUTLIER_BITS), OUTLIER_BITS)
    layout, stats = _grid_stats(x32, layout, indices)
    lo, hi = group_ranges(stats, bits, clip_method(codec.method, dist=codec.dist, pct=codec.pct))
    layout, payload = _payload(stats.quantize(lo, hi, bits), layout)
    return _sealed([_header(layout), channels, np.stack([lo, hi], axis=1).astype("<f4").tobytes(),
                    apart_range, payload, apart_payload])


def _payload(q: torch.Tensor, layout: Layout) -> tuple[Layout, bytes]:
    """The indices' payload and the layout that says how it is written: coded (version 3) where
    the layout asks for a coder and the packet comes out shorter than with bit-planes."""
    if layout.lossless != "none":
        coded = lossless.coder(layout.lossless).encode(q, layout.bits)
        coded_layout = replace(layout, version=CODED_VERSION)
        if coded_layout.fixed_size + len(coded) < layout.size:
            return coded_layout, coded
    return replace(layout, version=PLANES_VERSION), packing.pack(q, layout.bits)


def _header(layout: Layout) -> bytes:
    """The header fields of `layout` (version 2 or 3), shape included."""
    fields = (MAGIC, layout.version, _DTYPES.index(layout.dtype), layout.bits,
              RANGE_GROUPS.index(layout.granularity), len(layout.shape),
              TRANSFORMS.index(layout.transform), layout.seed, layout.outliers)
    if layout.version == CODED_VERSION:
        prefix = _PREFIX_V3.pack(*fields, LOSSLESS.index(layout.lossless))
    else:
        prefix = _PREFIX.pack(*fields)
    return prefix + struct.pack(f"<{len(layout.shape)}I", *layout.shape)


def _sealed(parts: list[bytes]) -> bytes:
    """The packet: its parts, then the CRC32 of them all."""
    packet = b"".join(parts)
    return packet + _CRC.pack(zlib.crc32(packet))


def _grid_stats(x32: torch.Tensor, layout: Layout,
                outliers: torch.Tensor | None) -> tuple[Layout, GroupStats]:
    """Statistics of the `(rows, channels)` tensor the grid is laid on, the `outliers` channels
    zeroed, and the layout that says which: rotated if the layout asks for it and its values fit
    the rotation both ways (`fits_rotation`; values near float32's limit do not), else as it
    is."""
    if layout.transform == "hadamard":
        rotated = as_groups(rotate(x32, layout.seed, outliers), layout.granularity)
        stats = GroupStats(rotated, layout.channels)
        if not rotated.numel() or fits_rotation(_reach(stats.min, stats.max), layout.channels):
            return layout, stats
        layout = replace(layout, transform="none")
    if outliers is not None:
        x32 = x32.clone()
        x32[:, outliers] = 0.0
    return layout, observe(as_groups(x32, layout.granularity), layout.channels)


def _reach(lo: np.ndarray, hi: np.ndarray) -> float:
    """The largest magnitude among range ends (NaN if one is NaN)."""
    return float(np.maximum(np.abs(lo), np.abs(hi)).max())


def _outlier_channels(x32: torch.Tensor, count: int) -> torch.Tensor:
    """Increasing indices of the `count` largest-magnitude channels of a `(rows, channels)`
    tensor (two reductions, no copy of the tensor)."""
    peak = torch.maximum(x32.amax(dim=0), x32.amin(dim=0).neg_())
    return torch.sort(torch.topk(peak, count).indices).values


def decode(data: bytes | bytearray | memoryview) -> torch.Tensor:
    """Rebuild the tensor of an `encode` packet; damaged or foreign bytes raise a PacketError."""
    view = memoryview(data).cast("B")
    n = len(view)
    if bytes(view[:4]) != MAGIC[: min(n, 4)]:
        raise ForeignPacket(
            f"not a QuantPipe packet: starts with {bytes(view[:4])!r}, not {MAGIC!r}"
        )
    if n < _PREFIX_V1.size + _CRC.size:
        raise TruncatedPacket(
            f"truncated packet: {n} bytes, a header alone takes {_PREFIX_V1.size + _CRC.size}"
        )
    version = view[4]
    if version > VERSION:
        raise UnsupportedVersion(
            f"packet format version {version} is newer than this decoder's ({VERSION}); "
            "upgrade quantpipe"
        )
    (stored_crc,) = _CRC.unpack_from(view, n - _CRC.size)
    if zlib.crc32(view[: n - _CRC.size]) != stored_crc:
        layout = _parse_layout(view)
        least = None if layout is None else (
            layout.fixed_size if layout.version == CODED_VERSION else layout.size)
        if least is not None and n < least:
            raise TruncatedPacket(f"truncated packet: {n} bytes, its header announces "
                                  f"{'at least ' * (least != layout.size)}{least}")
        raise CorruptPacket(f"corrupt packet: CRC32 mismatch over {n} bytes")
    layout = _parse_layout(view)
    if layout is None:
        raise CorruptPacket("corrupt packet: the checksum holds but the header fields are invalid")
    _check_length(n, layout)
    if layout.bits == FLOAT_BITS:
        return _decode_floats(view, layout)
    return _decode_grid(view, layout)


def _check_length(n: int, layout: Layout) -> None:
    """Refuse a packet whose length its layout cannot have: version 1 and 2 packets have one
    length; a coded one is shorter than its bit-planes would be, and holds its fixed parts."""
    if layout.version != CODED_VERSION and n != layout.size:
        raise CorruptPacket(
            f"corrupt packet: {n} bytes where shape {layout.shape} at {layout.bits} bits "
            f"takes {layout.size}"
        )
    planes = layout.planes_layout.size
    if layout.version == CODED_VERSION and not layout.fixed_size <= n < planes:
        raise CorruptPacket(
            f"corrupt packet: {n} bytes where a coded packet of shape {layout.shape} at "
            f"{layout.bits} bits takes at least {layout.fixed_size} and less than {planes}"
        )


def _decode_floats(view: memoryview, layout: Layout) -> torch.Tensor:
    """The tensor of a 32-bit packet; NaN or Inf cannot come from `encode`, so they are damage."""
    values = np.frombuffer(view, dtype="<f4", count=layout.numel, offset=layout.header_size)
    if not np.isfinite(values).all():
        raise CorruptPacket("corrupt packet: a float32 value is NaN or Inf")
    return _in_dtype(torch.from_numpy(values.copy()).reshape(layout.shape), layout.dtype)


def _decode_grid(view: memoryview, layout: Layout) -> torch.Tensor:
    """The tensor of a packet of grid indices (1 to 16 bits), outlier channels included."""
    offset = layout.header_size
    channels = np.frombuffer(view, dtype="<u4", count=layout.outliers,
                             offset=offset - 4 * layout.outliers).astype(np.int64)
    if np.any(np.diff(channels) <= 0) or np.any(channels >= layout.channels):
        raise CorruptPacket("corrupt packet: outlier channel indices out of order or range")
    ranges = np.frombuffer(view, dtype="<f4", count=2 * layout.groups + 2 * bool(layout.outliers),
                           offset=offset).reshape(-1, 2)
    _check_ranges(ranges, layout)
    offset += 8 * len(ranges)
    main_bytes = len(view) - layout.fixed_size
    try:
        q = lossless.coder(layout.lossless).decode(view[offset: offset + main_bytes],
                                                   layout.numel, layout.bits)
    except lossless.CodingError as error:
        raise CorruptPacket(f"corrupt packet: {error}") from None
    lo, hi = ranges[: layout.groups, 0].copy(), ranges[: layout.groups, 1].copy()
    per_group = layout.numel // layout.groups if layout.groups else 0
    y = grid.dequantize(q.reshape(layout.groups, per_group), lo, hi, layout.bits)
    y = y.reshape(layout.rows, layout.channels)
    if layout.transform == "hadamard":
        y = unrotate(y, layout.seed)
    if layout.outliers:
        count = layout.rows * layout.outliers
        end = len(view) - _CRC.size
        q_apart = packing.unpack(view[offset + main_bytes: end], count, OUTLIER_BITS)
        apart = grid.dequantize(q_apart.reshape(1, -1), ranges[-1:, 0].copy(),
                                ranges[-1:, 1].copy(), OUTLIER_BITS)
        y[:, torch.from_numpy(channels)] = apart.reshape(layout.rows, layout.outliers)
    return _in_dtype(y.reshape(layout.shape), layout.dtype)


def _check_ranges(ranges: np.ndarray, layout: Layout) -> None:
    """Refuse clip ranges `encode` cannot have written: NaN, Inf, reversed, or (rotated) so far
    out that undoing the rotation would overflow float32."""
    if not (np.isfinite(ranges).all() and (ranges[:, 0] <= ranges[:, 1]).all()):
        raise CorruptPacket("corrupt packet: a clip range is not finite or is reversed")
    rotated = ranges[: layout.groups]
    if layout.transform == "hadamard" and rotated.size and not fits_rotation(
        _reach(rotated[:, 0], rotated[:, 1]), layout.channels
    ):
        raise CorruptPacket("corrupt packet: a clip range is too wide to undo the rotation")


def _in_dtype(y: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """`y` (float32) in the packet's dtype; values beyond a narrower dtype's finite range
    saturate at its ends instead of turning into inf."""
    if dtype in (torch.float16, torch.bfloat16):
        top = torch.finfo(dtype).max
        y = y.clamp(-top, top)
    return y.to(dtype)


def _check_shape(shape: Sequence[int]) -> tuple[int, ...]:
    dims = tuple(shape)
    if len(dims) > MAX_NDIM:
        raise ValueError(f"tensors of at most {MAX_NDIM} dimensions can be sent, got {len(dims)}")
    if not all(isinstance(d, int | np.integer) and not isinstance(d, bool) and 0 <= d < 2**32
               for d in dims):
        raise ValueError(f"shape must be non-negative integers below 2**32, got {shape!r}")
    dims = tuple(int(d) for d in dims)
    if not _holdable(dims):
        raise ValueError(f"shape {dims} is too large for any tensor: its dimensions multiply "
                         "to 2**63 or more")
    return dims


def _holdable(shape: Sequence[int]) -> bool:
    """Whether torch can make a tensor of `shape`: the product of its dimensions (a zero counted
    as one, since torch computes strides from them) fits in int64."""
    return math.prod(max(d, 1) for d in shape) < TENSOR_LIMIT


def _parse_layout(view: memoryview) -> Layout | None:
    """The layout a (possibly damaged) header announces, or None if its fields make no sense."""
    version = view[4]
    if version == 1:
        _, _, dtype_code, bits, gran_code, ndim = _PREFIX_V1.unpack_from(view, 0)
        transform_code, seed, outliers, prefix, coder_code = 0, 0, 0, _PREFIX_V1.size, 0
    elif version == PLANES_VERSION and len(view) >= _PREFIX.size + _CRC.size:
        (_, _, dtype_code, bits, gran_code, ndim, transform_code, seed,
         outliers) = _PREFIX.unpack_from(view, 0)
        prefix, coder_code = _PREFIX.size, 0
    elif version == CODED_VERSION and len(view) >= _PREFIX_V3.size + _CRC.size:
        (_, _, dtype_code, bits, gran_code, ndim, transform_code, seed, outliers,
         coder_code) = _PREFIX_V3.unpack_from(view, 0)
        prefix = _PREFIX_V3.size
        if not 0 < coder_code < len(LOSSLESS) or bits == FLOAT_BITS:
            return None  # version 3 is written only for a payload a coder shortened
    else:
        return None
    valid = (
        dtype_code < len(_DTYPES)
        and is_bits(bits, allow_float=True)
        and gran_code < len(RANGE_GROUPS)
        and transform_code < len(TRANSFORMS)
        and ndim <= MAX_NDIM
        and len(view) >= prefix + 4 * ndim + _CRC.size
    )
    if not valid:
        return None
    shape = struct.unpack_from(f"<{ndim}I", view, prefix)
    if not _holdable(shape):
        return None
    layout = Layout(version, _DTYPES[dtype_code], bits, RANGE_GROUPS[gran_code], shape,
                    TRANSFORMS[transform_code], seed, outliers, LOSSLESS[coder_code])
    if layout.granularity == "token" and ndim == 0:
        return None
    if outliers > max_outliers(shape) or (
        version == PLANES_VERSION and bits == FLOAT_BITS
        and (outliers or transform_code or gran_code)
    ):
        return None
    return layout
