"""The offline optimum: equal to brute force on small cases, replayed by the simulator to the
value it promises, and above every built-in policy on the shipped traces."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest

from quantpipe_core.config import load_config
from quantpipe_core.plan import LinkSpec, SourceSpec, StageSpec
from quantpipe_core.policy import FixedPolicy
from quantpipe_core.trace import Trace
from quantpipe_core.utility import Utility, log_value
from sim import simulate
from sim.optimal import PipelineModel, replay, solve

ROOT = Path(__file__).parents[1]
SHIPPED = sorted((ROOT / "traces").glob("*.csv"))


def small_case(seed: int, links: int, bits: tuple[int, ...], microbatches: int) -> PipelineModel:
    """A pipeline whose links are sometimes too slow for the larger bitwidths."""
    rng = np.random.default_rng(seed)
    period = 0.1
    starts = [0.0, float(rng.uniform(0.1, 0.4))]
    trace = Trace.from_segments(starts, list(rng.uniform(0.2, 2.0, 2)), 1.0, end="hold")
    stages = [
        StageSpec(float(rng.uniform(0.01, 0.09)),
                  encode_s={b: 0.001 * b for b in bits} if k < links else {},
                  decode_s={b: 0.0005 * b for b in bits} if k > 0 else {})
        for k in range(links + 1)
    ]
    specs = [LinkSpec(trace, {b: int(1000 * b * rng.uniform(0.8, 1.2)) for b in bits},
                      FixedPolicy(bits[0]), (1,), latency_s=float(rng.uniform(0, 0.02)))
             for _ in range(links)]
    source = SourceSpec(8 / period, 8)
    utility = Utility(latency_slo_s=float(rng.uniform(0.1, 0.3)), late_weight=1.0,
                      switch_weight=float(rng.uniform(0, 1)))
    return PipelineModel.from_specs(stages, specs, source, period * microbatches - 1e-9,
                                    utility, bits, log_value)


def brute_force(model: PipelineModel, window: int = 1) -> float:
    """The best plan's utility, over every plan whose bits change only at a window's start."""
    decisions = -(-model.microbatches // window)
    return max(replay(model, [choice[n // window] for n in range(model.microbatches)])
               for choice in itertools.product(model.actions, repeat=decisions))


@pytest.mark.parametrize("seed", range(6))
def test_the_exact_programme_equals_brute_force_on_one_link(seed):
    model = small_case(seed, links=1, bits=(2, 4, 8), microbatches=7)
    best = brute_force(model)
    exact = solve(model, grid_s=0.0)
    assert exact.bound == pytest.approx(best, abs=1e-12)
    assert exact.value == pytest.approx(best, abs=1e-12)
    assert replay(model, exact.plan) == exact.value


@pytest.mark.parametrize("seed", range(3))
def test_the_exact_programme_equals_brute_force_on_two_links(seed):
    model = small_case(seed, links=2, bits=(2, 8), microbatches=5)
    assert solve(model, grid_s=0.0).value == pytest.approx(brute_force(model), abs=1e-12)


@pytest.mark.parametrize("seed", range(6))
def test_a_grid_gives_a_bound_above_the_optimum_and_a_plan_below_it(seed):
    model = small_case(seed, links=1, bits=(2, 4, 8), microbatches=7)
    best = brute_force(model)
    rounded = solve(model, grid_s=0.05)
    assert rounded.bound >= best - 1e-12
    assert rounded.value <= best + 1e-12


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("window", [2, 3])
@pytest.mark.parametrize(("links", "bits", "microbatches"), [(1, (2, 4, 8), 9), (2, (2, 8), 7)])
def test_per_window_the_programme_equals_brute_force_over_plans_that_hold_each_window(
        seed, window, links, bits, microbatches):
    model = small_case(seed, links=links, bits=bits, microbatches=microbatches)
    best = brute_force(model, window)
    exact = solve(model, grid_s=0.0, window=window)
    assert exact.bound == pytest.approx(best, abs=1e-12)
    assert exact.value == pytest.approx(best, abs=1e-12)
    assert all(exact.plan[n] == exact.plan[n - n % window] for n in range(microbatches))
    rounded = solve(model, grid_s=0.05, window=window)
    assert rounded.bound >= best - 1e-12
    assert rounded.value <= best + 1e-12
    assert best <= brute_force(model) + 1e-12  # holding a window can only cost


def test_a_window_shorter_than_one_microbatch_is_refused():
    with pytest.raises(ValueError, match="window must be >= 1"):
        solve(small_case(0, links=1, bits=(2, 4), microbatches=3), window=0)


def digits_config(policy: str, scale: float, duration: float):
    return load_config(ROOT / "configs" / "reports" / "digits-vit.toml").replace(**{
        "policy.name": policy, "links.*.scale": scale, "run.duration_s": duration,
    })


def test_the_simulator_replays_the_plan_to_the_value_the_optimum_promises():
    result = simulate(digits_config("optimal", 0.1, 40.0), ROOT / "traces" / "step-drop.csv")
    optimum = result.summary["optimal"]
    assert result.summary["utility"]["value"] == pytest.approx(optimum["plan_value"], abs=1e-12)
    assert optimum["bound"] >= optimum["plan_value"] - 1e-12


def test_per_window_the_simulator_holds_each_window_and_replays_the_plan_to_its_value():
    config = digits_config("optimal", 0.1, 40.0).replace(**{"policy.params.per": "window"})
    result = simulate(config, ROOT / "traces" / "step-drop.csv")
    optimum = result.summary["optimal"]
    assert optimum["window"] == config.policy.window
    assert result.summary["utility"]["value"] == pytest.approx(optimum["plan_value"], abs=1e-12)
    windows = result.records.windows
    assert len(windows) > 10 and all(len(set(w.bits)) == 1 for w in windows)
    every = simulate(digits_config("optimal", 0.1, 40.0), ROOT / "traces" / "step-drop.csv")
    assert "window" not in every.summary["optimal"]
    assert optimum["plan_value"] <= every.summary["optimal"]["bound"] + 1e-12


@pytest.mark.slow
@pytest.mark.parametrize("trace", SHIPPED, ids=lambda p: p.stem)
def test_the_optimum_bounds_every_built_in_policy_on_the_shipped_traces(trace):
    bound = simulate(digits_config("optimal", 0.1, 60.0), trace).summary["optimal"]["bound"]
    for policy in ("fixed:32", "fixed:16", "fixed:4", "fixed:2", "quantpipe", "controller",
                   "mpc", "oracle"):
        scored = simulate(digits_config(policy, 0.1, 60.0), trace).summary["utility"]["value"]
        assert scored <= bound + 1e-12, policy


def test_the_optimum_is_refused_outside_the_simulator_and_for_a_closed_source():
    from quantpipe_core.plan import link_policy

    with pytest.raises(ValueError, match="simulator only"):
        link_policy(digits_config("optimal", 1.0, 10.0), None)
    closed = digits_config("optimal", 1.0, 10.0).replace(**{"source.mode": "closed"})
    with pytest.raises(ValueError, match="open source"):
        simulate(closed, ROOT / "traces" / "step-drop.csv")


def test_the_optimum_refuses_parameters_it_does_not_take():
    trace = ROOT / "traces" / "step-drop.csv"
    with pytest.raises(ValueError, match="takes only grid_s and per"):
        simulate(digits_config("optimal", 0.1, 10.0).replace(**{"policy.params.grid": 1}), trace)
    with pytest.raises(ValueError, match="per must be 'microbatch' or 'window'"):
        simulate(digits_config("optimal", 0.1, 10.0).replace(**{"policy.params.per": "item"}),
                 trace)
    with pytest.raises(ValueError, match="grid_s must be a finite number >= 0"):
        simulate(digits_config("optimal", 0.1, 10.0).replace(**{"policy.params.grid_s": -1}),
                 trace)


def test_the_programme_reports_its_progress_in_order():
    shares = []
    model = small_case(0, links=1, bits=(2, 4, 8), microbatches=7)
    assert solve(model, on_progress=shares.append).bound == solve(model).bound
    assert shares == sorted(shares) and len(shares) == model.microbatches
    assert shares[0] == 0.0 and shares[-1] < 1.0
