"""One TOML configuration that the simulator, the emulator and the real runtime all read.

Every field has a default, so no file, or an empty one, is a complete run; `default_toml()` shows
them all, each with its documentation. A value that cannot work raises `ConfigError`, whose
message names the file, the dotted field (``links[1].scale``, indexes from 0) and why. Loading is
pure and fast (no torch, no model): what needs the model (cut ids, the middle split,
``target_rate = "auto"``) is resolved later, by the code that loads it. Reference: docs/config.md.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import json
import math
import re
import textwrap
import tomllib
import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Protocol

from quantpipe_core.cli import ECHO_CHARS, cut, echo
from quantpipe_core.policy import BUILT_IN, FLOAT_BITS, FixedPolicy, make_policy

# Copies of names whose home modules import torch (quantpipe_core.models.load and
# quantpipe_core.quant); tests/test_config.py checks that they stay equal.
BUILTIN_MODELS = ("digits-vit", "minilm", "vit-base")
CLIP_METHODS = ("minmax", "aciq", "ds-aciq", "percentile", "mse")
GRANULARITIES = ("tensor", "token", "auto")
TRANSFORMS = ("none", "hadamard")

SIM_ONLY_POLICIES = ("oracle", "optimal")
POLICY_NAMES = (*BUILT_IN, *SIM_ONLY_POLICIES)
TRACE_FORMATS = ("auto", "csv", "mahimahi", "mbps-log")
DEFAULT_DEVICE_COUNT = 2
PATH_CHARS = 250  # of a path quoted in an error message (a model "name" may be a huge string)
MAX_FLOOR_MBPS = 1e9  # 1 Pbit/s: above any link; a floor of 1e308 Mbit/s overflows bits/s
LINE_LENGTH = 100  # of `default_toml`'s lines
USER_CLASS = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*", re.ASCII)


class ConfigError(ValueError):
    """A configuration that cannot run; the message names the file, the field and why."""


@dataclass(frozen=True)
class Where:
    """Where a value sits: its file (for messages and for relative paths) and its dotted name."""

    source: str  # the file as the user named it, or "<dict>"
    base: Path  # the folder relative paths are resolved against
    name: str = ""  # dotted field name; "" for the whole file

    def key(self, key: str) -> Where:
        key = cut(key, ECHO_CHARS)
        return dataclasses.replace(self, name=f"{self.name}.{key}" if self.name else key)

    def index(self, index: int) -> Where:
        return dataclasses.replace(self, name=f"{self.name}[{index}]")

    def path(self, text: str) -> Path:
        """`text` as an absolute path; a relative one starts at `base`."""
        return (self.base / Path(text).expanduser()).resolve()

    def error(self, reason: str) -> ConfigError:
        place = f"{self.source}: {self.name}" if self.name else self.source
        return ConfigError(f"{place}: {reason}")


# ----- how one field is read ----------------------------------------------------------------


class Kind(Protocol):
    def read(self, value: Any, where: Where) -> Any:
        """`value` as stored in the config, or a `ConfigError` saying why it cannot be."""
        ...


@dataclass(frozen=True)
class Integer:
    minimum: int  # the smallest value allowed

    def read(self, value: Any, where: Where) -> int:
        number = _integer(value, where)
        if number < self.minimum:
            raise where.error(f"must be >= {self.minimum}, got {number}")
        return number


@dataclass(frozen=True)
class Number:
    """A finite number, stored as a float; TOML's integers are taken too."""

    zero_ok: bool  # True: >= 0 (zero means something, such as "off"); False: > 0
    maximum: float = math.inf  # the largest value that still means something

    def read(self, value: Any, where: Where) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise where.error(f"expected a number, got {_describe(value)}")
        if not math.isfinite(value):
            raise where.error(f"must be finite, got {value}")
        if value < 0 or (value == 0 and not self.zero_ok):
            raise where.error(f"must be {'>=' if self.zero_ok else '>'} 0, got {value}")
        if value > self.maximum:
            raise where.error(f"must be <= {self.maximum:g}, got {value:g}")
        return float(value)


@dataclass(frozen=True)
class Choice:
    options: tuple[str, ...]  # the values allowed

    def read(self, value: Any, where: Where) -> str:
        text = _string(value, where)
        if text not in self.options:
            known = ", ".join(self.options)
            raise where.error(
                f"{echo(text)} is not one of {known}{did_you_mean(text, self.options)}"
            )
        return text


