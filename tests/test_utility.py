"""The run's utility: hand-built timelines scored by hand, and what every run writes."""

from __future__ import annotations

import math

import pytest

from quantpipe_core.config import load_config
from quantpipe_core.results import Records, RunInfo, summary
from quantpipe_core.utility import Utility, auto_latency_slo, log_value


def test_log_value_makes_float32_worth_one_and_averages_links():
    assert log_value([32]) == 1.0
    assert log_value([2]) == pytest.approx(0.2)
    assert log_value([2, 32]) == pytest.approx(0.6)


def test_a_hand_built_timeline_scores_as_computed_by_hand():
    # four microbatches; the SLO is 1 s; the third is 0.5 s late; the fourth never arrives
    t_source = {0: 0.0, 1: 1.0, 2: 2.0, 3: 3.0}
    t_sink = {0: 0.5, 1: 1.9, 2: 3.5}
    bits = {0: [8], 1: [4], 2: [4]}
    value = {8: 0.9, 4: 0.7}
    utility = Utility(latency_slo_s=1.0, late_weight=2.0, switch_weight=0.5)
    scored = utility.of_run(t_source, t_sink, bits.__getitem__, lambda b: value[b[0]], 5.0)
    accuracy = (0.9 + 0.7 + 0.7) / 4
    lateness = 2.0 * (0.5 + (5.0 - 3.0 - 1.0)) / 4  # the lost one is as late as its age at 5 s
    switching = 0.5 * abs(0.7 - 0.9) / 4
    assert scored["accuracy"] == pytest.approx(accuracy)
    assert scored["lateness"] == pytest.approx(lateness)
    assert scored["switching"] == pytest.approx(switching)
    assert scored["value"] == pytest.approx(accuracy - lateness - switching)
    assert scored["late_share"] == pytest.approx(2 / 4)
    assert scored["offered_microbatches"] == 4


def test_a_microbatch_after_a_lost_one_pays_no_switch():
    t_source = {0: 0.0, 1: 1.0, 2: 2.0}
    t_sink = {0: 0.1, 2: 2.1}  # 1 lost (a sender died), 2 delivered
    utility = Utility(latency_slo_s=1.0)
    scored = utility.of_run(t_source, t_sink, lambda mb: [4 if mb else 8],
                            lambda b: b[0] / 10, 3.0)
    assert scored["switching"] == 0.0


def test_the_summary_scores_by_log2_without_a_profile_and_by_accuracy_with_one():
    records = Records(t_source={0: 0.0, 1: 1.0}, t_sink={0: 0.5, 1: 1.5},
                      link_bits={(0, 0): 4, (1, 0): 4}, link_bytes={(0, 0): 1, (1, 0): 1})
    plain = RunInfo(2, 8, 8.0, 2.0, utility=Utility(1.0))
    scored = summary(records, plain)["utility"]
    assert scored["values_from"] == "log2 rule"
    assert scored["accuracy"] == pytest.approx(math.log2(4) / 5)
    profiled = RunInfo(2, 8, 8.0, 2.0, accuracy_of=lambda bits: 0.93, utility=Utility(1.0))
    scored = summary(records, profiled)["utility"]
    assert scored["values_from"] == "accuracy profile"
    assert scored["value"] == pytest.approx(0.93)


def test_the_default_slo_is_the_compute_path_plus_one_window_of_arrivals():
    assert auto_latency_slo(0.3, 8, 0.0625) == pytest.approx(0.8)


def test_utility_settings_are_checked_where_they_are_read(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text("[utility]\nlate_weight = -1\n")
    with pytest.raises(ValueError, match=r"utility.late_weight: must be >= 0"):
        load_config(path)
    path.write_text('[utility]\nlatency_slo_s = "soon"\n')
    with pytest.raises(ValueError, match=r"utility.latency_slo_s"):
        load_config(path)
