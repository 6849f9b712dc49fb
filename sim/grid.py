"""A sweep's spec file and the grid of runs it describes (for `python -m sim.sweep`).

```toml
config = "../reports/digits-vit.toml"        # the base run config (default: built-in defaults)
traces = ["../../traces/*.csv", {path = "../../../shared/traces/hsdpa-norway", scale = 1.0}]
policies = ["fixed:4", "quantpipe", {name = "mpc", params = {horizon = 3}, label = "mpc-3"}]

[set]   # dotted config fields, the same on every run
"run.duration_s" = 60

[axes]  # dotted config fields and their values; the grid is traces x policies x every axis
"model.microbatch" = [4, 8, 16]
"quant.clip" = ["aciq", "ds-aciq"]
```

A trace entry is a file, a folder (every file in it but hidden and ``.md`` files) or a glob;
its ``scale`` sets ``links.*.scale``. Paths in the spec start at its folder; paths inside
[set] and [axes] values start at the working directory, as on a command line. Everything is
checked before anything runs, by the config's own rules: a policy or axis value that no
combination of the other axes makes valid is an error naming the spec's key, and a combination
the config refuses becomes a failed run in the table.
"""

from __future__ import annotations

import glob
import hashlib
import json
import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from itertools import product
from pathlib import Path
from typing import Any

from quantpipe_core.config import (
    Config,
    ConfigError,
    Where,
    check_names,
    load_config,
    read_toml,
)
from quantpipe_core.config.fields import Name, as_table

SPEC_KEYS = ("config", "set", "traces", "policies", "axes")
POLICY_KEYS = ("name", "params", "label")
TRACE_KEYS = ("path", "scale")
LINK_SCALE = "links.*.scale"


@dataclass(frozen=True)
class GridPolicy:
    """A policy of the grid; `label` names it in the table."""

    label: str
    name: str
    params: dict[str, Any] | None  # None: the base config's, if it names the same policy

    def overrides(self, base: Config) -> dict[str, Any]:
        params = self.params
        if params is None:
            params = dict(base.policy.params) if self.name == base.policy.name else {}
        return {"policy.name": self.name, "policy.params": params}


@dataclass(frozen=True)
class GridTrace:
    """A trace file of the grid, with the scale its spec entry gives."""

    path: Path
    scale: float | None  # links.*.scale on its runs, if the spec sets one
    sha256: str  # of the file's content: part of each run's key


@dataclass(frozen=True)
class Point:
    """One run of the grid: the table's grid columns, and its config or why there is none."""

    key: str  # the same run config on the same trace content has the same key
    params: dict[str, Any]
    trace: Path
    config: Config | None
    error: str | None  # the config's refusal of this combination of values


@dataclass(frozen=True)
class Grid:
    """Traces x policies x the values of every axis, over one base config."""

    path: Path
    base: Config
    traces: tuple[GridTrace, ...]
    policies: tuple[GridPolicy, ...]
    axes: dict[str, list[Any]]

    def __len__(self) -> int:
        return len(self.traces) * len(self.policies) * math.prod(map(len, self.axes.values()))

    def points(self) -> Iterator[Point]:
        """Every run, trace by trace, then policy, then axis values (the last one fastest)."""
        scaled = any(trace.scale is not None for trace in self.traces)
        for trace in self.traces:
            for policy in self.policies:
                for values in product(*self.axes.values()):
                    overrides = {LINK_SCALE: trace.scale} if trace.scale is not None else {}
                    overrides |= policy.overrides(self.base)
                    overrides |= dict(zip(self.axes, values, strict=True))
                    params = {"trace": trace.path.stem, "trace_path": str(trace.path),
                              **({"scale": trace.scale} if scaled else {}),
                              "policy": policy.label,
                              **{k: cell(v) for k, v in zip(self.axes, values, strict=True)}}
                    try:
                        config = self.base.replace(**overrides)
                    except ConfigError as error:
                        key = digest({"base": self.base.to_dict(), "overrides": overrides,
                                      "trace_sha256": trace.sha256})
                        yield Point(key, params, trace.path, None, _reason(error))
                    else:
                        yield Point(run_key(config, trace.sha256), params, trace.path, config,
                                    None)


def run_key(config: Config, trace_sha256: str) -> str:
    """What identifies a run's result: its resolved config (policy included) and its trace's
    content, so that a resumed sweep finds it again whatever the spec's wording."""
    return digest({"config": config.to_dict(), "trace_sha256": trace_sha256})