class Name:
    """A non-empty string: a device's name or a cut id."""

    def read(self, value: Any, where: Where) -> str:
        text = _string(value, where)
        if not text:
            raise where.error("must not be empty")
        return text


class FilePath:
    """A file; "" (none) stays "", others become absolute, relative to the config's folder."""

    def read(self, value: Any, where: Where) -> str:
        text = _string(value, where)
        return str(where.path(text)) if text else ""


class Share:
    """A share of a whole: a number in (0, 1]."""

    def read(self, value: Any, where: Where) -> float:
        share = Number(zero_ok=False).read(value, where)
        if share > 1:
            raise where.error(f"must be <= 1 (a share), got {value}")
        return share


class Auto:
    """A number > 0, or "auto" for the code that knows the model to work out."""

    def read(self, value: Any, where: Where) -> float | str:
        if value == "auto":
            return "auto"
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise where.error(f'expected a number > 0 or "auto", got {_describe(value)}')
        return Number(zero_ok=False).read(value, where)


class Bits:
    """Distinct bitwidths, each 1..16 or 32 (float32), stored in increasing order."""

    def read(self, value: Any, where: Where) -> tuple[int, ...]:
        items = _array(value, where)
        if not items:
            raise where.error("needs at least one bitwidth")
        for index, item in enumerate(items):
            if not 1 <= _integer(item, where.index(index)) <= 16 and item != FLOAT_BITS:
                raise where.index(index).error(
                    f"a bitwidth is 1..16 or {FLOAT_BITS} (float32), got {item}"
                )
        _distinct(items, where)
        return tuple(sorted(items))


class Cuts:
    """Distinct cut ids; the model's resolver checks that they exist and are in order."""

    def read(self, value: Any, where: Where) -> tuple[str, ...]:
        items = _array(value, where)
        for index, item in enumerate(items):
            Name().read(item, where.index(index))
        _distinct(items, where)
        return tuple(items)


class Table:
    """Free-form keyword arguments, copied so the config owns them."""

    def read(self, value: Any, where: Where) -> dict[str, Any]:
        return copy.deepcopy(dict(_table(value, where)))


class ModelName:
    """A built-in model's name, or a folder (made absolute); checked here because the two share
    one field, so only the folder's existence tells a typo from a path."""

    def read(self, value: Any, where: Where) -> str:
        name = _string(value, where)
        if name in BUILTIN_MODELS:
            return name
        folder = where.path(name)
        if not _is_dir(folder):
            raise where.error(
                f"{echo(name)} is not a built-in model ({', '.join(BUILTIN_MODELS)}) and there "
                f"is no folder {cut(str(folder), PATH_CHARS)}{did_you_mean(name, BUILTIN_MODELS)}"
            )
        return str(folder)


class PolicyName:
    """A built-in policy, ``fixed:N`` or a user's ``module:Class`` (not imported here)."""

    def read(self, value: Any, where: Where) -> str:
        name = _string(value, where)
        base, colon, bits = name.partition(":")
        if base == "fixed" and colon:
            if not (bits.isascii() and bits.isdigit()):
                raise where.error(f"'fixed:' takes a bitwidth, e.g. fixed:4; got {echo(name)}")
        elif colon:
            if not USER_CLASS.fullmatch(name):
                raise where.error(
                    f"a user's policy is named 'module:Class' (e.g. mypolicies:Greedy), "
                    f"got {echo(name)}"
                )
        elif name not in POLICY_NAMES:
            raise where.error(
                f"{echo(name)} is not one of {', '.join(POLICY_NAMES)}, fixed:N or "
                f"'module:Class'"
                f"{did_you_mean(name, POLICY_NAMES)}"
            )
        return name


def spec(kind: Kind, doc: str) -> dict[str, Any]:
    """A field's metadata: how it is read, and its documentation (shown by `default_toml`)."""
    return {"kind": kind, "doc": doc}


