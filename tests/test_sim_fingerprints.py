"""The simulator's outputs stay byte-identical across refactorings (issue 15's contract).

tests/data/sim_fingerprints.json holds the SHA-256 of timeline.csv, windows.csv and summary.json
for every shipped trace x config x built-in online policy. A change that means to alter results
rewrites it with ``python scripts/sim_fingerprints.py --write tests/data/sim_fingerprints.json``
and says why in its commit.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FINGERPRINTS = ROOT / "tests" / "data" / "sim_fingerprints.json"


def load_script():
    spec = importlib.util.spec_from_file_location("sim_fingerprints",
                                                  ROOT / "scripts" / "sim_fingerprints.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_simulator_outputs_are_byte_identical_to_the_recorded_fingerprints(capsys):
    status = load_script().main(["--check", str(FINGERPRINTS)])
    assert status == 0, capsys.readouterr().out
