"""The bound on the optimum of several links: above brute force on small cases, with a plan the
simulator replays to the value it promises, and above every built-in policy on a real pipeline."""

from __future__ import annotations

from pathlib import Path

import pytest
from test_optimal import brute_force, small_case

from quantpipe_core.config import load_config
from sim import simulate
from sim.link_relaxation import solve_by_links, split_values
from sim.optimal import PipelineModel, replay

ROOT = Path(__file__).parents[1]


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize(("links", "bits", "microbatches"),
                         [(2, (2, 8), 5), (2, (2, 4, 8), 4), (3, (2, 8), 4)])
@pytest.mark.parametrize("grid_s", [0.0, 0.01])
def test_the_bound_is_above_brute_force_and_the_plan_below_it(seed, links, bits, microbatches,
                                                             grid_s):
    model = small_case(seed, links=links, bits=bits, microbatches=microbatches)
    best = brute_force(model)
    solution = solve_by_links(model, grid_s=grid_s)
    assert solution.bound >= best - 1e-12
    assert solution.value <= best + 1e-12
    assert replay(model, solution.plan) == solution.value
    assert solution.method == "links"


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize(("links", "bits", "microbatches"), [(2, (2, 8), 6), (3, (2, 8), 5)])
def test_per_window_the_bound_is_above_brute_force_and_the_plan_holds_each_window(
        seed, links, bits, microbatches):
    model = small_case(seed, links=links, bits=bits, microbatches=microbatches)
    best = brute_force(model, window=2)
    solution = solve_by_links(model, grid_s=0.01, window=2)
    assert solution.bound >= best - 1e-12
    assert solution.value <= best + 1e-12
    assert all(solution.plan[n] == solution.plan[n - n % 2] for n in range(microbatches))


def values_model(value_of) -> PipelineModel:
    model = small_case(0, links=3, bits=(2, 4, 8), microbatches=2)
    return PipelineModel(model.stages, model.links, model.period_s, model.duration_s,
                         model.utility, model.actions,
                         tuple(float(value_of(a)) for a in model.actions))


def test_additive_values_split_exactly():
    model = values_model(lambda bits: 0.9 - sum(0.1 / b for b in bits))
    per_link, slack = split_values(model)
    assert slack == pytest.approx(0.0, abs=1e-12)
    index = {b: i for i, b in enumerate(model.bit_choices)}
    for action, value in zip(model.actions, model.values, strict=True):
        assert sum(per_link[k, index[b]] for k, b in enumerate(action)) == pytest.approx(value)


def test_other_values_get_a_slack_that_keeps_the_split_above_them():
    model = values_model(lambda bits: min(bits) / 8)  # the worst link decides: not additive
    per_link, slack = split_values(model)
    assert slack > 0
    index = {b: i for i, b in enumerate(model.bit_choices)}
    for action, value in zip(model.actions, model.values, strict=True):
        split = sum(per_link[k, index[b]] for k, b in enumerate(action)) + slack
        assert split >= value - 1e-12


def vit_base_4(policy: str):
    return load_config(ROOT / "configs" / "reports" / "vit-base-4.toml").replace(**{
        "policy.name": policy, "links.*.scale": 2.0, "run.duration_s": 40.0,
    })


def test_the_simulator_replays_the_plan_and_no_policy_beats_the_bound():
    trace = ROOT / "traces" / "step-drop.csv"
    result = simulate(vit_base_4("optimal"), trace)
    optimum = result.summary["optimal"]
    assert optimum["method"] == "links"
    assert result.summary["utility"]["value"] == pytest.approx(optimum["plan_value"], abs=1e-12)
    for policy in ("fixed:32", "fixed:4", "fixed:2", "quantpipe", "mpc", "planner"):
        scored = simulate(vit_base_4(policy), trace).summary["utility"]["value"]
        assert scored <= optimum["bound"] + 1e-12, policy
    assert optimum["plan_value"] >= max(
        simulate(vit_base_4(f"fixed:{b}"), trace).summary["utility"]["value"]
        for b in (2, 4)) - 1e-12  # fixed bitwidths are among the plans it tries


def test_the_bound_reports_its_progress_over_every_programme():
    shares = []
    solve_by_links(small_case(0, links=2, bits=(2, 8), microbatches=5), on_progress=shares.append)
    assert shares == sorted(shares) and shares[0] == 0.0 and 0.75 <= shares[-1] < 1.0
