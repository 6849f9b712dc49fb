"""Activation post-training quantization for the links between pipeline stages.

Public API (the rest of QuantPipe and outside checks use exactly these names):

- `clip_range(x, bits, method, *, dist="auto", pct=99.99) -> (lo, hi)`
- `encode(x, bits, method="ds-aciq", **options) -> bytes`, options `transform`, `granularity`,
  `outliers`, `seed`, `dist`, `pct` (see `Codec`; left out, the best measured defaults)
- `decode(data) -> torch.Tensor`
- `wire_size(shape, bits, **options) -> int`
- `Codec`: one scheme's options, named by a label such as ``ds-aciq/hadamard/auto``

See docs/quantization.md for the methods, the wire format and measured speed.
"""

from quantpipe_core.names import GRANULARITIES, TRANSFORMS
from quantpipe_core.quant.clipping import METHODS, clip_range
from quantpipe_core.quant.scheme import DEFAULT, Codec
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
    "DEFAULT",
    "GRANULARITIES",
    "METHODS",
    "TRANSFORMS",
    "Codec",
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
