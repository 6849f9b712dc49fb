"""Writing a config as TOML: the documented defaults (`default_toml`) and any config written
out in full (`to_toml`), both read back by `load_config` to the same config."""

from __future__ import annotations

import json
import textwrap
from collections.abc import Mapping
from dataclasses import fields
from typing import Any

from quantpipe_core.config.read import config_from_dict
from quantpipe_core.config.schema import SECTIONS, Config

LINE_LENGTH = 100  # of `default_toml`'s lines


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
