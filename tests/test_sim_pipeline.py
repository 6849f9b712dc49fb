"""The SimPy pipeline: throughput, delivery and policy reactions with analytical answers."""

from __future__ import annotations

import itertools

import pytest

from quantpipe_core.plan import LinkSpec, SourceSpec, StageSpec
from quantpipe_core.policy import FixedPolicy, QuantPipePolicy
from quantpipe_core.quant import wire_size
from quantpipe_core.results import RunInfo, summary, window_rows
from quantpipe_core.trace import Trace
from sim.oracle import OraclePolicy
from sim.pipeline import Pipeline

SHAPE = (8, 197, 768)
ALLOWED = (2, 3, 4, 6, 8, 16)
PACKET = {b: wire_size(SHAPE, b) for b in (*ALLOWED, 32)}


def constant(mbps: float, duration: float = 1000.0) -> Trace:
    return Trace.from_segments([0.0], [mbps], duration)


def step(high: float, low: float, at: float, duration: float) -> Trace:
    return Trace.from_segments([0.0, at], [high, low], duration, end="hold")


def run(trace, policy, *, compute_s=0.1, rate=1000.0, mode="closed", until=200.0, window=4,
        payload_share=1.0):
    stages = [StageSpec(compute_s), StageSpec(compute_s)]
    links = [LinkSpec(trace, PACKET, policy, SHAPE, payload_share=payload_share)]
    source = SourceSpec(rate, 8, mode=mode, max_in_flight=4)
    records = Pipeline(stages, links, source, allowed_bits=ALLOWED, window=window).run(until)
    info = RunInfo(2, 8, rate, until, trace_mbps=[trace.mean_mbps])
    return records, info


@pytest.mark.parametrize(("mbps", "bits"), [(200.0, 8), (20.0, 8), (20.0, 2), (3.0, 4)])
def test_throughput_is_the_slower_of_compute_and_link(mbps, bits):
    records, info = run(constant(mbps), FixedPolicy(bits))
    compute_rate = 8 / 0.1
    link_rate = mbps * 1e6 / (PACKET[bits] * 8) * 8
    expected = min(compute_rate, link_rate)
    assert summary(records, info)["throughput_items_per_s"] == pytest.approx(expected, rel=0.02)


def test_protocol_headers_take_their_share_of_the_link_and_of_what_the_sender_measures():
    records, info = run(constant(3.0), FixedPolicy(4), payload_share=0.956)
    link_rate = 0.956 * 3.0e6 / (PACKET[4] * 8) * 8
    assert summary(records, info)["throughput_items_per_s"] == pytest.approx(link_rate, rel=0.02)
    measured = [w.measured_mbps for w in records.windows if w.measured_mbps is not None]
    assert measured and all(m == pytest.approx(0.956 * 3.0) for m in measured)


def test_transfers_integrate_capacity_across_a_change():
    trace = Trace.from_segments([0.0, 1.0], [1.0, 100.0], 1000.0, end="hold")
    bits = 2e6  # one second at 1 Mbit/s would need 2 s; here 1 s at 1, then 1 Mbit at 100
    assert trace.finish_time(0.0, bits) == pytest.approx(1.01)


def test_no_microbatch_is_lost_duplicated_or_reordered():
    records, _ = run(step(50.0, 16.0, 50.0, 200.0), QuantPipePolicy(), mode="open", rate=40.0)
    done = sorted(records.t_sink)
    assert done == list(range(len(done)))
    for mb in done:
        assert records.t_source[mb] <= records.stage_start[mb, 0] <= records.stage_end[mb, 0]
        assert records.stage_end[mb, 0] <= records.link_arrive[mb, 0] <= records.stage_start[mb, 1]
    assert [records.t_sink[mb] for mb in done] == sorted(records.t_sink[mb] for mb in done)
    assert len(records.t_source) - len(done) <= 20  # only the microbatches still in flight


def test_quantpipe_lowers_bits_within_two_windows_of_a_drop_and_restores_the_rate():
    target = 40.0  # 5 microbatches/s: 8 bits fits 60 Mbit/s, only 2 bits fits 16
    trace = step(60.0, 16.0, 60.0, 200.0)
    records, info = run(trace, QuantPipePolicy(), mode="open", rate=target, until=200.0)
    windows = window_rows(records, info)
    before = [w for w in windows if w["t_end_s"] <= 60.0]
    after = [w for w in windows if w["t_start_s"] >= 60.0]
    assert before[-1]["bits"] == 8
    assert max(w["bits"] for w in after[2:]) <= 2  # two windows to notice, then at most 2 bits
    late = [mb for mb, t in records.t_sink.items() if t > 100.0]
    assert len(late) * 8 / (200.0 - 100.0) == pytest.approx(target, rel=0.05)


