"""`python -m sim.report`: the policy-comparison pages from a spec file."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from sim.comparison import (
    against_optimum,
    bootstrap_interval,
    definitions,
    ranking,
    report,
    training_traces,
)
from sim.report import SpecError, pareto, read_spec

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "traces"

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

THREE_STAGES = """
[model]
name = "digits-vit"
cuts = ["block0.out", "block1.out"]

[source]
target_rate = 128.0

[[devices]]
[[devices]]
[[devices]]

[run]
duration_s = 20.0
"""

SPEC = """
policies = ["fixed:2", "quantpipe", "oracle", "optimal"]
train = ["theirs/slow*"]

[folders]
mine = "traces"
theirs = "{shared}/real"

[[pipelines]]
name = "digits"
title = "Digits ViT"
config = "digits.toml"
scales = { mine = 0.1, theirs = 0.5 }

[[pipelines]]
name = "three"
config = "three.toml"
scales = { mine = 0.2, theirs = 1 }

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
    (tmp_path / "three.toml").write_text(THREE_STAGES)
    (tmp_path / "report.toml").write_text(SPEC)
    return tmp_path / "report.toml"


def test_a_spec_reads_its_folders_pipelines_and_scales(spec):
    read = read_spec(spec, spec.parent / "shared")
    assert read.policies == ["fixed:2", "quantpipe", "oracle", "optimal"]
    assert [p.name for p in read.traces("mine")] == ["fast.csv"]
    assert read.trace("slow.csv") == ("theirs", spec.parent / "shared" / "real" / "slow.csv")
    assert read.pipelines[0].scales == {"mine": 0.1, "theirs": 0.5}
    assert read.pipelines[0].config.model.name == "digits-vit"


def test_training_traces_are_named_by_folder_and_glob_and_the_rest_are_held_out(spec):
    read = read_spec(spec, spec.parent / "shared")
    assert read.train == ["theirs/slow*"]
    assert read.training() == [spec.parent / "shared" / "real" / "slow.csv"]
    assert training_traces([Path("a/bus_1"), Path("b/car_2.csv"), Path("c/tram")],
                           ["bus_*", "car_*"]) == {"bus_1", "car_2"}


def test_optimal_runs_only_on_pipelines_of_one_link(spec):
    read = read_spec(spec, spec.parent / "shared")
    digits, three = read.pipelines
    assert read.policies_for(digits) == ["fixed:2", "quantpipe", "oracle", "optimal"]
    assert read.policies_for(three) == ["fixed:2", "quantpipe", "oracle"]


def test_the_shipped_spec_holds_out_every_trace_but_the_norway_bus_car_and_ferry_ones():
    if not SHARED.is_dir():
        pytest.skip("needs ../shared/traces (CI has it; a fresh clone does not)")
    read = read_spec(ROOT / "docs" / "reports" / "report.toml", SHARED)
    assert "optimal" in read.policies and "oracle" in read.policies
    training = read.training()
    assert training and all(p.parent.name == "hsdpa-norway" for p in training)
    assert {p.name.split("_")[1] for p in training} == {"bus", "car", "ferry"}
    held_out = {p for folder in read.folders for p in read.traces(folder)} - set(training)
    assert {"norway_metro_1", "norway_train_2", "norway_tram_1"} <= {p.name for p in held_out}
    assert any(p.parent.name == "mahimahi" for p in held_out)


def test_shared_folders_need_the_shared_argument(spec):
    with pytest.raises(SpecError, match="needs --shared"):
        read_spec(spec, None)
    with pytest.raises(SpecError, match="no such trace folder"):
        read_spec(spec, spec.parent / "nowhere")


