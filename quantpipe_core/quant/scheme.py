"""A codec scheme: every option that decides what `encode` sends, named by one label.

The options, each recorded in the packet so that `decode` needs nothing else:

- `method`: the clipping method (`clipping.METHODS`);
- `transform`: `"hadamard"` rotates the last dimension before clipping (see `transform.py`),
  `"none"` sends the tensor as it is;
- `granularity`: one clip range per `"tensor"`, one per `"token"` (vector along the last
  dimension), or `"auto"`: per token where the ranges add at most a tenth to the payload
  (`AUTO_TOKEN_SHARE`), else per tensor;
- `outliers`: how many channels (of the last dimension) travel apart at 16 bits, chosen per
  tensor as those with the largest magnitude; `"auto"` (the default): with granularity
  `"auto"`, as many as fit in what the ranges leave of a tenth of the payload
  (`budgeted_outliers`), with a fixed granularity none;
- `seed`: the rotation's random signs;
- `lossless`: `"none"` sends the indices as bit-planes, `"zstd"` codes them losslessly where
  that makes the packet shorter (`lossless.py`); values are the same either way, so accuracy
  and compute profiles are keyed by the label without it (`values_label`);
- `dist`, `pct`: passed to the ACIQ fits and to `percentile`.

A label names the options that change bytes or values: ``method/transform/granularity`` plus
``/oK`` for K outlier channels and ``+coder`` for a lossless coder, e.g. ``ds-aciq/hadamard/auto``
or ``ds-aciq/hadamard/auto+zstd``. Profiles are keyed by labels.
A shorter label takes the defaults for what it leaves out: ``minmax`` is ``minmax/hadamard/auto``
(outliers by the budget); ``ds-aciq/hadamard/auto/o0`` sends none.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace

import numpy as np

from quantpipe_core.names import (
    AUTO,
    CODEC_DEFAULTS,
    GRANULARITIES,
    LOSSLESS,
    TRANSFORMS,
    check_choice,
    codec_label,
    codec_parts,
)
from quantpipe_core.quant.aciq import DISTRIBUTIONS
from quantpipe_core.quant.clipping import METHODS, check_dist_pct

AUTO_TOKEN_SHARE = 0.10  # of the payload, that granularity and outliers "auto" may add
RANGE_BITS = 64  # one (lo, hi) pair of float32
OUTLIER_BITS = 16
INDEX_BITS = 32  # an outlier channel's index in the header
SEED_LIMIT = 2**32


@dataclass(frozen=True)
class Codec:
    """The options of one codec scheme; the defaults are the scheme that measured best on the
    models' outputs (docs/quantization.md)."""

    method: str = CODEC_DEFAULTS["method"]
    transform: str = CODEC_DEFAULTS["transform"]
    granularity: str = CODEC_DEFAULTS["granularity"]
    outliers: int | str = CODEC_DEFAULTS["outliers"]
    seed: int = 0
    lossless: str = "none"
    dist: str = "auto"
    pct: float = 99.99

    def __post_init__(self) -> None:
        check_choice("clipping method", self.method, METHODS)
        check_choice("transform", self.transform, TRANSFORMS)
        check_choice("granularity", self.granularity, GRANULARITIES)
        check_choice("lossless", self.lossless, LOSSLESS)
        check_choice("dist", self.dist, DISTRIBUTIONS)
        if self.outliers != AUTO and (
            isinstance(self.outliers, bool) or not isinstance(self.outliers, int | np.integer)
            or self.outliers < 0
        ):
            raise ValueError(f"outliers must be a non-negative integer or {AUTO!r}, "
                             f"got {self.outliers!r}")
        if self.outliers == AUTO and self.granularity != AUTO:
            object.__setattr__(self, "outliers", 0)  # the rule: no budget, no outliers
        if isinstance(self.seed, bool) or not isinstance(self.seed, int | np.integer) \
                or not 0 <= self.seed < SEED_LIMIT:
            raise ValueError(f"seed must be an integer in 0..2**32-1, got {self.seed!r}")
        check_dist_pct(self.dist, self.pct)

    @classmethod
    def parse(cls, label: str | Codec) -> Codec:
        """The scheme a label names (see the module docstring); a `Codec` is returned as it is."""
        if isinstance(label, Codec):
            return label
        return cls(**codec_parts(label))

    @property
    def label(self) -> str:
        return codec_label(self.method, self.transform, self.granularity, self.outliers,
                           self.lossless)

    def options(self) -> dict[str, object]:
        """Keyword arguments for `encode` and `wire_size`."""
        return asdict(self)

    def with_options(self, **changes: object) -> Codec:
        return replace(self, **changes)


DEFAULT = Codec()


def max_outliers(shape: Sequence[int]) -> int:
    """The most outlier channels a packet of `shape` can carry: its last dimension's length."""
    if math.prod(shape) == 0:
        return 0
    return shape[-1] if shape else 1


def outlier_count(shape: Sequence[int], bits: int, codec: Codec) -> int:
    """Outlier channels a packet of `shape` at `bits` carries with `codec`'s options."""
    if codec.outliers == AUTO:
        return budgeted_outliers(shape, bits)
    return min(int(codec.outliers), max_outliers(shape))


def budgeted_outliers(shape: Sequence[int], bits: int) -> int:
    """Outlier channels that fit in what the clip ranges leave of AUTO_TOKEN_SHARE of the
    payload (`"auto"`); none at OUTLIER_BITS and above, where they would gain nothing.

    Each channel costs 16 bits per row and its index; the channels share one more range.
    MiniLM's 8 x 32 x 384 microbatch: none at 2 bits, 3 at 3 bits, 5 at 4 bits.
    """
    numel = math.prod(shape)
    if numel == 0 or bits >= OUTLIER_BITS:
        return 0
    channels = shape[-1] if shape else 1
    rows = numel // channels
    per_token = resolve_granularity(shape, bits, AUTO) == "token"
    left = AUTO_TOKEN_SHARE * numel * bits - RANGE_BITS * rows * per_token - RANGE_BITS
    fits = math.floor(left / (OUTLIER_BITS * rows + INDEX_BITS))
    return max(0, min(fits, channels))


def resolve_granularity(shape: Sequence[int], bits: int, granularity: str) -> str:
    """`"tensor"` or `"token"`: what `"auto"` means for this shape and bitwidth."""
    if granularity != "auto":
        return granularity
    channels = shape[-1] if shape else 1
    return "token" if AUTO_TOKEN_SHARE * channels * bits >= RANGE_BITS else "tensor"
