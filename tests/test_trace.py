"""Bandwidth traces: reading the three formats, the capacity arithmetic, shaping, writing, and
the seeded generators."""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from quantpipe_core import trace_generators as gen
from quantpipe_core.trace import (
    PACKET_BITS,
    Trace,
    TraceError,
    detect_format,
    load_trace,
    write_trace,
)

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "traces"
MAHIMAHI = {  # file: (duration s, mean Mbit/s) from ../shared/traces/README.md
    "ATT-LTE-driving-2016.up": (120, 1.91),
    "TMobile-LTE-short.up": (140, 13.32),
    "TMobile-UMTS-driving.up": (931, 0.94),
    "Verizon-LTE-short.up": (140, 5.95),
}


def shared(*parts: str) -> Path:
    """A file under ../shared/traces, or skip: the folder sits beside CI's checkout only."""
    if not SHARED.is_dir():
        pytest.skip("needs ../shared/traces (CI has it; a fresh clone does not)")
    return SHARED.joinpath(*parts)


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def step(end: str = "loop", **options) -> Trace:
    """40 Mbit/s for 30 s, then 8 Mbit/s until 60 s."""
    return Trace.from_segments([0, 30], [40, 8], 60, end=end, **options)


_loaded: dict[str, Trace] = {}


def real(name: str) -> Trace:
    """A real Mahimahi trace at 1 ms, unfloored (read once per test session)."""
    if name not in _loaded:
        _loaded[name] = load_trace(shared("mahimahi", name), floor_mbps=0)
    return _loaded[name]


# ---- formats and detection -------------------------------------------------------------------


def test_a_csv_row_holds_its_rate_until_the_next_row_and_the_last_row_ends_the_trace(tmp_path):
    path = write(tmp_path, "t.csv", "time_s,mbps\n0,40\n30,8\n45,2\n")
    trace = load_trace(path)
    assert detect_format(path.read_text().splitlines()) == "csv"
    assert trace.segments() == [(0.0, 40.0), (30.0, 8.0)]
    assert trace.duration_s == 45.0
    assert trace.hold_mbps == 2.0


def test_an_mbps_log_row_is_the_rate_measured_up_to_its_time_and_times_start_at_0(tmp_path):
    path = write(tmp_path, "log", "100.5 9.0\n101.5\t4.0\n103.5 2.0\n")
    trace = load_trace(path)
    assert detect_format(path.read_text().splitlines()) == "mbps-log"
    assert trace.segments() == [(0.0, 4.0), (1.0, 2.0)]
    assert trace.duration_s == 3.0
    assert trace.hold_mbps == 2.0


def test_mahimahi_packets_at_millisecond_m_fill_the_millisecond_before_m(tmp_path):
    path = write(tmp_path, "t.up", "1\n1\n3\n")
    trace = load_trace(path, floor_mbps=0)
    assert detect_format(path.read_text().splitlines()) == "mahimahi"
    assert trace.segments() == [(0.0, 24.0), (0.001, 0.0), (0.002, 12.0)]
    assert trace.duration_s == 0.003
    assert trace.delivered_bits(0, 0.001) == pytest.approx(2 * PACKET_BITS)
    assert trace.delivered_bits(0, 0.003) == pytest.approx(3 * PACKET_BITS)


def test_a_mahimahi_packet_at_0_is_the_one_at_the_end_of_the_previous_loop(tmp_path):
    with_zero = load_trace(write(tmp_path, "a.up", "0\n2\n4\n"), floor_mbps=0)
    at_end = load_trace(write(tmp_path, "b.up", "2\n4\n4\n"), floor_mbps=0)
    assert with_zero == at_end
    assert with_zero.delivered_bits(0, 0.004) == pytest.approx(3 * PACKET_BITS)


def test_after_a_mahimahi_trace_hold_keeps_the_mean_of_its_last_second(tmp_path):
    stamps = [*range(1, 1001), *range(1002, 2001, 2)]  # 12 Mbit/s, then 6 Mbit/s
    path = write(tmp_path, "t.up", "".join(f"{s}\n" for s in stamps))
    trace = load_trace(path, end="hold", floor_mbps=0)
    assert trace.hold_mbps == pytest.approx(6.0)
    assert trace.rate_mbps(5.0) == pytest.approx(6.0)


