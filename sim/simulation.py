"""Simulate a configuration: resolve it (`quantpipe_core.plan`), run the SimPy pipeline, and
summarize.

    from quantpipe_core.config import load_config
    from sim import simulate
    result = simulate(load_config("cfg.toml"), trace="traces/step-drop.csv")
    result.summary["target_met_fraction"]
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from quantpipe_core.config import Config
from quantpipe_core.names import FLOAT_BITS
from quantpipe_core.plan import (
    LinkSpec,
    SourceSpec,
    StageSpec,
    build_specs,
    link_policy,
    notes,
    resolve,
    run_duration,
    run_info,
)
from quantpipe_core.policy import Policy
from quantpipe_core.results import RUN_FILES, Records, RunInfo, summary, write_results
from quantpipe_core.trace import Trace
from quantpipe_core.utility import Utility, log_value
from sim.link_relaxation import solve_by_links
from sim.optimal import OptimalPolicy, PipelineModel, Solution, solve
from sim.oracle import OraclePolicy
from sim.pipeline import Pipeline, check_run_size


@dataclass
class SimResult:
    """A finished run: its records, the resolved plan, and the summary."""

    records: Records
    info: RunInfo
    cuts: list[str]
    summary: dict[str, Any]

    def write(self, out: str | Path, files: Collection[str] = RUN_FILES) -> dict[str, Any]:
        """Write `files` (default: timeline.csv, windows.csv, summary.json and plot.png) into
        `out`; returns the summary."""
        return write_results(Path(out), self.records, self.info, self.summary, files)


def simulate(
    config: Config,
    trace: str | Path | None = None,
    *,
    on_progress: Callable[[float], None] | None = None,
    on_solving: Callable[[float], None] | None = None,
) -> SimResult:
    """Simulate `config`; `trace` goes on every link whose config names no trace of its own.
    `on_progress` gets the simulated time now and then; `on_solving` the share of the offline
    optimum's programme done, when the policy is `optimal`."""
    plan = resolve(config, trace)
    stages, links, source = build_specs(config, plan, sim_link_policy)
    duration = run_duration(config, plan.traces)
    if not duration:
        raise ValueError("run.duration_s is 0 and there is no trace to take a duration from")
    check_run_size(source, duration, len(stages))
    info = run_info(config, plan, stages, links, source, duration,
                    trace_mbps=[t.mean_mbps for t in plan.traces])
    solution = None
    if config.policy.name == "optimal":
        assert info.utility is not None
        solution = solve_optimal(config, stages, links, source, duration, info.utility,
                                 info.accuracy_of, on_solving)
    records = Pipeline(
        stages, links, source, allowed_bits=config.quant.allowed_bits,
        window=config.policy.window, on_progress=on_progress,
    ).run(duration)
    result = summary(records, info)
    result["notes"] = [*notes(config, plan), *result["notes"]]
    if solution is not None:
        result["optimal"] = solution.summary()
    return SimResult(records, info, plan.cuts, result)


def sim_link_policy(config: Config, trace: Trace | None) -> Policy:
    """The configured policy; the oracle, which reads the link's future, only here (`optimal`
    gets its plan once every link is built: `solve_optimal`)."""
    if config.policy.name == "oracle":
        return OraclePolicy(trace=trace)
    if config.policy.name == "optimal":
        return OptimalPolicy([])
    return link_policy(config, trace)


def solve_optimal(
    config: Config,
    stages: list[StageSpec],
    links: list[LinkSpec],
    source: SourceSpec,
    duration_s: float,
    utility: Utility,
    accuracy_of: Callable[[Sequence[int]], float | None] | None,
    on_progress: Callable[[float], None] | None = None,
) -> Solution:
    """The offline optimum of this run's utility; each link's policy replays its column. With
    several links, the joint programme does not finish on real traces: the bound comes from one
    relaxed programme per link (`sim.link_relaxation`), with the best plan found."""
    bits = sorted({*config.quant.allowed_bits, FLOAT_BITS})
    actions = list(itertools.product(bits, repeat=len(links)))
    profiled = accuracy_of is not None and all(accuracy_of(a) is not None for a in actions)
    value_of = accuracy_of if profiled else log_value
    model = PipelineModel.from_specs(stages, links, source, duration_s, utility, bits, value_of)
    params = dict(config.policy.params)
    if unknown := set(params) - {"grid_s", "per"}:
        raise ValueError(f"policy 'optimal' takes only grid_s and per, got {sorted(unknown)}")
    per = params.pop("per", "microbatch")
    if per not in ("microbatch", "window"):
        raise ValueError(f"policy 'optimal': per must be 'microbatch' or 'window', got {per!r}")
    window = config.policy.window if per == "window" else 1
    solver = solve if len(links) == 1 else solve_by_links
    solution = solver(model, **params, on_progress=on_progress, window=window)
    for k, link in enumerate(links):
        link.policy = OptimalPolicy([bits_[k] for bits_ in solution.plan])
    return solution
