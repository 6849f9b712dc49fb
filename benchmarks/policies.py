"""How long each built-in policy takes to decide one window, on observations from a real run.

    .venv/bin/python benchmarks/policies.py [--trace traces/like-norway-bus.csv]

Records the observations every window of a simulated MiniLM run (two stages, the report's
config), then times each policy's ``decide`` on that same sequence, in turns (round-robin over
policies, so machine noise hits all alike), and prints the median and 95th percentile per
decision. Goal for the planner: <= 1 ms median, since it runs on edge CPUs.
"""

from __future__ import annotations

import argparse
import copy
import time
from pathlib import Path

import numpy as np

from quantpipe_core import policy as policies
from quantpipe_core.config import load_config
from sim import simulate

ROOT = Path(__file__).parents[1]
POLICIES = ("quantpipe", "controller", "mpc", "planner")


def recorded_observations(trace: Path) -> list[policies.Observation]:
    """Every observation the planner saw on one simulated run."""
    seen: list[policies.Observation] = []
    decide = policies.PlannerPolicy.decide

    def recording(self: policies.PlannerPolicy, obs: policies.Observation) -> list[int]:
        seen.append(obs)
        return decide(self, obs)

    policies.PlannerPolicy.decide = recording  # type: ignore[method-assign]
    try:
        config = load_config(ROOT / "configs" / "reports" / "minilm-2.toml")
        simulate(config.replace(**{"policy.name": "planner", "links.*.scale": 1.5}), trace)
    finally:
        policies.PlannerPolicy.decide = decide  # type: ignore[method-assign]
    return seen


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trace", type=Path, default=ROOT / "traces" / "like-norway-bus.csv")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    observations = recorded_observations(args.trace)
    times: dict[str, list[float]] = {name: [] for name in POLICIES}
    for _ in range(args.rounds):
        for name in POLICIES:
            policy = copy.deepcopy(policies.make_policy(name))
            for obs in observations:
                began = time.perf_counter()
                policy.decide(obs)
                times[name].append(time.perf_counter() - began)
    print(f"{len(observations)} observations from {args.trace.name}, {args.rounds} rounds")
    for name, spent in times.items():
        ms = np.array(spent) * 1e3
        print(f"  {name:<11} median {np.median(ms):.3f} ms   p95 {np.percentile(ms, 95):.3f} ms")


if __name__ == "__main__":
    main()
