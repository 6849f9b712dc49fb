"""Sweep engine: the same short runs on the local and the Ray backend, and the driver's memory.

1. --runs (400) runs of 30 s on the five shipped traces, with engines already started and warm
   (each worker has loaded the simulator), as on a running cluster: the median wall time of
   --repeats sweeps per backend, Ray's over local's (goal: at most 1.15), and each backend's
   per-run overhead, (wall x jobs - time inside the simulations) / runs. Also the time to start
   each engine, and that both give the same table.
2. The driver's peak memory (peak RSS of the `python -m sim.sweep` process alone) for
   --memory-runs (10,000) tiny summary-only runs (--keep-runs none), next to a 100-run sweep.

    .venv/bin/python benchmarks/sweep.py [--runs 400] [--memory-runs 10000] [--jobs 2]
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from contextlib import closing
from itertools import islice
from pathlib import Path
from typing import Any

import pyarrow.parquet  # noqa: F401  (loaded here, so that no timed sweep pays for it)

from sim.engine import Engine, LocalEngine, RayEngine, Run
from sim.grid import read_grid
from sim.sweep import sweep

ROOT = Path(__file__).resolve().parents[1]
GOAL_RATIO = 1.15
POLICIES = ["fixed:4", "quantpipe", "controller", "mpc"]
MICROBATCHES = [4, 8]
TRACE_COUNT = 5  # the shipped traces


def write_spec(path: Path, duration_s: float, axis: str, values: list) -> Path:
    path.write_text(f"""
