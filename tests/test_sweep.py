"""`python -m sim.sweep`: the grid of a spec, local and Ray backends, failures, resume, and
`sim.compare` on Ray."""

from __future__ import annotations

import csv
import os
import re
import subprocess
import sys
from contextlib import closing
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from sim import compare, sweep
from sim.engine import LocalEngine, RayEngine
from sim.grid import read_grid

pytestmark = pytest.mark.slow  # runs sweeps, many on a local Ray instance

ROOT = Path(__file__).resolve().parents[1]
TRACES = ROOT / "traces"

SPEC = f"""
config = "{ROOT / 'configs' / 'reports' / 'digits-vit.toml'}"
traces = [{{path = "{TRACES}/step-drop.csv", scale = 0.1}},
          {{path = "{TRACES}/*[fp].csv", scale = 0.1}}]
policies = ["fixed:4", "quantpipe", {{name = "mpc", label = "robust"}}]

[set]
"run.duration_s" = 20

[axes]
"model.microbatch" = [4, 8]
"""


@pytest.fixture(scope="module")
def ray_instance():
    """A Ray of 2 CPUs started here for this module's tests, never an outside cluster."""
    import ray

    with pytest.MonkeyPatch.context() as patch:
        patch.delenv("RAY_ADDRESS", raising=False)
        ray.init(address="local", num_cpus=2, include_dashboard=False)
        yield ray
        ray.shutdown()


@pytest.fixture
def spec(tmp_path) -> Path:
    path = tmp_path / "spec.toml"
    path.write_text(SPEC)
    return path


def run(spec: Path, out: Path, engine, **options) -> sweep.Tally:
    return sweep.sweep(read_grid(spec), engine, out, progress=False, **options)


def local() -> closing[LocalEngine]:
    return closing(LocalEngine(jobs=2))


def test_the_grid_is_traces_by_policies_by_axis_values(spec):
    grid = read_grid(spec)
    points = list(grid.points())
    assert len(grid) == len(points) == 3 * 3 * 2
    assert [p.params["trace"] for p in points[:7:6]] == ["step-drop", "on-off"]
    assert [p.params["policy"] for p in points[:6]] == ["fixed:4"] * 2 + ["quantpipe"] * 2 + [
        "robust"] * 2
    assert points[1].params["model.microbatch"] == 8 and points[1].config.model.microbatch == 8
    assert points[0].config.links[0].scale == 0.1 and points[0].config.run.duration_s == 20
    assert len({p.key for p in points}) == 18


def test_local_and_ray_give_identical_tables(spec, tmp_path, ray_instance):
    with local() as engine_local:
        tally = run(spec, tmp_path / "local", engine_local, keep="summary")
    engine_ray = RayEngine(address=None, jobs=2)
    run(spec, tmp_path / "ray", engine_ray, keep="summary")
    engine_ray.close()
    assert tally.runs == tally.ran == 18 and tally.failed == 0
    table = pq.read_table(tmp_path / "local" / "results.parquet")
    assert table.equals(pq.read_table(tmp_path / "ray" / "results.parquet"))
    csv = (tmp_path / "local" / "results.csv").read_text()
    assert csv == (tmp_path / "ray" / "results.csv").read_text()
    columns = {"trace", "scale", "policy", "model.microbatch", "target_met_fraction", "error",
               "key"}
    assert table.num_rows == 18 and columns <= set(table.schema.names)
    key = table.column("key")[0].as_py()
    for name in ("summary.json", "windows.csv"):
        mine = (tmp_path / "local" / "runs" / key / name).read_bytes()
        assert mine == (tmp_path / "ray" / "runs" / key / name).read_bytes()


@pytest.mark.parametrize("backend", ["local", "ray"])
def test_a_run_that_raises_is_recorded_and_the_others_finish(spec, tmp_path, backend, request):
    broken = tmp_path / "broken.csv"
    broken.write_text("time_s,mbps\n0,fast\n")
    spec.write_text(SPEC.replace("traces = [", f'traces = ["{broken}", '))
    if backend == "ray":
        request.getfixturevalue("ray_instance")
    engine = LocalEngine(jobs=2) if backend == "local" else RayEngine(address=None, jobs=2)
    tally = run(spec, tmp_path / "out", engine)
    engine.close()
    rows = pq.read_table(tmp_path / "out" / "results.parquet").to_pylist()
    assert tally.runs == 24 and tally.failed == 6
    failed = [r for r in rows if r["error"]]
    assert {r["trace"] for r in failed} == {"broken"}
    assert all(r["error"].startswith(f"TraceError: {broken}") for r in failed)
    assert all(r["target_met_fraction"] is None for r in failed)
    assert all(r["items_completed"] > 0 for r in rows if not r["error"])
    assert "Traceback" in (tmp_path / "out" / "errors.txt").read_text()


