"""Activation post-training quantization for the links between pipeline stages.

Public API (the rest of QuantPipe and outside checks use exactly these names):

- `clip_range(x, bits, method, *, dist="auto", pct=99.99) -> (lo, hi)`
- `encode(x, bits, method="ds-aciq", *, granularity="tensor") -> bytes`
- `decode(data) -> torch.Tensor`
- `wire_size(shape, bits, *, granularity="tensor") -> int`

See docs/quantization.md for the methods, the wire format and measured speed.
"""

from quantpipe_core.quant.clipping import GRANULARITIES, METHODS, clip_range
from quantpipe_core.quant.wire import (
    CorruptPacket,
    ForeignPacket,
    PacketError,
    TruncatedPacket,
    UnsupportedVersion,
    decode,
    encode,
    wire_size,
)

__all__ = [
    "GRANULARITIES",
    "METHODS",
    "CorruptPacket",
    "ForeignPacket",
    "PacketError",
    "TruncatedPacket",
    "UnsupportedVersion",
    "clip_range",
    "decode",
    "encode",
    "wire_size",
]