# ----- the sections ---------------------------------------------------------------------------


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

    clip: str = field(default="ds-aciq", metadata=spec(Choice(CLIP_METHODS), (
        f"clipping method: {', '.join(CLIP_METHODS)}"
    )))
    transform: str = field(default="hadamard", metadata=spec(Choice(TRANSFORMS), (
        '"hadamard" rotates the hidden dimension before clipping (spreads outlier channels), '
        '"none" sends it as it is'
    )))
    granularity: str = field(default="auto", metadata=spec(Choice(GRANULARITIES), (
        'one clip range per "tensor", per "token", or "auto" (per token where the ranges add '
        "at most 10 % to the payload)"
    )))
    outliers: int = field(default=0, metadata=spec(Integer(0), (
        "channels of largest magnitude sent apart at 16 bits, per tensor; 0: none"
    )))
    allowed_bits: tuple[int, ...] = field(default=(2, 3, 4, 6, 8, 16), metadata=spec(Bits(), (
        f"bitwidths a policy may pick, each 1..16 or {FLOAT_BITS}, distinct; sorted on load"
    )))


    @property
    def codec(self) -> str:
        """The codec label (`quantpipe_core.quant.Codec`) these options name; profiles are keyed
        by it."""
        tail = f"/o{self.outliers}" if self.outliers else ""
        return f"{self.clip}/{self.transform}/{self.granularity}{tail}"