def test_resume_reruns_nothing_after_a_finished_sweep_and_only_the_missing_runs_after_a_partial_one(
        spec, tmp_path):
    out = tmp_path / "out"
    with local() as engine:
        run(spec, out, engine)
        table = (out / "results.csv").read_text()
        again = run(spec, out, engine, resume=True)
        assert (again.ran, again.skipped) == (0, 18)
        journal = (out / "journal.jsonl").read_text().splitlines()
        (out / "journal.jsonl").write_text("\n".join(journal[:11]) + "\n" + journal[11][:30])
        partial = run(spec, out, engine, resume=True)
    assert (partial.ran, partial.skipped) == (7, 11)
    assert (out / "results.csv").read_text() == table


def test_keep_runs_decides_which_files_each_run_leaves(spec, tmp_path):
    spec.write_text(SPEC.replace(f'{{path = "{TRACES}/*[fp].csv", scale = 0.1}}', ""))
    with local() as engine:
        for keep in ("none", "all"):
            run(spec, tmp_path / keep, engine, keep=keep)
    assert not (tmp_path / "none" / "runs").exists()
    folders = list((tmp_path / "all" / "runs").iterdir())
    assert len(folders) == 6
    assert sorted(p.name for p in folders[0].iterdir()) == [
        "plot.png", "summary.json", "timeline.csv", "windows.csv"]


def test_the_command_refuses_to_mix_a_new_sweep_into_an_old_one(spec, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "journal.jsonl").write_text("")
    assert sweep.main([str(spec), "--out", str(out), "--jobs", "1"]) == 2
    assert "--resume continues it" in capsys.readouterr().err


