"""The config's schema: one frozen dataclass per section, each field with its default, its kind
(`fields.py`) and its documentation; adding a field is one line here."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from quantpipe_core.config.fields import (
    SIM_ONLY_POLICIES,
    Auto,
    Bits,
    Choice,
    CodecLabel,
    Cuts,
    FilePath,
    Integer,
    ModelName,
    Name,
    Number,
    PolicyName,
    Share,
    Table,
    Where,
    describe,
    spec,
)
from quantpipe_core.names import (
    CLIP_METHODS,
    CODEC_DEFAULTS,
    GRANULARITIES,
    LOSSLESS,
    TRACE_FORMATS,
    TRANSFORMS,
    bits_rule,
    codec_label,
)
from quantpipe_core.policy import BUILT_IN

DEFAULT_DEVICE_COUNT = 2
MAX_FLOOR_MBPS = 1e9  # 1 Pbit/s: above any link; a floor of 1e308 Mbit/s overflows bits/s


@dataclass(frozen=True)
class ModelConfig:
    """What runs, how its inputs are batched, and where it is cut into stages."""

    name: str = field(default="vit-base", metadata=spec(ModelName(), (
        "built-in name (digits-vit, minilm, vit-base) or a Hugging Face folder path"
    )))
    microbatch: int = field(default=8, metadata=spec(Integer(1), "inputs per microbatch, >= 1"))
    tokens: int = field(default=32, metadata=spec(Integer(1), (
        "padded sequence length for text models, >= 1"
    )))
    cuts: tuple[str, ...] = field(default=(), metadata=spec(Cuts(), (
        'cut ids in model order, one per link (e.g. ["block5.out"]); [] = split in the middle '
        "into len(devices) stages of equal unit count"
    )))
    partition: str = field(default="manual", metadata=spec(Choice(("manual", "auto")), (
        '"manual" (use cuts / middle split) or "auto" (the partitioner picks the devices\' '
        "order and the cuts)"
    )))


@dataclass(frozen=True)
class QuantConfig:
    """How activations are compressed on the links."""

    clip: str = field(default=CODEC_DEFAULTS["method"], metadata=spec(Choice(tuple(CLIP_METHODS)), (
        f"clipping method: {', '.join(CLIP_METHODS)}"
    )))
    transform: str = field(default=CODEC_DEFAULTS["transform"], metadata=spec(Choice(TRANSFORMS), (
        '"hadamard" rotates the hidden dimension before clipping (spreads outlier channels), '
        '"none" sends it as it is'
    )))
    granularity: str = field(default=CODEC_DEFAULTS["granularity"], metadata=spec(
        Choice(GRANULARITIES), (
        'one clip range per "tensor", per "token", or "auto" (per token where the ranges add '
        "at most 10 % to the payload)"
    )))
    outliers: int | str = field(default=CODEC_DEFAULTS["outliers"], metadata=spec(
        Auto(Integer(0), "an integer >= 0"), (
        "channels of largest magnitude sent apart at 16 bits, per tensor; \"auto\": with "
        "granularity \"auto\", as many as fit in what the ranges leave of 10 % of the payload "
        "(none with a fixed granularity); 0: none"
    )))
    lossless: str = field(default="none", metadata=spec(Choice(LOSSLESS), (
        '"zstd" codes the grid indices losslessly (a Zstandard frame) where that shortens the '
        'packet; fewer bytes on the link for some CPU on both stages; "none" sends bit-planes'
    )))
    allowed_bits: tuple[int, ...] = field(default=(2, 3, 4, 6, 8, 16), metadata=spec(Bits(), (
        f"bitwidths a policy may pick, each {bits_rule(allow_float=True)}, distinct; sorted on "
        "load"
    )))


    @property
    def codec(self) -> str:
        """The codec label (`quantpipe_core.quant.Codec`) these options name; profiles are keyed
        by it."""
        return codec_label(self.clip, self.transform, self.granularity, self.outliers,
                           self.lossless)


@dataclass(frozen=True)
class PolicyConfig:
    """Which policy picks each link's bitwidth, and how often."""

    name: str = field(default="quantpipe", metadata=spec(PolicyName(), (
        " | ".join(["fixed", "fixed:N", *[name for name in BUILT_IN if name != "fixed"]])
        + f" | {', '.join(SIM_ONLY_POLICIES)} (simulator only) | \"module:Class\""
    )))
    window: int = field(default=8, metadata=spec(Integer(1), (
        "microbatches per policy window, >= 1"
    )))
    params: dict[str, Any] = field(default_factory=dict, metadata=spec(Table(), (
        "keyword arguments for the policy class (a TOML table)"
    )))