def digest(data: Mapping[str, Any]) -> str:
    text = json.dumps(data, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def cell(value: Any) -> Any:
    """A grid value as a table cell: scalars as they are, arrays and tables as JSON text."""
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return json.dumps(value, default=str)


def read_grid(path: Path) -> Grid:
    """The grid of the spec at `path`, every value checked; `ConfigError` names the key."""
    data = read_toml(path)
    where = Where(str(path), path.resolve().parent)
    check_names(data, SPEC_KEYS, where, "key")
    base = _base(data, where)
    axes = _axes(data.get("axes", {}), where.key("axes"))
    policies = _policies(data.get("policies"), base, axes, where.key("policies"))
    _check_axes(axes, base, policies, where.key("axes"))
    traces = _traces(data.get("traces"), base, where.key("traces"))
    if LINK_SCALE in axes and any(t.scale is not None for t in traces):
        raise where.key("axes").key(json.dumps(LINK_SCALE)).error(
            "a trace entry's scale sets it too: give the scale in one place only"
        )
    return Grid(path, base, traces, policies, axes)


def _base(data: Mapping[str, Any], where: Where) -> Config:
    """The config file (or the defaults) with [set]'s fields."""
    config = data.get("config")
    if config is not None and not isinstance(config, str):
        raise where.key("config").error("expected the path of a run config (a string)")
    base = load_config(where.path(config) if config else None)
    for key, value in as_table(data.get("set", {}), where.key("set")).items():
        base = _replace(base, {key: value}, where.key("set").key(json.dumps(key)), key)
    return base


def _policies(value: Any, base: Config, axes: dict[str, list[Any]],
              where: Where) -> tuple[GridPolicy, ...]:
    if value is None:
        return (GridPolicy(base.policy.name, base.policy.name, None),)
    if not isinstance(value, list) or not value:
        raise where.error("expected a non-empty array of policies (names or tables)")
    policies: list[GridPolicy] = []
    for index, entry in enumerate(value):
        here = where.index(index)
        if isinstance(entry, str):
            policy = GridPolicy(entry, entry, None)
        else:
            table = as_table(entry, here)
            check_names(table, POLICY_KEYS, here, "key")
            name = Name().read(table.get("name"), here.key("name"))
            params = dict(as_table(table.get("params", {}), here.key("params")))
            label = table.get("label")
            if label is None:
                label = name + (json.dumps(params, sort_keys=True) if params else "")
            policy = GridPolicy(Name().read(label, here.key("label")), name, params)
        if refusal := _refusal(base, policy.overrides(base), axes):
            raise here.error(_reason(refusal))
        clash = next((i for i, p in enumerate(policies) if p.label == policy.label), None)
        if clash is not None:
            raise here.error(f"{policy.label!r} is already policies[{clash}]: give a label")
        policies.append(policy)
    return tuple(policies)


def _traces(value: Any, base: Config, where: Where) -> tuple[GridTrace, ...]:
    if not isinstance(value, list) or not value:
        raise where.error("expected a non-empty array of trace files, folders or globs")
    traces: dict[tuple[Path, float | None], GridTrace] = {}
    for index, entry in enumerate(value):
        here = where.index(index)
        table = {"path": entry} if isinstance(entry, str) else as_table(entry, here)
        check_names(table, TRACE_KEYS, here, "key")
        text = Name().read(table.get("path"), here.key("path"))
        scale = table.get("scale")
        if scale is not None:
            _replace(base, {LINK_SCALE: scale}, here.key("scale"), LINK_SCALE)
            scale = float(scale)
        for path in _files(text, here):
            if (path, scale) not in traces:
                sha = hashlib.sha256(path.read_bytes()).hexdigest()
                traces[path, scale] = GridTrace(path, scale, sha)
    return tuple(traces.values())


def _files(text: str, where: Where) -> list[Path]:
    """The trace files a spec entry names: a file, a folder's files, or a glob's matches."""
    path = where.path(text)
    if any(c in text for c in "*?["):
        found = sorted(Path(p) for p in glob.glob(str(path), recursive=True))
        files = [p for p in found if p.is_file()]
        if not files:
            raise where.error(f"{text!r} matches no trace file")
        return files
    if path.is_dir():
        files = sorted(p for p in path.iterdir()
                       if p.is_file() and not p.name.startswith(".") and p.suffix != ".md")
        if not files:
            raise where.error(f"folder {path} holds no trace file")
        return files
    if not path.is_file():
        raise where.error(f"no such trace file or folder: {path}")
    return [path]


def _axes(value: Any, where: Where) -> dict[str, list[Any]]:
    axes: dict[str, list[Any]] = {}
    for key, values in as_table(value, where).items():
        here = where.key(json.dumps(key))
        if key in ("policy", "policy.name"):
            raise here.error("the policies list sets the policy: policies = [...]")
        if not isinstance(values, list) or not values:
            raise here.error("expected a non-empty array of values")
        axes[key] = values
    return axes


def _check_axes(axes: dict[str, list[Any]], base: Config, policies: tuple[GridPolicy, ...],
                where: Where) -> None:
    """Each axis value must make a valid config with some policy and some values of the other
    axes; a combination that is refused is recorded as a failed run."""
    for key, values in axes.items():
        for index, item in enumerate(values):
            refusals = [_refusal(base, {**policy.overrides(base), key: item}, axes)
                        for policy in policies]
            if all(refusals):
                raise where.key(json.dumps(key)).index(index).error(_reason(refusals[0], key))


def _refusal(base: Config, overrides: dict[str, Any],
             axes: dict[str, list[Any]]) -> ConfigError | None:
    """None if `overrides` make a valid config alone or with some values of the other axes;
    else the config's error for them alone."""
    try:
        base.replace(**overrides)
        return None
    except ConfigError as error:
        alone = error
    others = {k: v for k, v in axes.items() if k not in overrides}
    for values in product(*others.values()):
        try:
            base.replace(**overrides, **dict(zip(others, values, strict=True)))
            return None
        except ConfigError:
            continue
    return alone


def _replace(config: Config, overrides: dict[str, Any], where: Where, key: str) -> Config:
    """`config` with `overrides`, or the config's refusal as an error at the spec's `where`."""
    try:
        return config.replace(**overrides)
    except ConfigError as error:
        raise where.error(_reason(error, key)) from None


def _reason(error: ConfigError, key: str | None = None) -> str:
    """The config's message without its "<override>: " prefix, nor the key's if it is
    `key`."""
    reason = str(error).removeprefix("<override>: ")
    return reason.removeprefix(f"{key}: ") if key else reason