def test_a_forced_format_is_used_instead_of_detection(tmp_path):
    path = write(tmp_path, "two-columns.txt", "0 4\n1 8\n2 8\n")
    assert load_trace(path, format="mbps-log").segments() == [(0.0, 8.0)]
    with pytest.raises(TraceError, match=r"two-columns.txt, line 1: expected the header"):
        load_trace(path, format="csv")
    with pytest.raises(TraceError, match="unknown format 'tsv'"):
        load_trace(path, format="tsv")


def test_the_real_files_are_detected_as_their_formats():
    for path in sorted(shared("mahimahi").iterdir()):
        assert detect_format(path.read_text().splitlines()) == "mahimahi", path
    for path in sorted(shared("hsdpa-norway").glob("norway_*")):
        assert detect_format(path.read_text().splitlines()) == "mbps-log", path
    for path in sorted((ROOT / "traces").glob("*.csv")):
        assert detect_format(path.read_text().splitlines()) == "csv", path


@pytest.mark.parametrize("name", sorted(MAHIMAHI))
def test_mahimahi_files_keep_the_duration_and_mean_rate_of_the_shared_readme(name):
    duration, mean = MAHIMAHI[name]
    trace = real(name)
    assert trace.duration_s == pytest.approx(duration, abs=1)
    assert trace.mean_mbps() == pytest.approx(mean, rel=0.01)


def test_the_floor_lifts_a_mahimahi_trace_mean_by_at_most_the_floor():
    raw = real("TMobile-UMTS-driving.up")
    floored = load_trace(shared("mahimahi", "TMobile-UMTS-driving.up"), floor_mbps=0.01)
    assert raw.mean_mbps() < floored.mean_mbps() <= raw.mean_mbps() + 0.01


def test_norway_logs_load_with_times_from_0_and_rates_within_the_shared_readme_range():
    paths = sorted(shared("hsdpa-norway").glob("norway_*"))
    assert len(paths) == 12
    for path in paths:
        trace = load_trace(path)
        assert trace.starts_s[0] == 0 and trace.duration_s > 100
        assert min(trace.mbps) > 0.2 and 0.5 < trace.mean_mbps() < 2.2


# ---- refusing bad traces ---------------------------------------------------------------------

BAD_FILES = [
    ("t.csv", "", "empty file"),
    ("t.csv", "\n \n", "empty file"),
    ("t.csv", "time_s,mbps\n", "needs at least two rows"),
    ("t.csv", "time_s,mbps\n0,5\n", "needs at least two rows"),
    ("t.csv", "time_s,mbps\n0,5\n10,5\n5,5\n", "line 4: time 5.0 is not after .* 10.0"),
    ("t.csv", "time_s,mbps\n0,5\n10,5\n10,5\n", "line 4: time 10.0 is not after"),
    ("t.csv", "time_s,mbps\n0,5\n-1,5\n", "line 3: negative time"),
    ("t.csv", "time_s,mbps\n0,5\n1,-2\n", "line 3: negative rate"),
    ("t.csv", "time_s,mbps\n0,5\n1,nan\n", "line 3: rate 'nan' is not a finite number"),
    ("t.csv", "time_s,mbps\n0,5\n1,\n", "line 3: missing rate"),
    ("t.csv", "time_s,mbps\n0,5\n,3\n", "line 3: missing time"),
    ("t.csv", "time_s,mbps\n0,5\n1,5,7\n", "line 3: expected 2 fields, got 3"),
    ("t.csv", "time_s,mbps\n0,fast\n1,5\n", "line 2: rate 'fast' is not a number"),
    ("t.csv", "time_s,mbps\n2,5\n3,5\n", "line 2: the first row must be at time 0"),
    ("t.csv", "time_s,mbps\n0,0\n5,0\n10,3\n", "every rate is 0"),
    ("t.log", "0 1.5\n1 2.5\nx 3\n", "line 3: time 'x' is not a number"),
    ("t.log", "0 1.5\n2 2.5\n1 3\n", "line 3: time 1.0 is not after"),
    ("t.log", "0 1.5\n1 2.5\n2\n", "line 3: expected 2 fields, got 1"),
    ("t.up", "1\n5\n3\n", "line 3: timestamp 3 is before the previous 5"),
    ("t.up", "1\n2.5\n", "line 2: expected a non-negative integer millisecond, got '2.5'"),
    ("t.up", "1\n-4\n", "line 2: expected a non-negative integer millisecond"),
    ("t.up", "0\n0\n", "the last timestamp .* is 0 ms"),
    ("t.txt", "hello\n", "line 1: unknown format"),
    ("t.txt", "\n0,40\n30,8\n", "line 2: unknown format: expected a 'time_s,mbps' header"),
    ("t.txt", "1 2 3\n", "line 1: unknown format"),
    ("t.up", "1\n2\n\u0663\n", "line 3: expected a non-negative integer millisecond, got '\u0663'"),
    ("t.up", "\u0663\n", "line 1: unknown format"),
    ("t.up", "1\n" + "9" * 5000 + "\n", "line 2: timestamp '9999.* ms is too large"),
    ("t.csv", "time_s,mbps\n0,5\n\u0663,5\n", "line 3: time '\u0663' is not a number"),
]


