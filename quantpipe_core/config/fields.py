"""How one field of the config is read: where it sits (for messages) and one small class per
kind of value, each turning plain TOML data into the stored value or a `ConfigError` that names
the file, the dotted field and why.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from quantpipe_core.cli import ECHO_CHARS, cut, echo
from quantpipe_core.names import (
    BUILTIN_MODELS,
    FLOAT_BITS,
    bits_rule,
    canonical_codec_label,
    is_bits,
)
from quantpipe_core.policy import BUILT_IN

SIM_ONLY_POLICIES = ("oracle", "optimal")  # they read the trace's future: the simulator only
PATH_CHARS = 250  # of a path quoted in an error message (a model "name" may be a huge string)
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
            raise where.error(f"expected a number, got {describe(value)}")
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


class CodecLabel:
    """A codec label (`quant.Codec`), stored in full (``aciq`` becomes
    ``aciq/hadamard/auto``); "" stays "" (the code that reads it takes another)."""

    def read(self, value: Any, where: Where) -> str:
        text = _string(value, where)
        if not text:
            return ""
        try:
            return canonical_codec_label(text)
        except ValueError as error:
            raise where.error(str(error)) from None


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


@dataclass(frozen=True)
class Auto:
    """A value of another kind (a number > 0 unless told), or "auto" for the code that knows the
    model to work out."""

    kind: Kind = Number(zero_ok=False)  # what a value other than "auto" must be
    wanted: str = "a number > 0"  # how the error names it

    def read(self, value: Any, where: Where) -> Any:
        if value == "auto":
            return "auto"
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise where.error(f'expected {self.wanted} or "auto", got {describe(value)}')
        return self.kind.read(value, where)


class Bits:
    """Distinct bitwidths the codec can send (`names.is_bits`), stored in increasing order."""

    def read(self, value: Any, where: Where) -> tuple[int, ...]:
        items = _array(value, where)
        if not items:
            raise where.error("needs at least one bitwidth")
        for index, item in enumerate(items):
            if not is_bits(_integer(item, where.index(index)), allow_float=True):
                raise where.index(index).error(
                    f"a bitwidth is {bits_rule(allow_float=True)} ({FLOAT_BITS}: float32), got "
                    f"{item}"
                )
        _distinct(items, where)
        return tuple(sorted(items))


class Names:
    """Distinct non-empty strings (policy names, trace patterns, ...)."""

    def read(self, value: Any, where: Where) -> tuple[str, ...]:
        items = _array(value, where)
        for index, item in enumerate(items):
            Name().read(item, where.index(index))
        _distinct(items, where)
        return tuple(items)


class Cuts(Names):
    """Distinct cut ids; the model's resolver checks that they exist and are in order."""


class Table:
    """Free-form keyword arguments, copied so the config owns them."""

    def read(self, value: Any, where: Where) -> dict[str, Any]:
        return copy.deepcopy(dict(as_table(value, where)))


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
        elif name not in (known := policy_names()):
            raise where.error(
                f"{echo(name)} is not one of {', '.join(known)}, fixed:N or "
                f"'module:Class'"
                f"{did_you_mean(name, known)}"
            )
        return name


def policy_names() -> tuple[str, ...]:
    """The built-in policies (`policy.BUILT_IN`, where a new one is registered) and the
    simulator's."""
    return (*BUILT_IN, *SIM_ONLY_POLICIES)


def spec(kind: Kind, doc: str) -> dict[str, Any]:
    """A field's metadata: how it is read, and its documentation (shown by `default_toml`)."""
    return {"kind": kind, "doc": doc}



# ----- reading plain values -------------------------------------------------------------------


def check_names(table: Mapping[str, Any], known: Sequence[str], where: Where, what: str) -> None:
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


def plural(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


def describe(value: Any) -> str:
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
        raise where.error(f"expected a string, got {describe(value)}")
    return value


def _integer(value: Any, where: Where) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise where.error(f"expected an integer, got {describe(value)}")
    return value


def _array(value: Any, where: Where) -> list[Any]:
    if not isinstance(value, list | tuple):
        raise where.error(f"expected an array, got {describe(value)}")
    return list(value)


def as_table(value: Any, where: Where) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise where.error(f"expected a table, got {describe(value)}")
    return value


def as_tables(value: Any, where: Where) -> list[Mapping[str, Any]]:
    if not isinstance(value, list | tuple):
        header = where.name.rsplit(".", 1)[-1]
        raise where.error(f"expected an array of tables ([[{header}]]), got {describe(value)}")
    return [as_table(item, where.index(index)) for index, item in enumerate(value)]


def _distinct(items: Sequence[Any], where: Where) -> None:
    first: dict[Any, int] = {}
    for index, item in enumerate(items):
        if item in first:
            raise where.index(index).error(
                f"{echo(item)} is listed twice (also at [{first[item]}])"
            )
        first[item] = index


def field_names(cls: type) -> list[str]:
    """The fields a section's table may set."""
    return [f.name for f in dataclasses.fields(cls) if f.init]
