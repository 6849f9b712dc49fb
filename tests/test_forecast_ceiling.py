"""The forecast-ceiling diagnostic (benchmarks/forecast_ceiling.py): the planner told the true
rate of its next windows is a policy like any other, which the offline optimum bounds, and the
knowledge shows in its utility."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from quantpipe_core.config import load_config
from sim import simulate

ROOT = Path(__file__).parents[1]
TRACE = ROOT / "traces" / "step-drop.csv"


def utility_of(policy: str, params: dict) -> dict:
    config = load_config(ROOT / "configs" / "reports" / "vit-base-2.toml").replace(**{
        "links.*.scale": 1.0, "policy.name": policy, "policy.params": params})
    return simulate(config, TRACE).summary


def test_the_planner_told_the_next_windows_beats_the_planner_and_stays_under_the_optimum(
        monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    told = utility_of("forecast_ceiling:PerfectForecast",
                      {"trace": str(TRACE), "scale": 1.0, "known": 2})["utility"]["value"]
    planner = utility_of("planner", {})["utility"]["value"]
    bound = utility_of("optimal", {})["optimal"]["bound"]
    assert planner + 0.03 < told <= bound


@pytest.mark.parametrize(("args", "message"), [
    (["--known", "0"], "each count must be 1 to 5"),
    (["--known", "2,x"], "not whole numbers"),
    ([], "no such trace folder"),  # the report's spec names folders this one lacks
])
def test_the_diagnostic_refuses_bad_arguments_saying_which(tmp_path, args, message):
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "forecast_ceiling.py"),
                           "--shared", str(tmp_path), *args],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert message in done.stderr and "Traceback" not in done.stderr


def test_the_diagnostic_refuses_a_shared_folder_that_is_not_there(tmp_path):
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "forecast_ceiling.py"),
                           "--shared", str(tmp_path / "missing")],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "no such folder" in done.stderr