@pytest.mark.parametrize(("name", "text", "reason"), BAD_FILES)
def test_a_bad_trace_is_refused_naming_the_file_the_line_and_the_reason(
    tmp_path, name, text, reason
):
    path = write(tmp_path, name, text)
    with pytest.raises(TraceError, match=re.escape(str(path)) + ".*" + reason):
        load_trace(path)


@pytest.mark.parametrize(
    ("options", "reason"),
    [
        ({"scale": 0}, "scale must be a positive number, got 0"),
        ({"scale": -2}, "scale must be a positive number, got -2"),
        ({"bin_s": 0}, "bin_s must be a positive number of seconds, got 0"),
        ({"end": "wrap"}, "unknown end mode 'wrap'; choose from loop, hold"),
        ({"floor_mbps": -1}, "floor_mbps must be >= 0, got -1"),
    ],
)
def test_bad_options_are_refused_before_reading(tmp_path, options, reason):
    with pytest.raises(TraceError, match=re.escape(reason)):
        load_trace(tmp_path / "never-read.csv", **options)
    with pytest.raises(TraceError, match=re.escape(reason)):
        Trace.from_segments([0], [5], 10, **options)


@pytest.mark.parametrize(
    ("starts", "rates", "duration", "reason"),
    [
        ([0, 5], [1], 10, "need as many starts as rates"),
        ([1, 5], [1, 1], 10, "the first segment must start at 0"),
        ([0, 5, 5], [1, 1, 1], 10, "segment 2: start 5.0 is not after 5.0"),
        ([0, 5], [1, 1], 5, "duration_s must be after the last start 5.0"),
        ([0, 5], [1, math.nan], 10, "segment 1: rate nan is not a rate >= 0"),
        ([0, 5], [0, 0], 10, "every rate is 0"),
    ],
)
def test_from_segments_refuses_arrays_that_are_not_a_capacity(starts, rates, duration, reason):
    with pytest.raises(TraceError, match=re.escape(reason)):
        Trace.from_segments(starts, rates, duration)


def test_hold_with_nothing_after_the_end_is_refused_because_transfers_would_never_finish():
    with pytest.raises(TraceError, match="stall transfers forever"):
        Trace.from_segments([0], [5], 10, hold_mbps=0, end="hold", floor_mbps=0)


# ---- capacity arithmetic ---------------------------------------------------------------------


def test_a_rate_holds_from_its_start_and_loops_or_holds_after_the_end():
    loop, hold = step(), step("hold", hold_mbps=3)
    assert [loop.rate_mbps(t) for t in (0, 29.999, 30, 59.9, 60, 90)] == [40, 40, 8, 8, 40, 8]
    assert [hold.rate_mbps(t) for t in (30, 59.9, 60, 1e6)] == [8, 8, 3, 3]


def test_finish_time_at_a_constant_rate_is_bits_over_rate():
    trace = Trace.from_segments([0], [25], 10)
    assert trace.finish_time(3.0, 50e6) == pytest.approx(5.0)
    assert trace.finish_time(3.0, 0) == 3.0