@pytest.mark.slow
def test_the_report_ranks_held_out_traces_by_utility_against_the_optimum(spec, tmp_path):
    out, runs = tmp_path / "pages", tmp_path / "runs"
    done = subprocess.run(
        [sys.executable, "-m", "sim.report", str(spec), "--shared", str(tmp_path / "shared"),
         "--out", str(out), "--runs", str(runs), "--jobs", "2"],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, done.stderr
    index = (out / "README.md").read_text()
    assert "Made by `python -m sim.report" in index and "torch" in index
    assert "perfect forecast of the next window" in index
    split = index.split("## Training and held-out traces")[1].split("## Pipelines")[0]
    assert "Training (1 trace; `train` in report.toml: `theirs/slow*`): `theirs`: slow.csv" in split
    assert "Held out (1 trace): `mine`: fast.csv" in split
    assert "### [Digits ViT](digits/README.md)" in index
    assert "mine x0.1, theirs x0.5" in index
    digits = index.split("### [Digits ViT]")[1].split("### [three]")[0]
    held, trained = digits.split("Training traces (1 trace):")
    assert "Mean over 1 held-out trace:" in held
    assert "| rank | policy | utility [95 % CI] | share of optimum | >= 90 % of optimum" in held
    optimal = next(line for line in held.splitlines() if "| optimal |" in line)
    assert optimal.split(" | ")[3] == "1.000"  # its plan reaches its own bound
    assert all(f"| {policy} |" in trained for policy in ("fixed:2", "quantpipe", "optimal"))
    three = index.split("### [three]")[1].split("## Clipping methods")[0]
    assert "`optimal` is not run on this pipeline: with 2 links" in three
    assert "| optimal |" not in three
    clipping = index.split("## Clipping methods")[1].split("## Cross-check")[0]
    assert sum(f"| {m} |" in clipping for m in ("minmax", "aciq", "ds-aciq", "percentile",
                                                 "mse")) == 5
    assert "digits-fast | not run here" in index
    page = (out / "digits" / "README.md").read_text()
    assert "trace scales: `mine` x0.1, `theirs` x0.5" in page
    assert "## Ranking (1 held-out trace)" in page and "## slow.csv (training)" in page
    assert "gap to optimal" in page
    for name in ("fast.png", "slow.png", "scatter.png"):
        assert (out / "digits" / name).stat().st_size > 0
    rows = json.loads((out / "digits" / "results.json").read_text())
    assert len(rows) == 2 * 4 and {r["scale"] for r in rows} == {0.1, 0.5}
    assert {r["trace"] for r in rows if r["training"]} == {"slow"}
    assert all(r["gap_to_optimal"] <= 1e-9 for r in rows)
    assert (runs / "digits" / "fast-quantpipe" / "summary.json").is_file()


def run(trace: str, policy: str, utility: float, bound: float | None = None, *,
        met: float = 1.0, accuracy: float = 0.9) -> dict:
    """A hand-made row of a comparison: what `sim.comparison` reads of a run's summary."""
    row = {"trace": trace, "policy": policy, "utility": {"value": utility},
           "target_met_fraction": met, "expected_accuracy": accuracy, "mean_bits": 4.0}
    if bound is not None:
        row["optimal"] = {"bound": bound, "plan_value": bound}
    return row


def test_the_bootstrap_interval_holds_the_mean_and_is_the_same_every_time():
    values = [0.2, 0.5, 0.9, 0.4, 0.7, 0.1, 0.6]
    low, high = bootstrap_interval(values)
    assert min(values) <= low < sum(values) / len(values) < high <= max(values)
    assert bootstrap_interval(values) == (low, high)
    assert bootstrap_interval(values, seed=1) != (low, high)  # the seed is what fixes it


def test_the_bootstrap_interval_of_equal_values_is_a_point():
    low, high = bootstrap_interval([0.3] * 5)
    assert low == high == pytest.approx(0.3)
    assert bootstrap_interval([-2.0]) == (-2.0, -2.0)
    with pytest.raises(ValueError, match="at least one"):
        bootstrap_interval([])


def test_shares_of_the_optimum_are_taken_against_the_optimal_run_on_the_same_trace():
    rows = against_optimum([
        run("a", "optimal", 0.8, bound=0.8), run("a", "mpc", 0.76),
        run("b", "optimal", 0.39, bound=0.4), run("b", "mpc", 0.2),
        run("c", "optimal", -0.5, bound=-0.5), run("c", "mpc", -1.0),
    ])
    mpc = {r["trace"]: r for r in rows if r["policy"] == "mpc"}
    assert mpc["a"]["share_of_optimum"] == pytest.approx(0.95)
    assert mpc["a"]["gap_to_optimal"] == pytest.approx(-0.04)
    assert mpc["b"]["share_of_optimum"] == pytest.approx(0.5)
    assert mpc["c"]["share_of_optimum"] is None  # a share of a negative optimum means nothing
    assert mpc["c"]["gap_to_optimal"] == pytest.approx(-0.5)
    standing = next(s for s in ranking(rows, ["mpc"]) if s.policy == "mpc")
    assert standing.share_of_optimum == pytest.approx((0.76 + 0.2 - 1.0) / (0.8 + 0.4 - 0.5))
    assert standing.near_optimum == pytest.approx(1 / 2)  # of a and b, only a reaches 90 %


def test_without_an_optimal_run_shares_are_empty_and_the_report_says_why():
    rows = against_optimum([run("a", "mpc", 0.7), run("a", "fixed:2", 0.6)])
    assert all(r["optimum"] is None and r["share_of_optimum"] is None for r in rows)
    assert all(s.share_of_optimum is None and s.near_optimum is None
               for s in ranking(rows, ["mpc", "fixed:2"]))
    for row in rows:
        summarised(row, cuts=["block0.out", "block1.out", "block2.out"])
    text = report(rows, [Path("a.csv")], ["mpc", "fixed:2"], "python -m sim.compare a.csv")
    assert "`optimal` is not run on this pipeline: with 3 links" in text
    assert "| 1 | mpc | 0.7000 [0.7000, 0.7000] |  |  | 1.000 |" in text


def summarised(row: dict, *, cuts: list[str], interval_s: float = 5.0, late: float = 1.0,
               switching: float = 1.0) -> dict:
    """`row` with the rest of a summary that the report's text reads: the run record and the
    utility's settings."""
    row.update(run={"versions": {}, "cuts": cuts,
                    "config": {"run": {"metrics_interval_s": interval_s}}},
               throughput_items_per_s=1.0, latency_p50_s=0.1, latency_p95_s=0.2,
               bits_switches=0)
    row["utility"].update(latency_slo_s=0.5, late_weight=late, switch_weight=switching)
    return row


def test_the_report_states_the_runs_interval_weights_and_slo_not_the_defaults():
    rows = against_optimum([
        summarised(run("a", "mpc", 0.7), cuts=["block1.out"], interval_s=2.0, late=0.5,
                   switching=3.0),
        summarised(run("a", "fixed:2", 0.6), cuts=["block1.out"], interval_s=2.0, late=0.5,
                   switching=3.0),
    ])
    text = report(rows, [Path("a.csv")], ["mpc", "fixed:2"], "python -m sim.compare a.csv")
    assert "share of the intervals of `run.metrics_interval_s` (2 s; first excluded)" in text
    assert "at least 95 % of the target rate" in text  # results.TARGET_MET_SHARE
    assert "each times its weight: late 0.5, switching 3)" in text
    assert "latency SLO (0.50 s)" in text
    assert "5 s" not in text


def test_runs_with_different_intervals_send_the_reader_to_their_summaries():
    rows = against_optimum([
        summarised(run("a", "mpc", 0.7), cuts=["block1.out"], interval_s=2.0),
        summarised(run("b", "mpc", 0.6), cuts=["block1.out"], interval_s=10.0),
    ])
    text = definitions(rows, "given per pipeline below")
    assert "`run.metrics_interval_s` (see each run's summary.json; first excluded)" in text
    assert "latency SLO (given per pipeline below)" in text


def test_policies_rank_by_mean_utility_not_by_target_met():
    rows = against_optimum([
        run("a", "fixed:2", 0.6, met=1.0, accuracy=0.6), run("b", "fixed:2", 0.6, met=1.0),
        run("a", "mpc", 0.9, met=0.8), run("b", "mpc", 0.7, met=0.9),
    ])
    table = ranking(rows, ["fixed:2", "mpc", "absent"])
    assert [s.policy for s in table] == ["mpc", "fixed:2"]
    assert table[0].utility == pytest.approx(0.8)
    assert table[0].interval[0] >= 0.7 and table[0].interval[1] <= 0.9


def test_the_pareto_front_keeps_policies_no_other_beats_on_both_axes():
    table = [("fixed:2", 0.95, 0.57), ("oracle", 0.95, 0.87), ("optimal", 0.99, 0.99),
             ("mpc", 0.94, 0.82), ("quantpipe", 0.91, 0.87), ("fixed:32", 0.05, 1.0),
             ("none", None, 0.5)]
    assert pareto(table) == {"fixed:2", "mpc", "quantpipe", "fixed:32"}  # oracle, optimal aside


@pytest.mark.parametrize(("change", "message"), [
    (('config = "digits.toml"', ""), r"pipelines\[0\]: needs 'config'"),
    (('trace = "slow.csv"', 'trace = "fast.cvs"'), "no trace named 'fast.cvs'"),
    (('pipeline = "digits"', 'pipeline = "digit"'), "no pipeline named 'digit'"),
    (('"fixed:2"', '"fixed:5"'), "policies: .*5 bits"),
    (('args = "traces/fast.csv --config digits.toml"', ""), r"crosscheck\[0\]: needs 'args'"),
    (("policies =", "polices ="), "polices: unknown key 'polices'; did you mean 'policies'"),
    (("train =", "training ="), "unknown key 'training'; did you mean 'train'"),
    (('title = "Digits ViT"', 'tilte = "Digits ViT"'),
     r"pipelines\[0\].tilte: unknown key 'tilte'; did you mean 'title'"),
    (("scales = { mine = 0.1", "scale = { mine = 0.1"), "did you mean 'scales'"),
    (("scales = { mine = 0.1", "scales = { mien = 0.1"),
     r"pipelines\[0\].scales.mien: unknown trace folder 'mien'; did you mean 'mine'"),
    (('policies = ["quantpipe"]', 'policy = ["quantpipe"]'),
     r"clipping\[0\].policy: unknown key 'policy'; did you mean 'policies'"),
    (('name = "digits-fast"', 'name = "digits-fast"\ncommand = "x"'),
     r"crosscheck\[0\].command: unknown key 'command' \(known: name, args\)$"),
    (('"theirs/slow*"', '"their/slow*"'), "does not start with a trace folder.*'theirs'"),
    (('"theirs/slow*"', '"theirs/fast*"'), r"train\[0\]: no trace matches 'theirs/fast\*'"),
    (("[[crosscheck]]", "[crosscheck]"),
     r"crosscheck: expected an array of tables \(\[\[crosscheck\]\]\)"),
    (("scales = { mine = 0.1", "scales = { mine = 'x'"),
     r'pipelines\[0\].scales.mine: expected a number, got string "x"'),
    (("scales = { mine = 0.1", "scales = { mine = -1"),
     r"pipelines\[0\].scales.mine: must be > 0, got -1"),
    (("scales = { mine = 0.2, theirs = 1 }", "scales = 2"),
     r"pipelines\[1\].scales: expected a table, got integer 2"),
    (('mine = "traces"', "mine = 3"), "folders.mine: expected a string, got integer 3"),
])
def test_a_spec_that_cannot_run_is_refused_with_the_field_named(spec, change, message):
    assert change[0] in spec.read_text()
    spec.write_text(spec.read_text().replace(*change))
    with pytest.raises(SpecError, match=message):
        read_spec(spec, spec.parent / "shared")


@pytest.mark.slow
def test_a_refused_spec_stops_the_command_before_anything_runs(spec):
    spec.write_text(spec.read_text().replace("policies =", "polices ="))
    done = subprocess.run(
        [sys.executable, "-m", "sim.report", str(spec), "--shared", str(spec.parent / "shared"),
         "--out", str(spec.parent / "pages")],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 2 and done.stderr.startswith("sim.report: ")
    assert "did you mean 'policies'" in done.stderr
    assert "Traceback" not in done.stderr and not (spec.parent / "pages").exists()


def report_refuses(argv: list[str], capsys) -> str:
    """The one line `sim.report` printed on refusing `argv` with exit status 2."""
    from sim.report import main

    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and "\n" not in err.strip(), err
    return err.strip()


@pytest.mark.parametrize(("content", "message"), [
    (b"\x87\xff binary \x00", "not valid TOML: 'utf-8' codec can't decode"),
    (b"", "no [[pipelines]]: a report needs at least one"),
])
def test_a_binary_or_empty_spec_is_named_in_one_line(tmp_path, capsys, content, message):
    spec = tmp_path / "report.toml"
    spec.write_bytes(content)
    line = report_refuses([str(spec), "--out", str(tmp_path / "pages")], capsys)
    assert line.startswith(f"sim.report: {spec}: ") and message in line
    assert not (tmp_path / "pages").exists()


def test_only_a_pipeline_of_the_spec(spec, capsys):
    line = report_refuses([str(spec), "--shared", str(spec.parent / "shared"), "--only", "digit",
                           "--out", str(spec.parent / "pages")], capsys)
    assert line == (f"sim.report: --only: {spec}: no pipeline named 'digit'; did you mean "
                    "'digits'? (known: digits, three)")


@pytest.mark.parametrize("jobs", ["0", "-1"])
def test_jobs_must_be_at_least_one(spec, capsys, jobs):
    line = report_refuses([str(spec), "--shared", str(spec.parent / "shared"), "--jobs", jobs,
                           "--out", str(spec.parent / "pages")], capsys)
    assert line == "sim.report: --jobs must be at least 1"


@pytest.mark.parametrize("option", ["--out", "--runs"])
def test_an_out_or_runs_folder_that_is_a_file_is_refused_before_any_run(spec, capsys, option):
    from sim.report import main

    taken = spec.parent / "taken"
    taken.write_text("a file\n")
    with pytest.raises(SystemExit) as exit_info:
        main([str(spec), "--shared", str(spec.parent / "shared"),
              "--out", str(spec.parent / "pages"), option, str(taken)])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and "\n" not in err.strip()
    assert f"argument {option}: {taken} exists and is not a folder" in err


@pytest.mark.slow
def test_traces_sharing_a_file_name_in_two_folders_keep_their_own_rows(tmp_path):
    """Each folder's comparison names its traces as the whole report does (``mine-t`` and
    ``theirs-t``), so neither row is lost nor matched to the other trace's optimum."""
    trace(tmp_path / "mine" / "t.csv", 20.0)
    trace(tmp_path / "theirs" / "t.csv", 4.0)
    (tmp_path / "digits.toml").write_text(PIPELINE)
    (tmp_path / "report.toml").write_text(
        'policies = ["fixed:2", "optimal"]\ntrain = ["theirs/t*"]\n'
        '[folders]\nmine = "mine"\ntheirs = "theirs"\n'
        '[[pipelines]]\nname = "digits"\nconfig = "digits.toml"\n'
        'scales = { mine = 0.1, theirs = 0.1 }\n'
    )
    out = tmp_path / "pages"
    done = subprocess.run(
        [sys.executable, "-m", "sim.report", str(tmp_path / "report.toml"), "--out", str(out),
         "--runs", str(tmp_path / "runs"), "--jobs", "1"],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, done.stderr
    rows = json.loads((out / "digits" / "results.json").read_text())
    assert sorted({(r["trace"], r["training"]) for r in rows}) == [("mine-t", False),
                                                                  ("theirs-t", True)]
    assert all(r["optimum"] is not None for r in rows)


def test_the_clipping_table_takes_encode_times_from_the_sending_devices_profile():
    from quantpipe_core.config import config_from_dict
    from quantpipe_core.profiles import shipped_compute_profile
    from sim.report import clipping_section, encode_ms

    config = config_from_dict({"model": {"name": "digits-vit", "microbatch": 4},
                               "quant": {"clip": "mse", "allowed_bits": [2, 4]}})
    profiled = shipped_compute_profile("digits-vit").encode_s(
        "block1.out", "mse/hadamard/auto", 4, 4)
    assert encode_ms(config, ["block1.out"]) == pytest.approx(1000 * profiled)
    faster = config.replace(**{"devices.0.speed": 2.0})
    assert encode_ms(faster, ["block1.out"]) == pytest.approx(500 * profiled)
    assert encode_ms(config, []) is None  # one stage: nothing is encoded
    row = {"pipeline": "Digits", "trace": "t", "scale": 1.0, "policy": "quantpipe",
           "method": "mse", "encode_ms": 1.234, "expected_accuracy": None, "mean_bits": 4.0,
           "target_met_fraction": 1.0}
    table = "\n".join(clipping_section([row, dict(row, encode_ms=None)]))
    assert "| Digits | t x1 | quantpipe | mse | 1.23 | n/a | 4.00 | 1.000 |" in table
    assert "| Digits | t x1 | quantpipe | mse | n/a | n/a | 4.00 | 1.000 |" in table


def test_pipelines_that_differ_only_in_lossless_coding_are_compared_per_folder(spec):
    """A pipeline whose config adds `[quant] lossless` to another's, on the same scales, is its
    coded twin; the index compares each policy's held-out mean utility per folder."""
    from sim.report import lossless_section, lossless_twins

    (spec.parent / "coded.toml").write_text(PIPELINE + '\n[quant]\nlossless = "zstd"\n')
    spec.write_text(spec.read_text() + """
[[pipelines]]
name = "digits-zstd"
config = "coded.toml"
scales = { mine = 0.1, theirs = 0.5 }

[[pipelines]]
name = "digits-zstd-faster"
config = "coded.toml"
scales = { mine = 0.2, theirs = 0.5 }
""")
    read = read_spec(spec, spec.parent / "shared")
    assert [(a.name, b.name) for a, b in lossless_twins(read)] == [("digits", "digits-zstd")]

    def rows(utility):
        return [{"policy": policy, "folder": folder, "training": training, "utility_value": u}
                for policy in read.policies for folder, training, u in (
                    ("mine", False, utility), ("theirs", False, utility + 1),
                    ("theirs", True, 99.0))]

    text = "\n".join(lossless_section(read, {"digits": rows(0.5), "digits-zstd": rows(0.75)}))
    assert "`digits` -> `digits-zstd`" in text
    assert "| fixed:2 | 0.500 -> 0.750 | 1.500 -> 1.750 | 1.000 -> 1.250 |" in text
    assert lossless_section(read, {"digits": rows(0.5)}) == []  # the twin did not run
