"""The names and limits every part shares are written once, in quantpipe_core/names.py.

These read the source: a second copy of the bitwidth rule or of a list of names is exactly what
drifts unnoticed (issue 15 found the rule in six places), so the test is that it is not there.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from quantpipe_core import names

ROOT = Path(__file__).resolve().parents[1]
SOURCES = sorted(p for folder in ("quantpipe_core", "sim", "emulation", "benchmarks", "scripts")
                 for p in (ROOT / folder).rglob("*.py"))
HOME = ROOT / "quantpipe_core" / "names.py"


def code_lines(path: Path) -> list[tuple[int, str]]:
    """(number, line) of the lines that are code, not comments."""
    return [(n, line) for n, line in enumerate(path.read_text().splitlines(), 1)
            if line.strip() and not line.lstrip().startswith("#")]


def occurrences(pattern: str) -> list[str]:
    found = []
    for path in SOURCES:
        if path == HOME:
            continue
        for number, line in code_lines(path):
            if re.search(pattern, line):
                found.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()}")
    return found


@pytest.mark.parametrize("constant", ["FLOAT_BITS", "MIN_BITS", "MAX_BITS"])
def test_the_bitwidth_limits_are_defined_once(constant):
    assert occurrences(rf"^\s*{constant}\s*[:=]") == []


def test_the_bitwidth_rule_is_not_written_out_again():
    assert occurrences(r"<=\s*16\b|==\s*32\b|\b1\.\.16 or 32\b|\(1, 16\)") == []


@pytest.mark.parametrize("listed", [
    tuple(names.CLIP_METHODS), names.TRANSFORMS, names.GRANULARITIES, names.BUILTIN_MODELS,
    names.TRACE_FORMATS[1:],
], ids=["clipping methods", "transforms", "granularities", "built-in models", "trace formats"])
def test_no_list_of_names_is_copied_by_hand(listed):
    whole = r",\s*".join(re.escape(f'"{name}"') for name in listed)
    assert occurrences(rf"[(\[]\s*{whole}\s*,?\s*[)\]]") == []


def test_the_names_load_without_torch():
    code = ("import sys; import quantpipe_core.names; "
            "assert 'torch' not in sys.modules, 'torch was imported'")
    subprocess.run([sys.executable, "-c", code], check=True)