def test_finish_time_integrates_capacity_across_a_drop_instead_of_using_the_rate_at_the_start():
    # 40 Mbit by 30 s at 40 Mbit/s, then the other 20 Mbit at 8 Mbit/s
    assert step().finish_time(29.0, 60e6) == pytest.approx(32.5)


def test_finish_time_crosses_the_end_of_the_trace_by_looping_or_holding():
    # 8 Mbit in the last second, then the loop restarts at 40 Mbit/s
    assert step("loop").finish_time(59.0, 100e6) == pytest.approx(60 + 92 / 40)
    assert step("hold").finish_time(59.0, 100e6) == pytest.approx(60 + 92 / 8)
    assert step("hold", hold_mbps=2).finish_time(70.0, 10e6) == pytest.approx(75.0)


def test_a_transfer_of_whole_periods_lasts_whole_periods_from_any_start():
    trace = step()
    period_bits = trace.delivered_bits(0, 60)
    for start in (0.0, 12.5, 30.0, 59.0, 601.25):
        assert trace.finish_time(start, 3 * period_bits) == pytest.approx(start + 180)


def test_a_transfer_waits_through_an_outage_when_there_is_no_floor():
    trace = Trace.from_segments([0, 1, 3], [10, 0, 10], 4, floor_mbps=0)
    assert trace.finish_time(0.5, 10e6) == pytest.approx(3.5)
    assert trace.delivered_bits(1, 3) == 0


def test_mean_over_the_whole_trace_is_total_bits_over_duration():
    trace = step()
    assert trace.mean_mbps() == pytest.approx(trace.delivered_bits(0, 60) / 60 / 1e6)
    assert trace.mean_mbps() == pytest.approx(24.0)
    assert trace.mean_mbps(20, 40) == pytest.approx(24.0)
    assert trace.mean_mbps(55, 65) == pytest.approx(24.0)
    assert trace.delivered_bits(0, 600) == pytest.approx(10 * trace.delivered_bits(0, 60))


def test_queries_refuse_times_that_are_not_times():
    trace = step()
    for call in (
        lambda: trace.finish_time(-1, 5),
        lambda: trace.finish_time(1, -5),
        lambda: trace.finish_time(math.inf, 5),
        lambda: trace.rate_mbps(math.nan),
        lambda: trace.delivered_bits(5, 4),
        lambda: trace.mean_mbps(5, 5),
    ):
        with pytest.raises(ValueError):
            call()


@st.composite
def traces(draw) -> Trace:
    """Any trace: 1-20 segments of 0.01-10 s at 0 or 0.001-100 Mbit/s, looping or holding."""
    widths = draw(st.lists(st.floats(0.01, 10), min_size=1, max_size=20))
    rate = st.one_of(st.just(0.0), st.floats(0.001, 100))
    rates = draw(st.lists(rate, min_size=len(widths), max_size=len(widths)))
    end = draw(st.sampled_from(["loop", "hold"]))
    floor = draw(st.sampled_from([0.0, 0.5]))
    assume(max(rates) > 0 and (end == "loop" or floor > 0 or rates[-1] > 0))
    starts = np.concatenate([[0.0], np.cumsum(widths[:-1])])
    return Trace.from_segments(starts, rates, float(sum(widths)), end=end, floor_mbps=floor)


starts_s = st.floats(0, 1000)
bits = st.floats(1, 1e10)


@settings(max_examples=200, deadline=None)
@given(traces(), starts_s, bits)
def test_a_transfer_finishes_when_the_link_has_delivered_exactly_its_bits(trace, start, size):
    finish = trace.finish_time(start, size)
    assert finish > start
    assert trace.delivered_bits(start, finish) == pytest.approx(size, rel=1e-9, abs=1)


@settings(max_examples=200, deadline=None)
@given(traces(), starts_s, bits, bits)
def test_more_bits_never_finish_sooner(trace, start, a, b):
    small, large = sorted([a, b])
    assert trace.finish_time(start, small) <= trace.finish_time(start, large) * (1 + 1e-12)


@settings(max_examples=200, deadline=None)
@given(traces(), starts_s, starts_s, bits)
def test_a_later_start_never_finishes_sooner(trace, a, b, size):
    early, late = sorted([a, b])
    assert trace.finish_time(early, size) <= trace.finish_time(late, size) * (1 + 1e-12)


