"""Tune the planner's parameters on training traces only, as a share of the offline optimum.

    .venv/bin/python benchmarks/planner_tuning.py --shared ../shared/traces [--jobs 2]

Training traces: the HSDPA Norway bus, car and ferry routes (the report's split, docs/policies.md);
every other trace is held out for the reports. Pipelines: the report's one-link pipelines at their
Norway scale. Prints, for each parameter set of a small grid, the mean share of the optimum and
the worst trace, so the default can be picked on training traces alone.
"""

from __future__ import annotations

import argparse
import itertools
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

from quantpipe_core.config import load_config
from sim import simulate

ROOT = Path(__file__).parents[1]
PIPELINES = {"vit-base-2": 8.0, "minilm-2": 12.0, "digits-vit": 1.0}  # Norway scale of each
TRAIN = ("norway_bus_*", "norway_car_*", "norway_ferry_*")
GRID = {"risk": (1.0, 0.4), "history": (1, 2), "replan": (0.0, 0.5, 0.8)}


def utility(pipeline: str, trace: str, policy: str, params: dict) -> float:
    config = load_config(ROOT / "configs" / "reports" / f"{pipeline}.toml").replace(**{
        "policy.name": policy, "policy.params": params, "links.*.scale": PIPELINES[pipeline],
    })
    result = simulate(config, trace).summary
    return result["optimal"]["bound"] if policy == "optimal" else result["utility"]["value"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shared", type=Path, required=True, help="the shared traces folder")
    parser.add_argument("--jobs", type=int, default=2)
    args = parser.parse_args()
    traces = sorted(str(p) for pattern in TRAIN
                    for p in (args.shared / "hsdpa-norway").glob(pattern))
    cases = [(p, t) for p in PIPELINES for t in traces]
    sets = [dict(zip(GRID, values, strict=True)) for values in itertools.product(*GRID.values())]
    with ProcessPoolExecutor(args.jobs) as pool:
        pipelines, traces_ = [p for p, _ in cases], [t for _, t in cases]
        bounds = pool.map(utility, pipelines, traces_, ["optimal"] * len(cases), [{}] * len(cases))
        optimum = dict(zip(cases, bounds, strict=True))
        for params in sets:
            got = list(pool.map(utility, pipelines, traces_, ["planner"] * len(cases),
                                [params] * len(cases)))
            shares = np.array([g / optimum[c] for g, c in zip(got, cases, strict=True)])
            by_pipeline = {p: float(np.mean(shares[[c[0] == p for c in cases]]))
                           for p in PIPELINES}
            print(params, f"mean share {shares.mean():.3f}  worst {shares.min():.3f}  ",
                  "  ".join(f"{p} {s:.3f}" for p, s in by_pipeline.items()), flush=True)


if __name__ == "__main__":
    main()