@dataclass(frozen=True)
class SourceConfig:
    """How inputs enter the pipeline."""

    mode: str = field(default="open", metadata=spec(Choice(("open", "closed")), (
        '"open": one microbatch every microbatch/target_rate seconds; "closed": at most '
        "max_in_flight microbatches in the pipeline"
    )))
    target_rate: float | str = field(default="auto", metadata=spec(Auto(), (
        'items per second (> 0), or "auto" = 90 % of the compute-bound rate'
    )))
    max_in_flight: int = field(default=4, metadata=spec(Integer(1), (
        "microbatches in the pipeline at once in closed mode, >= 1"
    )))


@dataclass(frozen=True)
class DeviceConfig:
    """One pipeline stage's device."""

    name: str = field(metadata=spec(Name(), (
        'unique; default "stageI" for the I-th device (from 0)'
    )))
    profile: str = field(default="", metadata=spec(FilePath(), (
        'compute profile: "" = the model\'s shipped one, else a JSON file path'
    )))
    speed: float = field(default=1.0, metadata=spec(Number(zero_ok=False), (
        "> 0; multiplies the profile's speed (2 = twice as fast)"
    )))
    threads: int = field(default=1, metadata=spec(Integer(1), (
        "torch threads, >= 1 (the profile must have been measured with it)"
    )))
    memory_mb: int = field(default=0, metadata=spec(Integer(0), (
        "memory limit in MB, >= 0; 0 = unlimited"
    )))


@dataclass(frozen=True)
class LinkConfig:
    """The link from one device to the next, and the bandwidth trace it follows."""

    trace: str = field(default="", metadata=spec(FilePath(), (
        'trace file; "" = the trace given on the command line'
    )))
    format: str = field(default="auto", metadata=spec(Choice(TRACE_FORMATS), (
        " | ".join(TRACE_FORMATS)
    )))
    scale: float = field(default=1.0, metadata=spec(Number(zero_ok=False), (
        "> 0, multiplies every rate of the trace"
    )))
    bin_s: float = field(default=0.0, metadata=spec(Number(zero_ok=True), (
        "seconds per bin the trace is averaged over, >= 0; 0 = no binning"
    )))
    end: str = field(default="loop", metadata=spec(Choice(("loop", "hold")), (
        "loop | hold: replay the trace, or keep its last rate"
    )))
    floor_mbps: float = field(default=0.01, metadata=spec(Number(True, MAX_FLOOR_MBPS), (
        "0 to 1e9; lower rates are raised to it"
    )))
    latency_s: float = field(default=0.0, metadata=spec(Number(zero_ok=True), (
        "seconds of fixed latency per transfer, >= 0"
    )))
    codec: str = field(default="", metadata=spec(CodecLabel(), (
        'this link\'s codec scheme as a label (e.g. "aciq/none/tensor", "aciq/none/tensor+zstd" '
        'with lossless coding, see [quant]); empty: '
        "[quant]'s, with which the partitioner sizes every link"
    )))
    payload_share: float = field(default=1.0, metadata=spec(Share(), (
        "share of the trace's rate that carries packet bytes, in (0, 1]; the rest is protocol "
        "headers (TCP over Ethernet: 0.956); simulator only, a real link has its own"
    )))


@dataclass(frozen=True)
class RunConfig:
    """How long a run lasts, how often it reports, and its randomness."""

    duration_s: float = field(default=0.0, metadata=spec(Number(zero_ok=True), (
        "seconds, >= 0; 0 = one pass of the longest trace"
    )))
    metrics_interval_s: float = field(default=5.0, metadata=spec(Number(zero_ok=False), (
        "seconds between two metrics reports, > 0"
    )))
    seed: int = field(default=0, metadata=spec(Integer(0), (
        "seed of every random choice, >= 0"
    )))