# ---- scale, bin, floor -----------------------------------------------------------------------


def test_scale_multiplies_every_rate_and_the_rate_after_the_end():
    trace = step(scale=2.5, hold_mbps=4)
    assert trace.segments() == [(0.0, 100.0), (30.0, 20.0)]
    assert trace.hold_mbps == 10.0


def test_the_floor_replaces_lower_rates_after_scaling():
    trace = Trace.from_segments([0, 1, 2], [5, 0, 0.004], 3, scale=2, floor_mbps=0.01)
    assert trace.segments() == [(0.0, 10.0), (1.0, 0.01)]
    assert Trace.from_segments([0, 1], [5, 0.004], 2, scale=10).mbps.tolist() == [50.0, 0.04]


def test_binning_averages_capacity_per_bin_keeps_total_bits_and_ends_with_a_shorter_bin():
    trace = Trace.from_segments([0, 1.5], [10, 20], 3.5, bin_s=1, floor_mbps=0)
    assert trace.segments() == [(0.0, 10.0), (1.0, 15.0), (2.0, 20.0)]
    assert trace.duration_s == 3.5
    assert trace.delivered_bits(0, 3.5) == pytest.approx(10e6 * 1.5 + 20e6 * 2)


def test_the_floor_comes_after_binning_so_short_outages_lower_a_bin_instead_of_vanishing():
    # a 0.5 s outage inside the first 1 s bin halves it; the floor only lifts the empty bin
    trace = Trace.from_segments([0, 0.5, 1, 2], [0, 10, 0, 10], 3, bin_s=1, floor_mbps=0.01)
    assert trace.mbps.tolist() == [5.0, 0.01, 10.0]


def test_binning_a_real_trace_keeps_its_bits_and_a_rate_for_every_bin():
    raw = real("Verizon-LTE-short.up")
    binned = load_trace(shared("mahimahi", "Verizon-LTE-short.up"), bin_s=0.1, floor_mbps=0)
    assert binned.delivered_bits(0, 140) == pytest.approx(raw.delivered_bits(0, 140), rel=1e-12)
    assert np.all(np.diff(binned.starts_s) >= 0.1 - 1e-9)
    assert raw.bin_means(0.1).size == 1400


# ---- writing and converting ------------------------------------------------------------------


def test_csv_and_mbps_log_round_trip_exactly(tmp_path):
    trace = gen.random_walk(duration_s=50, seed=3)
    write_trace(trace, tmp_path / "a.csv", "csv")
    write_trace(load_trace(tmp_path / "a.csv"), tmp_path / "b.log", "mbps-log")
    write_trace(load_trace(tmp_path / "b.log"), tmp_path / "c.csv", "csv")
    assert load_trace(tmp_path / "b.log") == trace
    assert (tmp_path / "c.csv").read_text() == (tmp_path / "a.csv").read_text()


def test_csv_keeps_the_rate_after_the_end_and_mbps_log_holds_the_last_rate(tmp_path):
    trace = step(hold_mbps=3)
    write_trace(trace, tmp_path / "t.csv", "csv")
    write_trace(trace, tmp_path / "t.log", "mbps-log")
    assert (tmp_path / "t.csv").read_text() == "time_s,mbps\n0.0,40.0\n30.0,8.0\n60.0,3.0\n"
    assert load_trace(tmp_path / "t.csv") == trace
    assert load_trace(tmp_path / "t.log").hold_mbps == 8.0


def test_writing_mahimahi_keeps_every_millisecond_within_half_a_packet(tmp_path):
    trace = gen.random_walk(duration_s=20, step_s=0.1, seed=4)
    write_trace(trace, tmp_path / "t.up", "mahimahi")
    back = load_trace(tmp_path / "t.up", floor_mbps=0)
    assert back.duration_s == trace.duration_s
    ms = np.arange(1, 20_001) / 1e3
    error = [back.delivered_bits(0, t) - trace.delivered_bits(0, t) for t in ms[::7]]
    assert max(map(abs, error)) <= PACKET_BITS / 2 + 1e-6
    assert back.mean_mbps() == pytest.approx(trace.mean_mbps(), abs=0.001)


