"""The names and limits every part of QuantPipe shares, in one torch-free module.

The config, the command lines, the codec, the policies and the profiles all take the bitwidth
rule, the clipping methods, the codec options, the built-in models and the trace formats from
here, so that loading a config needs no torch and no list is copied by hand. The code behind
each name registers under it (`quant.clipping.METHODS`, `models.load.BUILDERS`, ...) and checks
at import that it covers exactly these names.
"""

from __future__ import annotations

import numbers
from collections.abc import Collection, Iterable

from quantpipe_core.trace import FORMATS

MIN_BITS = 1
MAX_BITS = 16
FLOAT_BITS = 32  # "no quantization": the tensor goes as float32

CLIP_METHODS = {
    "minmax": "the data's own extremes",
    "aciq": "ACIQ's analytical range for a Laplace or Gaussian fit",
    "ds-aciq": "ACIQ's range refined by a directed search on the real error",
    "percentile": "the pct-th and (100 - pct)-th percentiles",
    "mse": "the range of least quantization error on a grid of candidates",
}
TRANSFORMS = ("none", "hadamard")  # a transform's index is its code in the packet header
GRANULARITIES = ("tensor", "token", "auto")
LOSSLESS = ("none", "zstd")  # a lossless coder's index is its code in the packet header
AUTO = "auto"  # outliers: the channels that fit in the payload's side budget (quant.scheme)
# the default codec scheme, the one that measured best on the models' outputs (quant.Codec)
CODEC_DEFAULTS = {"method": "ds-aciq", "transform": "hadamard", "granularity": AUTO,
                  "outliers": AUTO}
BUILTIN_MODELS = ("digits-vit", "minilm", "vit-base")
TRACE_FORMATS = ("auto", *FORMATS)  # "auto": detected from the file


def bits_rule(*, allow_float: bool) -> str:
    """The bitwidths allowed, as error messages and help texts write them."""
    quantized = f"{MIN_BITS}..{MAX_BITS}"
    return f"{quantized} or {FLOAT_BITS}" if allow_float else quantized


def is_bits(bits: int, *, allow_float: bool) -> bool:
    """Whether `bits` is a bitwidth the codec can send (float32 only if `allow_float`)."""
    return MIN_BITS <= bits <= MAX_BITS or (allow_float and bits == FLOAT_BITS)


def check_bits(bits: object, *, allow_float: bool) -> int:
    """`bits` as an int the codec can send, else a ValueError that says what is allowed."""
    allowed = bits_rule(allow_float=allow_float)
    if isinstance(bits, bool) or not isinstance(bits, numbers.Integral):
        raise ValueError(f"bits must be an integer in {allowed}, got {bits!r}")
    if not is_bits(int(bits), allow_float=allow_float):
        raise ValueError(f"bits must be in {allowed}, got {bits}")
    return int(bits)


def check_registry(kind: str, registered: Iterable[str], names: Iterable[str]) -> None:
    """Refuse a registry whose keys are not exactly the names declared here, at import, so a
    name added on one side only fails at once instead of in a user's run."""
    if list(registered) != list(names):
        raise RuntimeError(
            f"{kind}: registered {list(registered)} but quantpipe_core.names declares "
            f"{list(names)}; add the new name to both"
        )


def codec_parts(label: str) -> dict[str, object]:
    """The options a codec label ``method[/transform[/granularity]][/oK][+coder]`` names
    (`quant.Codec`); those it leaves out are not in the result. A ValueError for a label of the
    wrong shape; the values themselves are checked by `quant.Codec` and by the config."""
    if not isinstance(label, str) or not label:
        raise ValueError(f"a codec label is a string like 'ds-aciq/hadamard/auto', got {label!r}")
    label, plus, coder = label.partition("+")
    options: dict[str, object] = {"lossless": coder} if plus else {}
    parts = label.split("/")
    if parts[-1].startswith("o") and parts[-1][1:].isdecimal() and len(parts) > 1:
        options["outliers"] = int(parts.pop()[1:])
    if len(parts) > 3:
        raise ValueError(f"codec label {label!r} has too many parts; "
                         "write method/transform/granularity[/oK]")
    options.update(zip(("method", "transform", "granularity"), parts, strict=False))
    return options


def check_choice(option: str, value: object, choices: Collection[str]) -> None:
    """A ValueError naming `option` when `value` is not one of `choices`."""
    if value not in choices:
        raise ValueError(f"unknown {option} {value!r}; choose one of {', '.join(choices)}")


def canonical_codec_label(label: str) -> str:
    """The full label of a possibly shorter one (`codec_parts`), each part checked as
    `quant.Codec` checks it; the form profiles are keyed by."""
    parts = {**CODEC_DEFAULTS, **codec_parts(label)}
    check_choice("clipping method", parts["method"], CLIP_METHODS)
    check_choice("transform", parts["transform"], TRANSFORMS)
    check_choice("granularity", parts["granularity"], GRANULARITIES)
    check_choice("lossless", parts.get("lossless", "none"), LOSSLESS)
    return codec_label(**parts)


def codec_label(method: str, transform: str, granularity: str, outliers: int | str,
                lossless: str = "none") -> str:
    """A codec's label, ``method/transform/granularity[/oK][+coder]`` (`quant.Codec`): the
    outlier count is named when it is a number, except none with a fixed granularity, where it is
    the rule; a lossless coder other than none follows a ``+``."""
    named = outliers != AUTO and (outliers or granularity == AUTO)
    label = f"{method}/{transform}/{granularity}" + (f"/o{outliers}" if named else "")
    return label + (f"+{lossless}" if lossless != "none" else "")


def values_label(label: str) -> str:
    """`label` without its lossless coder: the options that set the decoded values, by which
    accuracy and compute profiles are keyed (a coder changes bytes, not values)."""
    return label.partition("+")[0]
