"""Reading a whole config: the TOML file or plain data, its sections, and the checks that span
fields (cuts per link, a built-in policy's parameters)."""

from __future__ import annotations

import dataclasses
import inspect
import tomllib
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from quantpipe_core.cli import echo
from quantpipe_core.config.fields import (
    ConfigError,
    Where,
    as_table,
    as_tables,
    check_names,
    describe,
    field_names,
    plural,
)
from quantpipe_core.config.schema import (
    DEFAULT_DEVICE_COUNT,
    SECTIONS,
    Config,
    DeviceConfig,
    LinkConfig,
    ModelConfig,
    PolicyConfig,
    QuantConfig,
)
from quantpipe_core.names import FLOAT_BITS
from quantpipe_core.policy import BUILT_IN, FixedPolicy, make_policy


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



def _parse(data: Any, where: Where) -> Config:
    top = as_table(data, where)
    names = [section.name for section in SECTIONS]
    for key in top:
        owners = [s for s in SECTIONS if key not in names and key in field_names(s.cls)]
        if owners:
            headers = " or ".join(f"[[{s.name}]]" if s.many else f"[{s.name}]" for s in owners)
            raise where.key(key).error(f"a field of {headers}: put it under that header")
    check_names(top, names, where, "section")
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
    table = as_table(value, where)
    check_names(table, field_names(cls), where, "field")
    return cls(**{
        f.name: f.metadata["kind"].read(table[f.name], where.key(f.name))
        for f in dataclasses.fields(cls) if f.name in table
    })


def _devices(value: Any, where: Where) -> tuple[DeviceConfig, ...]:
    tables = as_tables(value, where)
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
    tables = [{}] * (n_devices - 1) if value is None else as_tables(value, where)
    if len(tables) != n_devices - 1:
        raise where.error(
            f"{plural(len(tables), 'link')} for {plural(n_devices, 'device')}: a chain of "
            f"{plural(n_devices, 'device')} has {plural(n_devices - 1, 'link')}"
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
            f"{plural(len(model.cuts), 'cut')} for {plural(n_devices, 'device')}: give one cut "
            f"per link ({n_devices - 1}), or [] to split in the middle"
        )


def _check_policy(policy: PolicyConfig, quant: QuantConfig, where: Where) -> None:
    """A built-in policy's parameters, by building it (it is cheap and pure); a user's class or a
    simulator-only policy checks its own when it is made."""
    base = "fixed" if policy.name.startswith("fixed:") else policy.name
    if base not in BUILT_IN:
        return
    params = where.key("params")
    takes = constructor_params(BUILT_IN[base])
    if takes is not None:
        check_names(policy.params, list(takes), params, f"{base} parameter")
        _check_param_types(takes, policy.params, params)
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


def constructor_params(cls: type) -> dict[str, Any] | None:
    """The keyword arguments `cls(...)` takes, each with its type hint (`Any` where it has none),
    read from its constructor's signature, so a policy need not be a dataclass; None if it takes
    any keyword (``**kwargs``)."""
    try:
        hints = typing.get_type_hints(cls.__init__)
    except (NameError, TypeError):
        hints = {}
    if dataclasses.is_dataclass(cls):
        hints = {**typing.get_type_hints(cls), **hints}
    takes: dict[str, Any] = {}
    for name, parameter in inspect.signature(cls).parameters.items():
        if parameter.kind is inspect.Parameter.VAR_KEYWORD:
            return None
        if parameter.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD,
                              inspect.Parameter.KEYWORD_ONLY):
            takes[name] = hints.get(name, Any)
    return takes


def _check_param_types(hints: Mapping[str, Any], values: Mapping[str, Any], where: Where) -> None:
    """Each parameter has the type its constructor declares (an integer is taken for a float),
    so that ``gain = "high"`` is a field error now, not a TypeError in mid-run."""
    for name, value in values.items():
        if not _fits(value, hints[name]):
            raise where.key(name).error(
                f"expected {_expected(hints[name])}, got {describe(value)}"
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