def test_the_last_mahimahi_packet_marks_the_end_even_after_an_outage(tmp_path):
    trace = Trace.from_segments([0, 1], [12, 0], 2, floor_mbps=0)
    write_trace(trace, tmp_path / "t.up", "mahimahi")
    lines = (tmp_path / "t.up").read_text().split()
    assert lines[-1] == "2000" and len(lines) == 1000
    assert load_trace(tmp_path / "t.up").duration_s == 2.0


def test_a_real_mahimahi_trace_is_rewritten_packet_for_packet(tmp_path):
    trace = real("ATT-LTE-driving-2016.up")
    write_trace(trace, tmp_path / "t.csv", "csv")
    write_trace(load_trace(tmp_path / "t.csv", floor_mbps=0), tmp_path / "t.up", "mahimahi")
    original = shared("mahimahi", "ATT-LTE-driving-2016.up").read_text().split()
    rewritten = (tmp_path / "t.up").read_text().split()
    assert sorted(rewritten, key=int) == sorted(["120002" if s == "0" else s for s in original],
                                                key=int)


def test_write_refuses_an_unknown_format(tmp_path):
    with pytest.raises(TraceError, match="unknown format 'json'"):
        write_trace(step(), tmp_path / "t.json", "json")


# ---- generators ------------------------------------------------------------------------------


def test_step_drop_ramp_and_on_off_have_the_shapes_their_names_say():
    assert gen.step_drop(high_mbps=40, low_mbps=8, at_s=30, duration_s=60).segments() == [
        (0.0, 40.0), (30.0, 8.0)
    ]
    ramp = gen.ramp(high_mbps=40, low_mbps=4, duration_s=120)
    assert ramp.mean_mbps() == pytest.approx(22.0)
    assert ramp.rate_mbps(0) > ramp.rate_mbps(30) > ramp.rate_mbps(59) < ramp.rate_mbps(90)
    on_off = gen.on_off(high_mbps=30, period_s=20, off_s=4, duration_s=120)
    assert on_off.rate_mbps(15.9) == 30 and on_off.rate_mbps(16) == 0.01
    assert on_off.delivered_bits(0, 120) == pytest.approx(30e6 * 16 * 6 + 0.01e6 * 4 * 6)


def test_events_between_steps_are_kept_exactly():
    trace = gen.on_off(high_mbps=10, period_s=0.3, off_s=0.1, duration_s=0.9, step_s=0.25)
    assert trace.segments() == [
        (0.0, 10.0), (0.2, 0.01), (0.3, 10.0), (0.5, 0.01), (0.6, 10.0), (0.8, 0.01)
    ]


def test_a_random_walk_stays_within_its_bounds_and_moves():
    trace = gen.random_walk(start_mbps=20, low_mbps=3, high_mbps=40, sigma=0.3, duration_s=2000)
    assert 3 <= min(trace.mbps) < 4 and 35 < max(trace.mbps) <= 40


@pytest.mark.parametrize(
    "make",
    [
        lambda seed: gen.step_drop(noise=0.2, seed=seed),
        lambda seed: gen.ramp(noise=0.2, seed=seed),
        lambda seed: gen.on_off(noise=0.2, seed=seed),
        lambda seed: gen.random_walk(seed=seed),
        lambda seed: gen.like(gen.random_walk(seed=9), seed=seed),
    ],
)
def test_generators_are_seeded(make):
    assert make(1) == make(1)
    assert make(1) != make(2)


def test_like_copies_the_rate_distribution_and_persistence_of_a_trace():
    source = gen.random_walk(low_mbps=3, high_mbps=40, sigma=0.1, duration_s=3000, seed=5)
    copy = gen.like(source, duration_s=20000, seed=6)
    a, b = source.bin_means(1.0), copy.bin_means(1.0)
    assert min(a) <= min(b) and max(b) <= max(a)
    assert np.percentile(b, [10, 50, 90]) == pytest.approx(np.percentile(a, [10, 50, 90]), rel=0.2)
    assert lag1(b) == pytest.approx(lag1(a), abs=0.05)


