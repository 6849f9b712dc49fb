"""Wall-clock timing for profiles and benchmarks: medians, since these machines are shared."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable


def median_s(run: Callable[[], object], repeats: int) -> float:
    """Median wall time of `run` over `repeats` calls, after one warm-up call."""
    run()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def medians_in_turns(calls: dict[str, Callable[[], object]], repeats: int) -> dict[str, float]:
    """Median seconds of each call, timed one after another in `repeats` rounds (after one
    warm-up round), so that load that comes and goes falls on all of them."""
    times: dict[str, list[float]] = {name: [] for name in calls}
    for round_ in range(repeats + 1):
        for name, call in calls.items():
            start = time.perf_counter()
            call()
            if round_:
                times[name].append(time.perf_counter() - start)
    return {name: statistics.median(seconds) for name, seconds in times.items()}
