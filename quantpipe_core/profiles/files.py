"""Profile files: named ``MODEL.json``, JSON with a ``schema`` key naming their kind; every codec
scheme a profile measured is a key inside it."""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, ClassVar, Self


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


def write_profile(data: dict[str, Any], out: Path, command: str,
                  argv: Sequence[str] | None) -> Path:
    """Write `data` as ``out/MODEL.json``, with the command line that made it (`command` and
    the arguments, `argv` or the process's), and say so; the path written."""
    data["command"] = f"{command} " + " ".join(sys.argv[1:] if argv is None else argv)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{profile_stem(data['model'])}.json"
    path.write_text(json.dumps(data, indent=1) + "\n")
    print(f"wrote {path}")
    return path


@dataclass(frozen=True)
class DeviceProfile:
    """A measured profile whose times divide by a device's ``speed`` (2: twice as fast as the
    profiling machine). Subclasses name their file's schema and kind."""

    SCHEMA: ClassVar[str]
    KIND: ClassVar[str]

    data: dict[str, Any]
    speed: float = 1.0

    @classmethod
    def from_file(cls, path: str | Path, speed: float = 1.0) -> Self:
        return cls(read_profile(path, cls.SCHEMA, cls.KIND), speed)

    def scaled(self, speed: float) -> Self:
        """The same profile on a device `speed` times as fast as the profiling machine."""
        if not speed > 0:
            raise ValueError(f"device speed must be positive, got {speed}")
        return type(self)(self.data, self.speed * speed)

    @property
    def model(self) -> str:
        return self.data["model"]
