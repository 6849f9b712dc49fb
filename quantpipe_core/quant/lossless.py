"""Lossless coding of a packet's grid indices: how the indices become the payload's bytes.

One small class per coder behind one interface, `encode(q, bits) -> bytes` and
`decode(data, numel, bits) -> q`:

- `none`: bit-planes (`packing.py`), an exact size known before encoding;
- `zstd`: the indices as whole symbols in bytes (`symbols.py`), then a Zstandard frame.

A coded payload's size depends on the data. The codec sends it only when it is smaller than the
bit-planes (`wire.encode`), so the bit-planes' size stays the exact worst case.

Decoding never trusts the coded bytes for its sizes: the number of indices comes from the
packet's shape, and a stream that claims or produces anything else is refused before more than
that much memory is taken (no decompression bombs).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Protocol

import torch
import zstandard

from quantpipe_core.names import LOSSLESS, check_registry
from quantpipe_core.quant import packing, symbols

ZSTD_LEVEL = 1


class CodingError(ValueError):
    """Coded bytes that do not decode to exactly the indices the packet's shape announces."""


class Coder(Protocol):
    def encode(self, q: torch.Tensor, bits: int) -> bytes: ...

    def decode(self, data: memoryview, numel: int, bits: int) -> torch.Tensor: ...


class Planes:
    """Bit-planes, as version 2 packets carry them."""

    def encode(self, q: torch.Tensor, bits: int) -> bytes:
        return packing.pack(q, bits)

    def decode(self, data: memoryview, numel: int, bits: int) -> torch.Tensor:
        if len(data) != packing.payload_size(numel, bits):
            raise CodingError(f"{len(data)} payload bytes where {numel} indices of {bits} bits "
                              f"take {packing.payload_size(numel, bits)}")
        return packing.unpack(data, numel, bits)


class Zstd:
    """Whole symbols in bytes, then one Zstandard frame that records its content size.

    Byte-aligned symbols keep each byte's statistics those of the indices it holds, which the
    frame's Huffman-coded literals exploit; bit-planes would mix them (docs/quantization.md).
    """

    def __init__(self, level: int = ZSTD_LEVEL) -> None:
        self.compressor = zstandard.ZstdCompressor(level=level, write_content_size=True,
                                                   write_checksum=False)
        self.decompressor = zstandard.ZstdDecompressor()

    def encode(self, q: torch.Tensor, bits: int) -> bytes:
        return self.compressor.compress(symbols.to_bytes(q, bits))

    def decode(self, data: memoryview, numel: int, bits: int) -> torch.Tensor:
        expected = symbols.byte_size(numel, bits)
        try:
            claimed = zstandard.frame_content_size(data)
        except zstandard.ZstdError as error:
            raise CodingError(f"not a Zstandard frame: {error}") from None
        if claimed < 0:  # python-zstandard's answer for a frame without its size
            raise CodingError("the coded payload does not record its size")
        if claimed != expected:
            raise CodingError(f"the coded payload claims {claimed} bytes where the shape allows "
                              f"exactly {expected}")
        stream = self.decompressor.decompressobj()
        try:
            raw = stream.decompress(data)
        except zstandard.ZstdError as error:
            raise CodingError(f"the coded payload does not decompress: {error}") from None
        if len(raw) != expected or not stream.eof or stream.unused_data:
            raise CodingError(f"the coded payload decompressed to {len(raw)} bytes (expected "
                              f"{expected}) or has bytes after its frame")
        q = symbols.from_bytes(raw, numel, bits)
        if symbols.can_exceed_grid(bits) and q.numel() and int(q.max()) >> bits:
            raise CodingError(f"the coded payload holds an index beyond a {bits}-bit grid")
        return q


# Each coder's class, by the name a packet's header records (its index in names.LOSSLESS).
BUILDERS: dict[str, Callable[[], Coder]] = {"none": Planes, "zstd": Zstd}
check_registry("lossless coders", BUILDERS, LOSSLESS)
_made = threading.local()  # Zstandard's contexts serve one thread at a time


def coder(name: str) -> Coder:
    """The coder named `name`, made once per thread (a compressor keeps its buffers)."""
    coders = _made.__dict__.setdefault("coders", {})
    if name not in coders:
        coders[name] = BUILDERS[name]()
    return coders[name]
