"""Tiny inputs must not ask for huge memory or endless runs: every allocation proportional to an
option is budgeted before it is made, traces are held compactly, and long runs are refused or
announced (issue 14, defects 8, 9 and 15)."""

from __future__ import annotations

import re
import time
import tracemalloc
from pathlib import Path

import numpy as np
import pytest

import quantpipe_core.sender as sender_module
import sim.pipeline as pipeline_module
from quantpipe_core import trace_generators as gen
from quantpipe_core.config import load_config
from quantpipe_core.plan import LinkSpec, SourceSpec, StageSpec
from quantpipe_core.policy import FixedPolicy
from quantpipe_core.quant import wire_size
from quantpipe_core.results import RunInfo, target_met_fraction, write_results
from quantpipe_core.sender import SlowPolicyWarning
from quantpipe_core.trace import Trace, TraceError, load_trace, write_trace
from sim.pipeline import Pipeline, RunSizeError, RunSizeWarning, check_run_size
from sim.simulation import simulate

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "reports" / "digits-vit.toml"
SHAPE = (8, 197, 768)
PACKET = {b: wire_size(SHAPE, b) for b in (8, 32)}


def test_a_15_byte_mahimahi_file_ending_at_3e9_ms_holds_a_few_segments(tmp_path):
    path = tmp_path / "t.up"
    path.write_text("1\n2\n3000000000\n")
    tracemalloc.start()
    trace = load_trace(path, floor_mbps=0)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 1_000_000  # was a 22 GiB per-millisecond array
    assert trace.duration_s == 3e6
    assert trace.segments() == [(0.0, 12.0), (0.002, 0.0), (2999999.999, 12.0)]
    assert trace.hold_mbps == pytest.approx(12 / 1000)


def test_bins_beyond_the_budget_are_refused_before_allocation_naming_the_option():
    with pytest.raises(TraceError, match=r"bin_s = 1e-09 over 60 s makes 6e\+10 steps "
                                         r"\(~2\.18 TiB of memory\).*use bin_s >= 1\.2e-06"):
        Trace.from_segments([0, 30], [40, 8], 60, bin_s=1e-9)
    with pytest.raises(TraceError, match="bin_s = 1e-09"):
        Trace.from_segments([0, 30], [40, 8], 60).bin_means(1e-9)


@pytest.mark.parametrize(("make", "message"), [
    (lambda: gen.random_walk(step_s=1e-9), "step_s = 1e-09 over duration_s = 300"),
    (lambda: gen.ramp(duration_s=1e15), r"step_s = 1 over duration_s = 1e\+15 .* PiB"),
    (lambda: gen.on_off(period_s=1e-9, off_s=1e-10, step_s=60), "period_s = 1e-09"),
    (lambda: gen.like(gen.ramp(), duration_s=10, step_s=1e-6), "over the real trace's 120 s"),
])
def test_generators_refuse_a_tiny_step_or_a_huge_duration_before_allocating(make, message):
    with pytest.raises(ValueError, match=message):
        make()


def test_writing_a_long_trace_as_mahimahi_is_refused_before_allocating(tmp_path):
    trace = Trace.from_segments([0], [10], 1e12)
    with pytest.raises(TraceError, match=re.escape("a 1e+12 s trace in 1 ms Mahimahi steps")):
        write_trace(trace, tmp_path / "t.up", "mahimahi")
    assert not (tmp_path / "t.up").exists()


@pytest.mark.slow
def test_a_trace_is_held_in_numpy_arrays_of_a_few_bytes_per_segment(tmp_path):
    rows = 200_000
    rates = np.random.default_rng(0).uniform(5, 50, rows).round(3)
    path = tmp_path / "big.csv"
    path.write_text("time_s,mbps\n" + "".join(f"{i / 100:.2f},{r}\n" for i, r in enumerate(rates)))
    tracemalloc.start()
    trace = load_trace(path)
    held, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert len(trace.mbps) > rows - 100  # a few equal neighbours merged
    assert isinstance(trace.mbps, np.ndarray) and not trace.mbps.flags.writeable
    assert held / rows < 40  # was ~160 bytes per segment (lists and tuples of Python floats)
    assert peak / rows < 150  # was ~500 (a list of lines, then lists of tuples while parsing)


# ---- summaries and runs ----------------------------------------------------------------------


