"""Profile files: named ``MODEL.json``, JSON with a ``schema`` key naming their kind; every codec
scheme a profile measured is a key inside it."""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path
from typing import Any


def profile_stem(model: str) -> str:
    """File name (without ``.json``) of `model`'s profile."""
    return model


def read_profile(path: str | Path, schema: str, kind: str) -> dict[str, Any]:
    """The profile at `path`, refused clearly if unreadable or not of `schema` (`kind` names it)."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise ValueError(f"{path}: cannot read {kind} profile: {error}") from None
    if data.get("schema") != schema:
        raise ValueError(f"{path}: not {'an' if kind[0] in 'aeiou' else 'a'} {kind} profile "
                         f"(schema {data.get('schema')!r})")
    return data


def shipped_path(kind: str, model: str) -> Path | None:
    """The shipped ``kind`` ("accuracy", "compute" or "lossless") profile file of `model`, or
    ``None``."""
    name = f"{profile_stem(model)}.json"
    path = resources.files("quantpipe_core.profiles") / kind / name
    return Path(str(path)) if path.is_file() else None