def test_like_a_real_norway_log_keeps_its_persistence():
    source = load_trace(shared("hsdpa-norway", "norway_bus_10"), scale=10)
    copy = gen.like(source, duration_s=3000, seed=0)
    assert lag1(copy.bin_means(1.0)) == pytest.approx(lag1(source.bin_means(1.0)), abs=0.1)


def lag1(values: np.ndarray) -> float:
    return float(np.corrcoef(values[:-1], values[1:])[0, 1])


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        (lambda: gen.step_drop(at_s=70, duration_s=60), "0 < at_s < 60"),
        (lambda: gen.step_drop(low_mbps=0), "low_mbps must be a positive rate"),
        (lambda: gen.ramp(duration_s=0), "duration_s must be a positive number"),
        (lambda: gen.ramp(step_s=500), "step_s must be within"),
        (lambda: gen.random_walk(low_mbps=40, high_mbps=3), "need 0 < low_mbps < high_mbps"),
        (lambda: gen.random_walk(start_mbps=50), "start_mbps must be within"),
        (lambda: gen.random_walk(sigma=-1), "sigma must be >= 0"),
        (lambda: gen.on_off(off_s=30), "need 0 < off_s < period_s"),
        (lambda: gen.on_off(noise=-0.1), "noise must be >= 0"),
        (lambda: gen.like(step(), step_s=30), "needs at least 3 steps"),
    ],
)
def test_generators_refuse_impossible_shapes(make, reason):
    with pytest.raises(ValueError, match=re.escape(reason)):
        make()


def test_shipped_traces_are_short_edge_rate_csv_files():
    shipped = sorted((ROOT / "traces").glob("*.csv"))
    assert {p.name for p in shipped} == {
        "step-drop.csv", "ramp.csv", "random-walk.csv", "on-off.csv", "like-norway-bus.csv"
    }
    for path in shipped:
        trace = load_trace(path)
        assert 60 <= trace.duration_s <= 300 and path.stat().st_size < 10_000
        assert 3 <= trace.mean_mbps() <= 40 and max(trace.mbps) <= 40, path.name


def test_the_guide_examples_run(monkeypatch):
    monkeypatch.chdir(ROOT)
    blocks = re.findall(r"```python\n(.*?)```", (ROOT / "docs" / "traces.md").read_text(), re.S)
    assert blocks
    for block in blocks:
        exec(compile(block, "docs/traces.md", "exec"), {})


@pytest.mark.parametrize("end", ["loop", "hold"])
def test_finish_times_is_finish_time_for_many_transfers_at_once(end):
    rng = np.random.default_rng(7)
    trace = Trace.from_segments([0.0, 3.0, 7.5], [4.0, 0.5, 20.0], 10.0, end=end)
    starts = np.concatenate([[0.0, 10.0, 3.0], rng.uniform(0, 35, 2000)])
    bits = np.concatenate([[0.0, 1e6, 2e6], rng.uniform(0, 5e7, 2000)])
    expected = [trace.finish_time(float(s), float(b)) for s, b in zip(starts, bits, strict=True)]
    assert trace.finish_times(starts, bits).tolist() == expected


def test_a_file_that_is_not_utf8_is_refused_naming_it_and_the_line(tmp_path):
    path = tmp_path / "latin.csv"
    path.write_bytes(b"time_s,mbps\n0,3\n10,\xff\n")
    with pytest.raises(TraceError, match=re.escape(f"{path}, line 3: not UTF-8 text (byte 0xff")):
        load_trace(path)


def test_an_error_quotes_at_most_80_characters_of_a_huge_line(tmp_path):
    path = write(tmp_path, "t.csv", "time_s,mbps\n0,3\n" + "x" * 5_000_000 + ",1\n")
    with pytest.raises(TraceError) as error:
        load_trace(path)
    assert len(str(error.value)) < len(str(path)) + 120
    assert "line 3: time 'xxx" in str(error.value) and "..." in str(error.value)


@pytest.mark.parametrize("options", [{"floor_mbps": 1e308}, {"scale": 1e305}])
def test_rates_whose_bits_overflow_are_refused_naming_the_options(tmp_path, options):
    path = write(tmp_path, "t.csv", "time_s,mbps\n0,5\n60,5\n")
    with pytest.raises(TraceError, match=re.escape(str(path)) + ".*overflow a float"):
        load_trace(path, **options)