@dataclass(frozen=True)
class UtilityConfig:
    """How a run is scored: the one utility per offered item that compares policies
    (`quantpipe_core.utility`; defaults from adaptive video streaming's QoE, docs/policies.md)."""

    latency_slo_s: float | str = field(default="auto", metadata=spec(Auto(), (
        'seconds (> 0) an item may take from source to sink before it counts as late; "auto": '
        "the compute path (every stage's compute and codec at the largest allowed bitwidth, "
        "plus link latencies) plus one policy window of arrivals at the target rate"
    )))
    late_weight: float = field(default=1.0, metadata=spec(Number(zero_ok=True), (
        ">= 0; utility lost per second an item arrives past the SLO (1 = a second late costs "
        "a float32 item's whole value)"
    )))
    switch_weight: float = field(default=1.0, metadata=spec(Number(zero_ok=True), (
        ">= 0; utility lost per unit of change in value between consecutive items"
    )))


@dataclass(frozen=True)
class Section:
    """A top-level name of the file and the dataclass its table (or tables) is read into."""

    name: str
    cls: type
    doc: str  # the comment above it in `default_toml`
    many: bool = False  # an array of tables ([[name]]), one per device or link


SECTIONS = (
    Section("model", ModelConfig, "what runs and where it is cut"),
    Section("quant", QuantConfig, "activation quantization on the links"),
    Section("policy", PolicyConfig, "the bitwidth policy of every sending stage"),
    Section("source", SourceConfig, "how inputs arrive"),
    Section("devices", DeviceConfig, (
        "one per stage, pipeline order; default: two devices named stage0, stage1"
    ), many=True),
    Section("links", LinkConfig, (
        "one per link between consecutive devices; default: len(devices) - 1 links with these "
        "defaults"
    ), many=True),
    Section("run", RunConfig, "length, reporting and seed of a run"),
    Section("utility", UtilityConfig, "how a run is scored, to compare policies"),
)


@dataclass(frozen=True)
class Config:
    """A whole run's configuration, checked; made by `load_config` or `config_from_dict`."""

    model: ModelConfig
    quant: QuantConfig
    policy: PolicyConfig
    source: SourceConfig
    devices: tuple[DeviceConfig, ...]
    links: tuple[LinkConfig, ...]
    run: RunConfig
    utility: UtilityConfig

    def link_codec(self, link: int) -> str:
        """The codec label link `link` sends with: its own, or [quant]'s."""
        return self.links[link].codec or self.quant.codec

    def to_dict(self) -> dict[str, Any]:
        """Plain data (TOML and JSON types only) that `config_from_dict` reads back to this."""
        return {section.name: _plain(getattr(self, section.name)) for section in SECTIONS}

    def replace(self, **dotted_overrides: Any) -> Config:
        """This config with fields changed, checked again as a whole.

        Keys are dotted names: ``"policy.name"``, ``"devices.1.speed"`` (or ``devices[1].speed``,
        as errors print it), ``"links.*.scale"`` (every link), ``"policy.params.gain"``. Relative
        paths in the new values start at the working directory, as on a command line.
        """
        data = self.to_dict()
        for key, value in dotted_overrides.items():
            parts = re.sub(r"\[(\d+|\*)\]", r".\1", key).split(".")
            _override(data, parts, value, Where("<override>", Path.cwd(), key))
        from quantpipe_core.config.read import config_from_dict  # reading builds a Config

        return config_from_dict(data, source="<override>")



def _plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value):
        return {f.name: _plain(getattr(value, f.name)) for f in fields(value)}
    if isinstance(value, list | tuple):
        return [_plain(item) for item in value]
    if isinstance(value, Mapping):
        return {key: _plain(item) for key, item in value.items()}
    return value


def _override(node: Any, parts: Sequence[str], value: Any, where: Where) -> None:
    """Sets the field at `parts` in plain config data; "*" stands for every item of an array."""
    head, *rest = parts
    if isinstance(node, list):
        if head == "*":
            keys: list[Any] = list(range(len(node)))
        elif head.isdecimal() and int(head) < len(node):
            keys = [int(head)]
        else:
            raise where.error(f"{head!r} is neither '*' nor an index below {len(node)}")
    elif isinstance(node, dict):
        keys = [head]
        if rest:
            node.setdefault(head, {})
    else:
        raise where.error(f"{describe(node)} has no fields to set")
    for key in keys:
        if rest:
            _override(node[key], rest, value, where)
        else:
            node[key] = value