def test_the_oracle_meets_the_drop_without_delay():
    trace = step(60.0, 16.0, 60.0, 200.0)
    records, info = run(trace, OraclePolicy(trace=trace), mode="open", rate=40.0)
    windows = window_rows(records, info)
    assert [w for w in windows if w["t_end_s"] <= 60.0][-1]["bits"] == 8
    assert next(w for w in windows if w["t_start_s"] >= 60.0)["bits"] == 2


def test_the_same_run_gives_the_same_records():
    first, _ = run(step(50.0, 5.0, 50.0, 120.0), QuantPipePolicy(), mode="open", rate=40.0)
    second, _ = run(step(50.0, 5.0, 50.0, 120.0), QuantPipePolicy(), mode="open", rate=40.0)
    assert first == second


class Recording:
    """A fixed bitwidth that remembers what it was told about its last window."""

    def __init__(self, bits: int) -> None:
        self.bits = bits
        self.told: list[tuple[int, ...]] = []

    def decide(self, obs):
        self.told.append(obs.bits_last_window)
        return [self.bits] * obs.window_len


def test_each_link_has_its_own_windows_and_its_own_last_bits():
    policies = [Recording(4), Recording(8)]
    stages = [StageSpec(0.1), StageSpec(0.1), StageSpec(0.1)]
    links = [LinkSpec(constant(50.0), PACKET, p, SHAPE) for p in policies]
    source = SourceSpec(40.0, 8, mode="open")
    records = Pipeline(stages, links, source, allowed_bits=ALLOWED, window=4).run(30.0)
    for link, policy in enumerate(policies):
        assert set(policy.told[1:]) == {(policy.bits,) * 4}
        mine = [w for w in records.windows if w.link == link]
        assert [w.window_index for w in mine] == list(range(len(mine)))
        assert all(a.t_end_s == b.t_start_s for a, b in itertools.pairwise(mine))


# ---- the summary counts what the run did (issue 14, defect 12) ------------------------------


def test_a_run_ending_with_a_backlog_reports_the_bits_its_policy_chose():
    """400 Mbit/s, then 2: 16-bit packets queue up, the policy goes down to 2 bits for the
    microbatches behind them, which are never delivered; the summary must say so."""
    trace = Trace.from_segments([0.0, 20.0], [400.0, 2.0], 60.0, end="hold")
    records, info = run(trace, QuantPipePolicy(), compute_s=0.05, rate=80.0, mode="open",
                        until=60.0)
    result = summary(records, info)
    shown = [b for w in records.windows for b in w.bits[: w.used]]  # what windows.csv shows
    assert result["mean_bits"] == 16.0 and result["bits_switches"] == 0  # the delivered ones
    link = result["links"][0]
    assert link["encoded_switches"] == result["encoded_bits_switches"] == 1
    assert link["encoded_mean_bits"] == pytest.approx(sum(shown) / len(shown))
    assert link["encoded_mean_bits"] < 16
    assert {row["bits"] for row in window_rows(records, info)} == {16.0, 2.0}
    assert any("encoded microbatches were not delivered by the end (a backlog)" in note
               and "switches 1" in note for note in result["notes"])


def test_a_run_shorter_than_a_microbatchs_trip_says_why_it_has_no_items():
    records, info = run(constant(100.0, duration=0.15), FixedPolicy(8), until=0.15)
    result = summary(records, info)
    assert result["items_completed"] == 0
    assert result["notes"][0].startswith("no microbatch reached the sink within the run's 0.15 s")
    assert "target_met_fraction is null" in result["notes"][1]


def test_a_short_last_microbatch_counts_its_real_items():
    records, info = run(constant(200.0), FixedPolicy(8), until=20.0)
    last = max(records.t_sink)

    def delivered() -> float:
        return sum(r["delivered_items_per_s"] * (r["t_end_s"] - r["t_start_s"])
                   for r in window_rows(records, info))

    full, full_delivered = summary(records, info), delivered()
    records.items[last] = 7
    short = summary(records, info)
    assert short["items_completed"] == full["items_completed"] - 1
    assert short["throughput_items_per_s"] == pytest.approx((full["items_completed"] - 1) / 20)
    assert delivered() == pytest.approx(full_delivered - 1)
