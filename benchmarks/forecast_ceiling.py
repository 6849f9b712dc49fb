"""What a perfect forecast of window rates would give the planner (docs/policies.md).

    .venv/bin/python benchmarks/forecast_ceiling.py --shared ../shared/traces \
        [--pipeline vit-base-2] [--split held-out|training] [--known 1,2,5] [--jobs 2]

A diagnostic, not a policy: `PerfectForecast` is the planner (horizon 5 windows) with one
scenario, the true mean capacity of each of the next `known` windows (read from the link's
trace, as `oracle` reads it; the windows after them at the last one's), and no revisions. It
separates what the planner's model can reach from what its forecast costs. Each run is scored
against the offline optimum (`optimal`) and the optimum of plans that hold each window
(`optimal` with ``per = "window"``), on the report's traces and scales
(docs/reports/report.toml), training or held-out; shares are mean utility over mean optimum on
the traces whose optimum is above zero, as in the reports.
"""

from __future__ import annotations

import argparse
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from quantpipe_core.policy import Observation, PlannerPolicy
from quantpipe_core.trace import Trace, load_trace
from sim import simulate
from sim.report import SpecError, pipeline, read_spec, scaled

ROOT = Path(__file__).parents[1]
SPEC = ROOT / "docs" / "reports" / "report.toml"
POLICY = "forecast_ceiling:PerfectForecast"  # run as a script: its folder is on sys.path


@dataclass
class PerfectForecast(PlannerPolicy):
    """The planner told the true mean capacity of the next `known` windows (`trace` at `scale`;
    the report configs' links read their traces with the defaults `load_trace` has)."""

    trace: str = ""
    scale: float = 1.0
    known: int = 1
    link: Trace | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        super().__post_init__()
        self.link = load_trace(self.trace, scale=self.scale)

    def decide(self, obs: Observation) -> list[int]:
        assert self.link is not None
        window_s = obs.window_len * obs.budget_s
        ahead = np.minimum(np.arange(self.horizon), self.known - 1)
        starts = obs.now_s + window_s * ahead
        rates = [np.array([max(self.link.delivered_bits(t, t + window_s) / window_s / 1e6,
                               1e-9)]) for t in starts]
        return [self._plan(obs, rates[0], obs.window_len, rates[1:])] * obs.window_len

    def revise(self, obs: Observation) -> None:
        return None


def utility(config, trace: Path, policy: str, params: dict) -> float:
    result = simulate(config.replace(**{"policy.name": policy, "policy.params": params}),
                      trace).summary
    return result["optimal"]["bound"] if policy == "optimal" else result["utility"]["value"]


def window_counts(text: str) -> list[int]:
    """``--known``: comma-separated counts of windows, each from 1 to the planner's horizon."""
    try:
        counts = [int(part) for part in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"not whole numbers: {text!r}") from None
    horizon = PlannerPolicy().horizon
    if not counts or not all(1 <= k <= horizon for k in counts):
        raise argparse.ArgumentTypeError(f"each count must be 1 to {horizon}, got {text!r}")
    return counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shared", type=Path, required=True, help="the shared traces folder")
    parser.add_argument("--pipeline", default="vit-base-2", help="a pipeline of report.toml")
    parser.add_argument("--split", choices=("held-out", "training"), default="held-out")
    parser.add_argument("--known", type=window_counts, default=[1, 2, 5],
                        help="comma-separated counts of windows whose rate is told, 1 to 5 "
                             "(default 1,2,5)")
    parser.add_argument("--jobs", type=int, default=2)
    args = parser.parse_args()
    if not args.shared.is_dir():
        parser.error(f"--shared {args.shared}: no such folder")
    try:
        spec = read_spec(SPEC, args.shared)
        entry = pipeline(spec, args.pipeline)
    except SpecError as error:
        parser.error(str(error))
    training = set(spec.training())
    cases = [(scaled(entry.config, entry.scales[folder]), trace, entry.scales[folder])
             for folder in spec.folders for trace in spec.traces(folder)
             if (trace in training) == (args.split == "training")]
    runs = [("optimal", {}), ("optimal", {"per": "window"}), ("planner", {})]
    runs += [(POLICY, {"known": k}) for k in args.known]
    with ProcessPoolExecutor(args.jobs) as pool:
        scores = {}
        for policy, params in runs:
            jobs = [(config, trace, policy,
                     {**params, "trace": str(trace), "scale": scale} if policy == POLICY
                     else params) for config, trace, scale in cases]
            got = pool.map(utility, *zip(*jobs, strict=True))
            scores[policy, str(params)] = np.array(list(got))
            print(f"ran {policy} {params or ''}", flush=True)
    optimum = scores["optimal", "{}"]
    per_window = scores["optimal", str({"per": "window"})]
    names = [f"{policy.split(':')[-1]} {params if params != '{}' else ''}".strip()
             for policy, params in scores]
    print("\nutility per trace: " + " | ".join(names))
    for n, (_, trace, _) in enumerate(cases):
        print(f"{trace.name:32s} " + " ".join(f"{got[n]:8.3f}" for got in scores.values()))
    kept = optimum > 0
    print(f"\n{args.pipeline}, {args.split}: {kept.sum()} of {len(cases)} traces with an "
          "optimum above zero")
    print("| policy | of the optimum | of the per-window optimum | >= 90 % of the optimum |")
    print("|---|---|---|---|")
    for name, got in zip(names, scores.values(), strict=True):
        share = got[kept].sum() / optimum[kept].sum()
        of_window = got[kept].sum() / per_window[kept].sum()
        near = np.mean(got[kept] >= 0.9 * optimum[kept])
        print(f"| {name} | {share:.3f} | {of_window:.3f} | {near:.0%} |")


if __name__ == "__main__":
    main()