@dataclass(frozen=True)
class PolicyConfig:
    """Which policy picks each link's bitwidth, and how often."""

    name: str = field(default="quantpipe", metadata=spec(PolicyName(), (
        "fixed | fixed:N | quantpipe | controller | mpc | planner | oracle, optimal (simulator "
        'only) | "module:Class"'
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
        return config_from_dict(data, source="<override>")


def read_toml(path: Path) -> dict[str, Any]:
    """The TOML table in the file at `path`; a `ConfigError` naming the file if unreadable."""
    try:
        return tomllib.loads(path.read_bytes().decode("utf-8"))
    except OSError as error:
        raise ConfigError(f"{path}: cannot read it: {error.strerror}") from None
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as error:
        raise ConfigError(f"{path}: not valid TOML: {error}") from None


def load_config(path: str | Path | None = None) -> Config:
    """The configuration in the TOML file at `path`, checked; all defaults if `path` is None."""
    if path is None:
        return config_from_dict({})
    path = Path(path)
    return _parse(read_toml(path), Where(str(path), path.resolve().parent))


def config_from_dict(data: Mapping[str, Any], source: str = "<dict>") -> Config:
    """The configuration in plain data shaped like the TOML file (e.g. `Config.to_dict`'s),
    checked; `source` names it in errors, and relative paths start at the working directory."""
    return _parse(data, Where(source, Path.cwd()))


def default_toml() -> str:
    """The default configuration as TOML, every field with its documentation; it loads to the
    defaults."""
    header = [
        "# QuantPipe configuration: every field at its default, so this file and an empty one",
        "# describe the same run. Relative paths start at this file's folder.",
    ]
    return _toml(config_from_dict({}), header, documented=True)


def to_toml(config: Config) -> str:
    """`config` as a TOML file that `load_config` reads back to it (paths are absolute), e.g. to
    hand the exact run to other processes."""
    return _toml(config, ["# QuantPipe configuration, every field written out"], documented=False)


def _toml(config: Config, header: list[str], documented: bool) -> str:
    lines = list(header)
    for section in SECTIONS:
        value = getattr(config, section.name)
        for index, block in enumerate(value if section.many else [value]):
            lines.append("")
            if documented and index == 0:
                lines += [f"# {line}" for line in textwrap.wrap(section.doc, LINE_LENGTH - 2)]
            lines.append(f"[[{section.name}]]" if section.many else f"[{section.name}]")
            lines += _assignments(block, documented=documented and index == 0)
    return "\n".join(lines) + "\n"


# ----- reading a whole file -------------------------------------------------------------------


def _parse(data: Any, where: Where) -> Config:
    top = _table(data, where)
    names = [section.name for section in SECTIONS]
    for key in top:
        owners = [s for s in SECTIONS if key not in names and key in _field_names(s.cls)]
        if owners:
            headers = " or ".join(f"[[{s.name}]]" if s.many else f"[{s.name}]" for s in owners)
            raise where.key(key).error(f"a field of {headers}: put it under that header")
    _check_names(top, names, where, "section")
    single = {
        s.name: _section(s.cls, top.get(s.name, {}), where.key(s.name))
        for s in SECTIONS if not s.many
    }
    devices = _devices(top.get("devices", [{}] * DEFAULT_DEVICE_COUNT), where.key("devices"))
    links = _links(top.get("links"), len(devices), where.key("links"))
    _check_cuts(single["model"], len(devices), where.key("model").key("cuts"))
    _check_policy(single["policy"], single["quant"], where.key("policy"))
    return Config(**single, devices=devices, links=links)


def _section(cls: type, value: Any, where: Where) -> Any:
    table = _table(value, where)
    _check_names(table, _field_names(cls), where, "field")
    return cls(**{
        f.name: f.metadata["kind"].read(table[f.name], where.key(f.name))
        for f in fields(cls) if f.name in table
    })


def _devices(value: Any, where: Where) -> tuple[DeviceConfig, ...]:
    tables = _tables(value, where)
    if not tables:
        raise where.error("a pipeline needs at least one device")
    devices = tuple(
        _section(DeviceConfig, {"name": f"stage{index}", **table}, where.index(index))
        for index, table in enumerate(tables)
    )
    first: dict[str, int] = {}
    for index, device in enumerate(devices):
        if device.name in first:
            raise where.index(index).key("name").error(
                f"{echo(device.name)} is already the name of devices[{first[device.name]}]; "
                "names must be unique"
            )
        first[device.name] = index
    return devices


def _links(value: Any, n_devices: int, where: Where) -> tuple[LinkConfig, ...]:
    tables = [{}] * (n_devices - 1) if value is None else _tables(value, where)
    if len(tables) != n_devices - 1:
        raise where.error(
            f"{_count(len(tables), 'link')} for {_count(n_devices, 'device')}: a chain of "
            f"{_count(n_devices, 'device')} has {_count(n_devices - 1, 'link')}"
        )
    return tuple(_section(LinkConfig, table, where.index(i)) for i, table in enumerate(tables))


def _check_cuts(model: ModelConfig, n_devices: int, where: Where) -> None:
    if model.cuts and model.partition == "auto":
        raise where.error(
            'partition = "auto" picks the cuts itself: leave cuts = [] or set '
            'partition = "manual"'
        )
    if model.cuts and len(model.cuts) != n_devices - 1:
        raise where.error(
            f"{_count(len(model.cuts), 'cut')} for {_count(n_devices, 'device')}: give one cut "
            f"per link ({n_devices - 1}), or [] to split in the middle"
        )


def _check_policy(policy: PolicyConfig, quant: QuantConfig, where: Where) -> None:
    """A built-in policy's parameters, by building it (it is cheap and pure); a user's class or a
    simulator-only policy checks its own when it is made."""
    base = "fixed" if policy.name.startswith("fixed:") else policy.name
    if base not in BUILT_IN:
        return
    params = where.key("params")
    _check_names(policy.params, _field_names(BUILT_IN[base]), params, f"{base} parameter")
    _check_param_types(BUILT_IN[base], policy.params, params)
    if base != policy.name and "bits" in policy.params:
        raise params.key("bits").error(
            f"{policy.name!r} already gives the bitwidth: drop params.bits or name the policy "
            '"fixed"'
        )
    try:
        built = make_policy(policy.name, **policy.params)
    except ValueError as error:
        raise (params if policy.params else where.key("name")).error(str(error)) from None
    if isinstance(built, FixedPolicy) and built.bits not in (*quant.allowed_bits, FLOAT_BITS):
        place = params.key("bits") if "bits" in policy.params else where.key("name")
        raise place.error(
            f"{policy.name!r} sends {built.bits} bits, which is not in quant.allowed_bits "
            f"{list(quant.allowed_bits)} (nor {FLOAT_BITS}, float32)"
        )


def _check_param_types(cls: type, values: Mapping[str, Any], where: Where) -> None:
    """Each parameter has the type its field in `cls` declares (an integer is taken for a
    float), so that ``gain = "high"`` is a field error now, not a TypeError in mid-run."""
    hints = typing.get_type_hints(cls)
    for name, value in values.items():
        if not _fits(value, hints[name]):
            raise where.key(name).error(
                f"expected {_expected(hints[name])}, got {_describe(value)}"
            )


def _fits(value: Any, hint: Any) -> bool:
    """Whether plain config data `value` has the type `hint` (unknown types: left to `cls`)."""
    args = typing.get_args(hint)
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        return any(_fits(value, arg) for arg in args)
    if typing.get_origin(hint) in (list, tuple):
        if not isinstance(value, list | tuple):
            return False
        items = args[:1] * len(value) if args[-1:] == (Ellipsis,) or len(args) == 1 else args
        return len(items) == len(value) and all(map(_fits, value, items))
    plain = {float: int | float, int: int, bool: bool, str: str, type(None): type(None)}
    if hint not in plain:
        return True
    return isinstance(value, plain[hint]) and (hint is bool or not isinstance(value, bool))


def _expected(hint: Any) -> str:
    """`hint` as TOML types, for "expected X"."""
    args = [arg for arg in typing.get_args(hint) if arg is not type(None)]
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        return " or ".join(_expected(arg) for arg in args)
    if typing.get_origin(hint) in (list, tuple):
        return f"an array, each {_expected(args[0])}" if args else "an array"
    names = {float: "a number", int: "an integer", bool: "a boolean", str: "a string"}
    return names.get(hint, getattr(hint, "__name__", str(hint)))


# ----- small helpers --------------------------------------------------------------------------


def _field_names(cls: type) -> list[str]:
    return [f.name for f in fields(cls) if f.init]


def _check_names(table: Mapping[str, Any], known: Sequence[str], where: Where, what: str) -> None:
    for key in table:
        if key not in known:
            raise where.key(key).error(
                f"unknown {what} {echo(key)}{did_you_mean(key, known)} "
                f"(known: {', '.join(known)})"
            )


def did_you_mean(name: str, known: Sequence[str]) -> str:
    """"; did you mean 'x'?" for the known name closest to `name`, if one is close."""
    close = difflib.get_close_matches(name, known, n=1)
    return f"; did you mean {close[0]!r}?" if close else ""


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


def _describe(value: Any) -> str:
    """`value`'s TOML type and the value itself, for "expected X, got Y"."""
    kinds = [(bool, "boolean"), (int, "integer"), (float, "float"), (str, "string"),
             (list | tuple, "array"), (Mapping, "table")]
    kind = next((name for types, name in kinds if isinstance(value, types)), type(value).__name__)
    try:
        shown = json.dumps(value)
    except (TypeError, ValueError):
        shown = repr(value)
    return f"{kind} {cut(shown, ECHO_CHARS)}"


def _is_dir(path: Path) -> bool:
    """False for a path the system refuses to look up too (a name too long), not an OSError."""
    try:
        return path.is_dir()
    except OSError:
        return False


def _string(value: Any, where: Where) -> str:
    if not isinstance(value, str):
        raise where.error(f"expected a string, got {_describe(value)}")
    return value


def _integer(value: Any, where: Where) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise where.error(f"expected an integer, got {_describe(value)}")
    return value


def _array(value: Any, where: Where) -> list[Any]:
    if not isinstance(value, list | tuple):
        raise where.error(f"expected an array, got {_describe(value)}")
    return list(value)


def _table(value: Any, where: Where) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise where.error(f"expected a table, got {_describe(value)}")
    return value


def _tables(value: Any, where: Where) -> list[Mapping[str, Any]]:
    if not isinstance(value, list | tuple):
        header = where.name.rsplit(".", 1)[-1]
        raise where.error(f"expected an array of tables ([[{header}]]), got {_describe(value)}")
    return [_table(item, where.index(index)) for index, item in enumerate(value)]


def _distinct(items: Sequence[Any], where: Where) -> None:
    first: dict[Any, int] = {}
    for index, item in enumerate(items):
        if item in first:
            raise where.index(index).error(
                f"{echo(item)} is listed twice (also at [{first[item]}])"
            )
        first[item] = index


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
        raise where.error(f"{_describe(node)} has no fields to set")
    for key in keys:
        if rest:
            _override(node[key], rest, value, where)
        else:
            node[key] = value


def _literal(value: Any) -> str:
    """`value` written as TOML."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, list | tuple):
        return f"[{', '.join(map(_literal, value))}]"
    if isinstance(value, Mapping):
        return "{" + ", ".join(f"{json.dumps(k)} = {_literal(v)}" for k, v in value.items()) + "}"
    return repr(value)


def _assignments(block: Any, documented: bool) -> list[str]:
    """``name = value`` lines of a section, each followed by its doc in an aligned comment."""
    pairs = [(f"{f.name} = {_literal(getattr(block, f.name))}", f.metadata["doc"])
             for f in fields(block)]
    if not documented:
        return [assignment for assignment, _ in pairs]
    column = max(len(assignment) for assignment, _ in pairs) + 2
    lines = []
    for assignment, doc in pairs:
        first, *more = textwrap.wrap(doc, LINE_LENGTH - column - 2)
        lines.append(f"{assignment:<{column}}# {first}")
        lines += [f"{'':<{column}}# {line}" for line in more]
    return lines
