"""`sim.engine`: one run in a worker, traces shipped as bytes, and the backends' options."""

from __future__ import annotations

import pytest

from quantpipe_core.config import config_from_dict
from quantpipe_core.results import RUN_FILES
from sim.engine import TRACE_CACHE, EngineError, Run, TraceFile, execute, open_engine

CONFIG = config_from_dict({
    "model": {"name": "digits-vit", "cuts": ["block1.out"]},
    "source": {"target_rate": 128.0},
    "run": {"duration_s": 20.0},
})


def test_a_shipped_trace_runs_from_a_local_copy_and_is_recorded_under_the_drivers_path(
        tmp_path):
    trace = tmp_path / "drop.csv"
    trace.write_text("time_s,mbps\n0,2\n10,0.5\n20,2\n")
    run = Run("a", CONFIG, trace, ("summary.json",))
    shipped = execute(run, TraceFile(trace, trace.read_bytes()))
    local = execute(run, trace)
    assert shipped.error is None and shipped.summary is not None
    assert shipped.summary["run"]["traces"]["link0"]["path"] == str(trace)
    assert shipped.summary == local.summary and shipped.files == local.files
    assert list(shipped.files) == ["summary.json"]
    copies = list(TRACE_CACHE.glob("*/drop.csv"))
    assert any(c.read_bytes() == trace.read_bytes() for c in copies)


def test_a_run_that_raises_comes_back_with_its_error_naming_the_drivers_path(tmp_path):
    trace = tmp_path / "broken.csv"
    trace.write_text("time_s,mbps\n0,fast\n")
    outcome = execute(Run("b", CONFIG, trace, RUN_FILES), TraceFile(trace, trace.read_bytes()))
    assert outcome.summary is None and outcome.files == {}
    assert outcome.error.startswith(f"TraceError: {trace}")
    assert str(TRACE_CACHE) not in outcome.error
    assert "Traceback" in outcome.detail


@pytest.mark.parametrize(("backend", "address", "jobs", "message"), [
    ("local", "auto", None, "--address goes with --backend ray"),
    ("local", None, 0, "--jobs must be at least 1"),
])
def test_options_that_do_not_go_together_are_refused(backend, address, jobs, message):
    with pytest.raises(EngineError, match=message):
        open_engine(backend, address, jobs)
