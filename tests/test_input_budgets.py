"""Tiny inputs must not ask for huge memory or endless runs: every allocation proportional to an
option is budgeted before it is made, traces are held compactly, and long runs are refused or
announced (issue 14, defects 8, 9 and 15)."""

from __future__ import annotations

import re
import tracemalloc

import numpy as np
import pytest

from quantpipe_core import trace_generators as gen
from quantpipe_core.trace import Trace, TraceError, load_trace, write_trace


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