@pytest.mark.parametrize(("change", "message"), [
    (("[axes]", "[axis]"), "spec.toml: axis: unknown key 'axis'; did you mean 'axes'?"),
    (('"model.microbatch"', '"model.microbtch"'),
     r'axes\."model\.microbtch"\[0\]: unknown field \'microbtch\'; did you mean \'microbatch\'\?'),
    (('"model.microbatch" = [4, 8]', '"quant.clip" = ["aciq", "acq"]'),
     r'axes\."quant\.clip"\[1\]: \'acq\' is not one of .*; did you mean \'aciq\'\?'),
    (('"model.microbatch" = [4, 8]', '"model.microbatch" = []'),
     r'axes\."model\.microbatch": expected a non-empty array'),
    (('"fixed:4"', '"greedy"'), r"policies\[0\]: policy.name: 'greedy' is not one of"),
    (('"fixed:4"', '"fixed:5"'), r"policies\[0\]: .*5 bits, which is not in quant.allowed_bits"),
    (('label = "robust"', 'label = "quantpipe"'), r"policies\[2\]: 'quantpipe' is already"),
    (("*[fp].csv", "nothing/*.csv"), r"traces\[1\]: '.*nothing/\*\.csv' matches no trace file"),
    (("scale = 0.1}]", "scale = -1}]"), r"traces\[1\]\.scale: .*must be > 0"),
    (('"model.microbatch"', '"links.*.scale"'), "give the scale in one place only"),
    (('"run.duration_s" = 20', '"run.duraton_s" = 20'),
     r'set\."run\.duraton_s": unknown field .*did you mean \'duration_s\'\?'),
])
def test_a_bad_spec_gets_a_clear_error_naming_its_key(spec, tmp_path, capsys, change, message):
    assert change[0] in SPEC
    spec.write_text(SPEC.replace(*change))
    assert sweep.main([str(spec), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("sim.sweep: ") and re.search(message, err), err
    assert not (tmp_path / "out").exists()


def test_a_combination_the_config_refuses_is_recorded_as_failed(spec, tmp_path):
    spec.write_text(SPEC.replace('"model.microbatch" = [4, 8]', (
        '"model.partition" = ["manual", "auto"]\n"model.cuts" = [[], ["block0.out"]]'
    )).replace('"run.duration_s" = 20', '"run.duration_s" = 20\n"model.cuts" = []'))
    with local() as engine:
        tally = run(spec, tmp_path / "out", engine)
    rows = pq.read_table(tmp_path / "out" / "results.parquet").to_pylist()
    assert (tally.runs, tally.ran, tally.failed) == (36, 27, 9)
    refused = [r for r in rows if r["model.partition"] == "auto" and r["model.cuts"] != "[]"]
    assert len(refused) == 9 and all(
        r["error"].startswith('ConfigError: model.cuts: partition = "auto" picks the cuts')
        for r in refused)
    assert all(r["error"] is None for r in rows if r not in refused)


@pytest.mark.parametrize("module", ["sim.sweep", "sim.compare", "sim.report"])
def test_help_names_the_backends(module):
    done = subprocess.run([sys.executable, "-m", module, "--help"], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and "--backend {local,ray}" in done.stdout
    assert "--address" in done.stdout


def test_the_command_starts_its_own_local_ray_and_matches_the_local_backend(spec, tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    for backend in ("local", "ray"):
        done = subprocess.run(
            [sys.executable, "-m", "sim.sweep", str(spec), "--backend", backend, "--jobs", "2",
             "--out", str(tmp_path / backend)],
            cwd=ROOT, capture_output=True, text=True, timeout=300, env=env,
        )
        assert done.returncode == 0, done.stderr
        assert "18 runs: 18 simulated, 0 already in the journal, 0 failed" in done.stdout
    assert (tmp_path / "local" / "results.csv").read_text() == (
        tmp_path / "ray" / "results.csv").read_text()


def test_compare_on_ray_writes_what_it_writes_locally(tmp_path, ray_instance):
    argv = [str(TRACES / "step-drop.csv"), "--policies", "fixed:4,quantpipe,oracle",
            "--duration", "40", "--jobs", "2"]
    assert compare.main([*argv, "--out", str(tmp_path / "local")]) == 0
    assert compare.main([*argv, "--backend", "ray", "--out", str(tmp_path / "ray")]) == 0
    for name in ("results.csv", "step-drop-oracle/summary.json", "step-drop-fixed4/windows.csv",
                 "step-drop-quantpipe/timeline.csv"):
        assert (tmp_path / "local" / name).read_text() == (tmp_path / "ray" / name).read_text()


def test_the_guides_example_sweep_and_analysis_run(tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)
    guide = (ROOT / "docs" / "sweeps.md").read_text()
    command = re.search(r"```sh\n(\.venv/bin/python -m sim\.sweep configs/sweeps/example\.toml"
                        r"[^\n]*)\n", guide).group(1)
    assert sweep.main([*command.split()[3:], "--out", str(tmp_path / "example")]) == 0
    analysis = re.search(r"```python\n(.*?)```", guide, flags=re.S).group(1)
    analysis = analysis.replace("runs/example/", f"{tmp_path}/example/")
    subprocess.run([sys.executable, "-c", analysis], check=True, cwd=tmp_path, timeout=120)
    assert (tmp_path / "sweep.png").stat().st_size > 0


def test_compare_keeps_both_traces_that_share_a_file_name(tmp_path):
    for folder, mbps in (("a", 3), ("b", 30)):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "t.csv").write_text(f"time_s,mbps\n0,{mbps}\n10,{mbps}\n")
    out = tmp_path / "cmp"
    argv = [str(tmp_path / "a" / "t.csv"), str(tmp_path / "b" / "t.csv"), "--policies",
            "quantpipe", "--config", str(ROOT / "configs" / "reports" / "digits-vit.toml"),
            "--duration", "10", "--jobs", "2", "--out", str(out)]
    assert compare.main(argv) == 0
    with (out / "results.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert [r["trace"] for r in rows] == ["a-t", "b-t"]
    assert rows[0]["latency_p50_s"] != rows[1]["latency_p50_s"]  # two runs, not one twice
    assert (out / "a-t-quantpipe" / "summary.json").is_file()
    assert (out / "b-t-quantpipe" / "summary.json").is_file()
    report = (out / "report.md").read_text()
    assert "## a-t.csv" in report and "## b-t.csv" in report
    assert (out / "a-t.png").is_file() and (out / "b-t.png").is_file()


def test_compare_refuses_empty_policies_and_a_trace_given_twice(tmp_path, capsys):
    trace = str(TRACES / "step-drop.csv")
    assert compare.main([trace, "--policies", "", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err == "sim.compare: --policies is empty: give at least one policy, e.g. quantpipe,mpc\n"
    with pytest.raises(SystemExit) as exit_info:
        compare.main([trace, trace, "--out", str(tmp_path)])
    assert exit_info.value.code == 2
    assert f"trace {trace} is given twice" in capsys.readouterr().err
