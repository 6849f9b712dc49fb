"""`python -m sim.report`: the policy-comparison pages from a spec file."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from sim.report import SpecError, pareto, read_spec

ROOT = Path(__file__).resolve().parents[1]

PIPELINE = """
[model]
name = "digits-vit"
cuts = ["block1.out"]

[source]
target_rate = 128.0

[[devices]]
[[devices]]

[run]
duration_s = 20.0
"""

SPEC = """
policies = ["fixed:2", "quantpipe", "oracle"]

[folders]
mine = "traces"
theirs = "{shared}/real"

[[pipelines]]
name = "digits"
title = "Digits ViT"
config = "digits.toml"
scales = { mine = 0.1, theirs = 0.5 }

[[clipping]]
pipeline = "digits"
trace = "slow.csv"
policies = ["quantpipe"]

[[crosscheck]]
name = "digits-fast"
args = "traces/fast.csv --config digits.toml"
"""


def trace(path: Path, mbps: float) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"time_s,mbps\n0,{mbps}\n10,{mbps / 4}\n20,{mbps}\n")


@pytest.fixture
def spec(tmp_path) -> Path:
    trace(tmp_path / "traces" / "fast.csv", 20.0)
    trace(tmp_path / "shared" / "real" / "slow.csv", 4.0)
    (tmp_path / "digits.toml").write_text(PIPELINE)
    (tmp_path / "report.toml").write_text(SPEC)
    return tmp_path / "report.toml"


def test_a_spec_reads_its_folders_pipelines_and_scales(spec):
    read = read_spec(spec, spec.parent / "shared")
    assert read.policies == ["fixed:2", "quantpipe", "oracle"]
    assert [p.name for p in read.traces("mine")] == ["fast.csv"]
    assert read.trace("slow.csv") == ("theirs", spec.parent / "shared" / "real" / "slow.csv")
    assert read.pipelines[0].scales == {"mine": 0.1, "theirs": 0.5}
    assert read.pipelines[0].config.model.name == "digits-vit"


def test_shared_folders_need_the_shared_argument(spec):
    with pytest.raises(SpecError, match="needs --shared"):
        read_spec(spec, None)
    with pytest.raises(SpecError, match="no such trace folder"):
        read_spec(spec, spec.parent / "nowhere")


def test_the_report_has_a_page_per_pipeline_the_ranking_clipping_and_crosscheck(spec, tmp_path):
    out, runs = tmp_path / "pages", tmp_path / "runs"
    done = subprocess.run(
        [sys.executable, "-m", "sim.report", str(spec), "--shared", str(tmp_path / "shared"),
         "--out", str(out), "--runs", str(runs), "--jobs", "1"],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, done.stderr
    index = (out / "README.md").read_text()
    assert "Made by `python -m sim.report" in index and "torch" in index
    assert "### [Digits ViT](digits/README.md)" in index
    assert "mine x0.1, theirs x0.5" in index
    ranking = index.split("### [Digits ViT]")[1].split("![digits]")[0]
    assert all(f"| {policy} |" in ranking for policy in ("fixed:2", "quantpipe", "oracle"))
    clipping = index.split("## Clipping methods")[1].split("## Cross-check")[0]
    assert sum(f"| {m} |" in clipping for m in ("minmax", "aciq", "ds-aciq", "percentile",
                                                 "mse")) == 5
    assert "digits-fast | not run here" in index
    page = (out / "digits" / "README.md").read_text()
    assert "trace scales: `mine` x0.1, `theirs` x0.5" in page
    for name in ("fast.png", "slow.png", "scatter.png"):
        assert (out / "digits" / name).stat().st_size > 0
    rows = json.loads((out / "digits" / "results.json").read_text())
    assert len(rows) == 2 * 3 and {r["scale"] for r in rows} == {0.1, 0.5}
    assert (runs / "digits" / "fast-quantpipe" / "summary.json").is_file()


def test_the_pareto_front_keeps_policies_no_other_beats_on_both_axes():
    table = [("fixed:2", 0.95, 0.57), ("oracle", 0.95, 0.87), ("mpc", 0.94, 0.82),
             ("quantpipe", 0.91, 0.87), ("fixed:32", 0.05, 1.0), ("none", None, 0.5)]
    assert pareto(table) == {"fixed:2", "mpc", "quantpipe", "fixed:32"}  # the oracle aside


@pytest.mark.parametrize(("change", "message"), [
    (('config = "digits.toml"', ""), r"pipelines\[0\] needs 'config'"),
    (('trace = "slow.csv"', 'trace = "fast.cvs"'), "no trace named 'fast.cvs'"),
    (('pipeline = "digits"', 'pipeline = "digit"'), "no pipeline named 'digit'"),
    (('"fixed:2"', '"fixed:5"'), "policies: .*5 bits"),
    (('args = "traces/fast.csv --config digits.toml"', ""), r"crosscheck\[0\] needs 'args'"),
])
def test_a_spec_that_cannot_run_is_refused_before_anything_runs(spec, change, message):
    spec.write_text(spec.read_text().replace(*change))
    with pytest.raises(SpecError, match=message):
        read_spec(spec, spec.parent / "shared")
    done = subprocess.run(
        [sys.executable, "-m", "sim.report", str(spec), "--shared", str(spec.parent / "shared"),
         "--out", str(spec.parent / "pages")],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 2 and done.stderr.startswith("sim.report: ")
    assert "Traceback" not in done.stderr and not (spec.parent / "pages").exists()
