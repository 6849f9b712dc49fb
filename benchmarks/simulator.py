"""Simulator speed: a one-hour trace through a 4-stage pipeline at about 20 microbatches/s.

(Named simulator.py because a script called sim.py would shadow the `sim` package.)

Goal: 10 s or less of wall time on this machine. Prints the median wall time over --repeats
runs, the simulated microbatches and SimPy events per second.

    .venv/bin/python benchmarks/simulator.py [--hours 1] [--stages 4] [--repeats 3]
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

from quantpipe_core.plan import LinkSpec, SourceSpec, StageSpec
from quantpipe_core.policy import QuantPipePolicy
from quantpipe_core.quant import wire_size
from quantpipe_core.trace import Trace
from sim.pipeline import Pipeline

GOAL_S = 10.0
SHAPE = (1, 197, 768)
ALLOWED = (2, 3, 4, 6, 8, 16)


def random_walk(duration_s: float, seed: int) -> Trace:
    """A one-second-step random walk between 20 and 80 Mbit/s."""
    rng = np.random.default_rng(seed)
    steps = int(duration_s)
    mbps = np.clip(50 * np.exp(np.cumsum(rng.normal(0, 0.05, steps))), 20, 80)
    return Trace.from_segments(np.arange(steps, dtype=float), mbps, float(steps))


def once(hours: float, stages: int) -> tuple[float, int, int]:
    duration = hours * 3600
    packet = {b: wire_size(SHAPE, b) for b in (*ALLOWED, 32)}
    stage_specs = [StageSpec(0.04, encode_s={b: 0.002 for b in packet},
                             decode_s={b: 0.001 for b in packet}) for _ in range(stages)]
    links = [LinkSpec(random_walk(duration, k), packet, QuantPipePolicy(), SHAPE)
             for k in range(stages - 1)]
    source = SourceSpec(target_rate_items_per_s=20.0, items_per_microbatch=1)
    pipeline = Pipeline(stage_specs, links, source, allowed_bits=ALLOWED, window=8)
    start = time.perf_counter()
    records = pipeline.run(duration)
    wall = time.perf_counter() - start
    events = next(pipeline.env._eid)  # SimPy numbers every event it schedules; no public count
    return wall, len(records.t_sink), events


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hours", type=float, default=1.0, help="trace length (1)")
    parser.add_argument("--stages", type=int, default=4, help="pipeline stages (4)")
    parser.add_argument("--repeats", type=int, default=3, help="runs for the median (3)")
    args = parser.parse_args()
    if args.stages < 2 or args.hours <= 0 or args.repeats < 1:
        parser.error("--stages >= 2, --hours > 0 and --repeats >= 1")
    runs = [once(args.hours, args.stages) for _ in range(args.repeats)]
    wall = statistics.median(r[0] for r in runs)
    _, microbatches, events = runs[0]
    print(f"{args.hours:g} h trace, {args.stages} stages, 20 microbatches/s offered")
    print(f"simulated {microbatches} microbatches, {events} events")
    print(f"wall time median {wall:.2f} s over {args.repeats} runs; "
          f"{events / wall:,.0f} events/s")
    verdict = "met" if wall <= GOAL_S else "MISSED"
    print(f"goal: one hour in <= {GOAL_S:.0f} s: {verdict} ({wall:.2f} s)")


if __name__ == "__main__":
    main()