config = "{ROOT / 'configs' / 'reports' / 'digits-vit.toml'}"
traces = [{{path = "{ROOT / 'traces'}", scale = 0.1}}]
policies = {json.dumps(POLICIES)}
[set]
"run.duration_s" = {duration_s}
[axes]
"model.microbatch" = {MICROBATCHES}
"{axis}" = {json.dumps(values)}
""")
    return path


def per_axis(runs: int) -> int:
    """Values of the last axis that make about `runs` runs."""
    return max(1, round(runs / (TRACE_COUNT * len(POLICIES) * len(MICROBATCHES))))


def timed_sweeps(engines: dict[str, Engine], spec: Path, folder: Path, jobs: int,
                 repeats: int) -> dict[str, dict[str, Any]]:
    """Warm each engine's workers, then time `repeats` sweeps of `spec` on each, taking turns
    so that other load on the machine weighs on both alike."""
    grid = read_grid(spec)
    for engine in engines.values():
        warm = islice(grid.points(), 2 * jobs)
        list(engine.map(Run(p.key, p.config, p.trace) for p in warm))
    figures: dict[str, dict[str, Any]] = {name: {"walls": [], "overheads": [], "simulation": []}
                                          for name in engines}
    for index in range(repeats):
        for name, engine in engines.items():
            out = folder / f"timed-{name}-{index}"
            begin = time.perf_counter()
            tally = sweep(grid, engine, out, progress=False)
            wall = time.perf_counter() - begin
            assert tally.failed == 0 and tally.ran == len(grid)
            figures[name]["walls"].append(wall)
            figures[name]["overheads"].append((wall * jobs - tally.worker_seconds) / tally.ran)
            figures[name]["simulation"].append(tally.worker_seconds / tally.ran)
            figures[name]["table"] = (out / "results.csv").read_text()
    return figures


def started(make: Callable[[], Engine]) -> tuple[Engine, float]:
    """An engine and the seconds it took to start."""
    begin = time.perf_counter()
    engine = make()
    return engine, time.perf_counter() - begin


def driver_peak_mb(spec: Path, out: Path, backend: str, jobs: int) -> float:
    """The peak RSS (VmHWM) of a `python -m sim.sweep` driver process, in MB. Not ru_maxrss:
    Linux carries that over from the forked parent, this script, into the child."""
    code = ("import re, sys; from pathlib import Path; from sim import sweep; "
            "rc = sweep.main(sys.argv[1:]); "
            "print(re.search(r'VmHWM:\\s+(\\d+)', Path('/proc/self/status').read_text())[1]); "
            "sys.exit(rc)")
    done = subprocess.run(
        [sys.executable, "-c", code, str(spec), "--backend", backend, "--jobs", str(jobs),
         "--out", str(out), "--keep-runs", "none"],
        cwd=ROOT, capture_output=True, text=True,
    )
    if done.returncode:
        raise SystemExit(f"the {backend} sweep failed:\n{done.stderr}")
    return int(done.stdout.split()[-1]) / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=400, help="short runs to time (400)")
    parser.add_argument("--memory-runs", type=int, default=10_000,
                        help="tiny runs for the driver's memory (10000)")
    parser.add_argument("--jobs", type=int, default=2, help="workers of each backend (2)")
    parser.add_argument("--repeats", type=int, default=3, help="sweeps for the median (3)")
    args = parser.parse_args()
    if min(args.runs, args.memory_runs, args.jobs, args.repeats) < 1:
        parser.error("every count must be at least 1")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        rates = [80 + 8 * i for i in range(per_axis(args.runs))]
        spec = write_spec(folder / "timed.toml", 30, "source.target_rate", rates)
        runs = len(read_grid(spec))
        print(f"{runs} runs of 30 s (5 traces x {len(POLICIES)} policies x "
              f"{len(MICROBATCHES)} microbatch sizes x {len(rates)} target rates), "
              f"{args.jobs} jobs, warm engines, median of {args.repeats} sweeps:")
        local, local_start = started(lambda: LocalEngine(args.jobs))
        ray, ray_start = started(lambda: RayEngine(None, args.jobs))
        with closing(local), closing(ray):
            figures = timed_sweeps({"local": local, "ray": ray}, spec, folder, args.jobs,
                                   args.repeats)
        for name, start in (("local", local_start), ("ray", ray_start)):
            mine = figures[name]
            walls = ", ".join(f"{w:.2f}" for w in mine["walls"])
            print(f"  {name:5}  wall {statistics.median(mine['walls']):.2f} s ({walls}); "
                  f"per-run overhead {1000 * statistics.median(mine['overheads']):.1f} ms; "
                  f"simulation {1000 * statistics.median(mine['simulation']):.1f} ms per run; "
                  f"engine start {start:.2f} s")
        ratio = statistics.median(figures["ray"]["walls"]) / statistics.median(
            figures["local"]["walls"])
        verdict = "met" if ratio <= GOAL_RATIO else "NOT met"
        print(f"  ray / local wall time: {ratio:.3f} (goal <= {GOAL_RATIO}): {verdict}")
        same = figures["ray"]["table"] == figures["local"]["table"]
        print(f"  results.csv of the two backends: {'identical' if same else 'DIFFERENT'}")

        seeds = per_axis(args.memory_runs)
        print(f"driver peak memory (peak RSS), tiny 10 s runs, --keep-runs none, "
              f"{args.jobs} jobs:")
        for backend in ("local", "ray"):
            sizes = []
            for count in sorted({per_axis(100), seeds}):
                tiny = write_spec(folder / f"tiny-{count}.toml", 10, "run.seed",
                                  list(range(count)))
                start = time.perf_counter()
                peak = driver_peak_mb(tiny, folder / f"memory-{backend}-{count}", backend,
                                      args.jobs)
                sizes.append((len(read_grid(tiny)), peak, time.perf_counter() - start))
            line = "; ".join(f"{n:,} runs {mb:.0f} MB ({s:.0f} s)" for n, mb, s in sizes)
            (n0, mb0, _), (n1, mb1, _) = sizes[0], sizes[-1]
            growth = 1024 * (mb1 - mb0) / (n1 - n0) if n1 > n0 else math.nan
            print(f"  {backend:5}  {line}; {growth:.2f} KB more per run")


if __name__ == "__main__":
    main()