def dense_target_met(sink_times, info):
    """The former per-interval count (one bin per metrics interval), for comparison."""
    count = int(info.duration_s // info.metrics_interval_s)
    received = np.bincount((np.array(sink_times) // info.metrics_interval_s).astype(int),
                           minlength=count)
    items = received[1:count] * info.items_per_microbatch
    needed = 0.95 * info.target_rate_items_per_s * info.metrics_interval_s
    return float(np.mean(items >= needed))


def test_the_target_met_share_is_the_same_without_one_bin_per_interval():
    rng = np.random.default_rng(3)
    for _ in range(200):
        duration, interval = rng.uniform(10, 200), rng.choice([0.5, 1.0, 5.0, 7.3])
        sinks = np.sort(rng.uniform(0, duration, rng.integers(0, 400))).tolist()
        info = RunInfo(2, 8, float(rng.uniform(1, 80)), duration, metrics_interval_s=interval)
        if duration // interval >= 2:
            assert target_met_fraction(sinks, info) == dense_target_met(sinks, info)


@pytest.mark.slow
def test_a_metrics_interval_of_1e9_s_costs_no_memory(tmp_path):
    trace = Trace.from_segments([0.0], [200.0], 120.0)
    stages = [StageSpec(0.1), StageSpec(0.1)]
    links = [LinkSpec(trace, PACKET, FixedPolicy(8), SHAPE)]
    records = Pipeline(stages, links, SourceSpec(64.0, 8), allowed_bits=(8,), window=4).run(120)
    info = RunInfo(2, 8, 64.0, 120.0, metrics_interval_s=1e-9)
    tracemalloc.start()
    result = write_results(tmp_path, records, info)  # the plot too; was 149 GiB of bins
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 200e6
    assert 0 < result["target_met_fraction"] < 1e-6  # each 1 ns holds a whole microbatch or none


@pytest.mark.parametrize(("trace_text", "changes", "message"), [
    ("time_s,mbps\n0,10\n1e300,10\n", {}, r"1e\+300 s at .* makes ~.*e\+30\d microbatches"),
    ("time_s,mbps\n0,10\n60,10\n", {"source.target_rate": 1e9},
     r"60 s at 1e\+09 items/s in microbatches of 8 makes ~7\.5e\+09 microbatches"),
])
def test_a_run_of_too_many_microbatches_is_refused_before_it_starts(
    tmp_path, trace_text, changes, message
):
    path = tmp_path / "t.csv"
    path.write_text(trace_text)
    config = load_config(CONFIG).replace(**changes) if changes else load_config(CONFIG)
    started = time.perf_counter()
    with pytest.raises(RunSizeError, match=message + ".*above the budget.*run.duration_s"):
        simulate(config, path)
    assert time.perf_counter() - started < 30


def test_a_large_run_is_announced_with_its_memory_and_time():
    with pytest.warns(RunSizeWarning, match=r"makes ~8e\+05 microbatches: expect ~.* MiB of "
                                            r"memory and ~.* min"):
        check_run_size(SourceSpec(80.0, 8), 80_000.0, 2)


def test_the_source_stops_at_the_budget_when_the_estimate_is_exceeded(monkeypatch):
    monkeypatch.setattr(pipeline_module, "MAX_MICROBATCHES", 50)
    trace = Trace.from_segments([0.0], [1e6], 100.0)
    stages = [StageSpec(1e-6), StageSpec(1e-6)]
    links = [LinkSpec(trace, PACKET, FixedPolicy(8), SHAPE)]
    source = SourceSpec(1.0, 8, mode="closed")  # a closed loop runs as fast as the stages do
    with pytest.raises(RunSizeError, match="offered 50 microbatches"):
        Pipeline(stages, links, source, allowed_bits=(8,), window=4).run(100.0)


def test_a_slow_policy_is_announced_once_with_the_time_its_decisions_will_take(monkeypatch):
    monkeypatch.setattr(sender_module, "SLOW_DECISION_S", 0.01)

    class Sleepy:
        def decide(self, obs):
            time.sleep(0.02)
            return [8] * obs.window_len

    trace = Trace.from_segments([0.0], [200.0], 100.0)
    stages = [StageSpec(0.1), StageSpec(0.1)]
    links = [LinkSpec(trace, PACKET, Sleepy(), SHAPE)]
    with pytest.warns(SlowPolicyWarning) as caught:
        Pipeline(stages, links, SourceSpec(80.0, 8), allowed_bits=(8,), window=4).run(2.0)
    assert len(caught) == 1
    assert re.search(r"link 0: the policy took 0\.0\d+ s of wall time for one decision; this run "
                     r"asks it about 5 times on this link: about 0\.\d+ min of decisions",
                     str(caught[0].message))
