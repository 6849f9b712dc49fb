"""Comparisons of policies on traces, the library behind ``python -m sim.compare`` and
``python -m sim.report``: every (trace, policy) run on an engine (`sim.engine`), each run
measured against its trace's offline optimum (the `optimal` run's bound, `sim.optimal`; by
default on one-link pipelines only), policies ranked by mean utility over the held-out traces with a
95 % bootstrap interval, and the Markdown, tables and plots of a comparison.
"""

from __future__ import annotations

import csv
import datetime as dt
import fnmatch
from collections import Counter
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from quantpipe_core.config import Config
from quantpipe_core.formatting import cell, count, percent
from quantpipe_core.results import RUN_FILES, TARGET_MET_SHARE, read_windows
from sim.engine import Engine, Run

DEFAULT_POLICIES = ("fixed:32", "fixed:8", "fixed:4", "fixed:2", "quantpipe", "controller", "mpc",
                    "oracle", "optimal")
NEAR_OPTIMUM = 0.9  # a trace counts as reached when the utility is at least this share of it
CONFIDENCE = 0.95
RESAMPLES = 2000
COLUMNS = (
    ("utility", "utility_value", 4),
    ("share of optimum", "share_of_optimum", 3),
    ("gap to optimal", "gap_to_optimal", 4),
    ("target met", "target_met_fraction", 3),
    ("items/s", "throughput_items_per_s", 2),
    ("p50 latency s", "latency_p50_s", 2),
    ("p95 latency s", "latency_p95_s", 2),
    ("mean bits", "mean_bits", 2),
    ("expected accuracy", "expected_accuracy", 4),
    ("switches", "bits_switches", 0),
)
OPTIMUM_KEYS = ("share_of_optimum", "gap_to_optimal")  # empty cells, not n/a, without one
POLICY_NOTES = (
    "`oracle` is quantpipe's rule with a perfect forecast of the next window: the most bits "
    "whose window would cross the link in time on the real future trace (simulator only). "
    "`optimal` replays the utility's offline optimum, found by dynamic programming over the "
    "whole trace (simulator only); its bound, an upper bound on any policy's utility on that "
    "trace, is the reference every share of the optimum and gap to optimal is taken against."
)


def with_policy(config: Config, policy: str) -> Config:
    """`config` running `policy`; its parameters are kept only for the policy they were for."""
    params = dict(config.policy.params) if policy == config.policy.name else {}
    return config.replace(**{"policy.name": policy, "policy.params": params})


def link_count(config: Config) -> int:
    """Links between the pipeline's stages: one fewer than its devices."""
    return len(config.devices) - 1


def optimum_feasible(config: Config) -> bool:
    """Whether comparisons run `optimal` on this pipeline: exact enough and fast enough on one
    link only (with more, `sim.link_relaxation` gives a loose bound at minutes per trace)."""
    return link_count(config) == 1


def without_optimal_reason(links: int) -> str:
    """Why a page about a pipeline of `links` links has no optimum to measure against."""
    if links == 1:
        return ("No `optimal` run among these policies, so shares of the optimum and gaps to "
                "optimal are left empty.")
    return (f"`optimal` is not run on this pipeline: with {links} links the joint dynamic "
            "programme does not finish, and the bound from one relaxed programme per link "
            "(`sim.link_relaxation`) is loose and takes minutes per trace (docs/policies.md), so "
            "shares of the optimum and gaps to optimal are left empty.")


class RunFailed(RuntimeError):
    """A simulation of the comparison raised; a report needs every one."""


def trace_names(traces: Sequence[Path]) -> list[str]:
    """Each trace's name in folders, rows and plots: its stem, with as many of its parent
    folders as make it unique (``a/t.csv`` and ``b/t.csv`` are ``a-t`` and ``b-t``), so that
    two traces never share a run folder or a row. A file given twice is refused."""
    paths = [t.resolve() for t in traces]
    if twice := [t for t, p in zip(traces, paths, strict=True) if paths.count(p) > 1]:
        raise ValueError(f"trace {twice[0]} is given twice")
    folders = [p.parent.parts[1:] for p in paths]  # without the root
    depth = [0] * len(paths)

    def names() -> list[str]:
        return ["-".join([*f[len(f) - d:], p.stem]) for f, d, p in zip(folders, depth, paths,
                                                                        strict=True)]

    while clashes := [i for i, n in enumerate(names())
                      if Counter(names())[n] > 1 and depth[i] < len(folders[i])]:
        for i in clashes:
            depth[i] += 1
    counts = Counter(names())  # still equal only when "a-b/t" meets "a/b-t": number them
    return [f"{n}-{i + 1}" if counts[n] > 1 else n for i, n in enumerate(names())]


def compare(
    config: Config, traces: Sequence[Path], policies: Sequence[str], out: Path, engine: Engine,
    names: Sequence[str] | None = None,
) -> list[dict[str, Any]]:
    """Every pair on `engine`, each run's four files in ``out/<trace>-<policy>/`` (the trace
    named by `names`, by default `trace_names`: a caller comparing several sets of traces names
    them all at once); their summaries with the trace, policy and folder, in (trace, policy)
    order, each measured against its trace's optimum (`against_optimum`)."""
    names = trace_names(traces) if names is None else names
    cases = [(t, n, p) for t, n in zip(traces, names, strict=True) for p in policies]
    runs = [Run(str(i), with_policy(config, p), t, RUN_FILES)
            for i, (t, _, p) in enumerate(cases)]
    rows: dict[str, dict[str, Any]] = {}
    for outcome in tqdm(engine.map(runs), total=len(runs), desc="runs", unit="run"):
        trace, name, policy = cases[int(outcome.key)]
        if outcome.summary is None:
            raise RunFailed(f"{trace} with policy {policy}: {outcome.error}")
        folder = out / f"{name}-{policy.replace(':', '')}"
        outcome.write_files(folder)
        rows[outcome.key] = {"trace": name, "policy": policy, "out": str(folder),
                             **outcome.summary}
    return against_optimum([rows[run.key] for run in runs])


def against_optimum(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each run with its utility (``utility_value``) and, where its trace has an `optimal` run,
    that run's bound (``optimum``), the utility's share of it and its gap to it (utility minus
    bound, so <= 0 up to the plan's own gap). Rows must come from one set of traces: a trace is
    known by its name."""
    optimum = {r["trace"]: r["optimal"]["bound"] for r in rows if r["policy"] == "optimal"}
    judged = []
    for row in rows:
        value, bound = row["utility"]["value"], optimum.get(row["trace"])
        judged.append(dict(row, utility_value=value, optimum=bound,
                           share_of_optimum=share_of(value, bound),
                           gap_to_optimal=None if bound is None else value - bound))
    return judged


def share_of(value: float | None, optimum: float | None) -> float | None:
    """`value` as a share of `optimum`; none without either, or when the optimum is not above
    0, where a share says nothing."""
    if value is None or optimum is None or optimum <= 0:
        return None
    return value / optimum


def bootstrap_interval(values: Sequence[float], seed: int = 0) -> tuple[float, float]:
    """The 95 % percentile-bootstrap interval of the mean of `values` (one per trace): the
    spread of the ranking's means if the traces had been another draw of similar links.
    Deterministic (fixed `seed`); a single value, or equal values, give a point."""
    if not values:
        raise ValueError("a bootstrap interval needs at least one value")
    data = np.asarray(values, dtype=float)
    draws = np.random.default_rng(seed).integers(0, len(data), size=(RESAMPLES, len(data)))
    means = data[draws].mean(axis=1)
    tail = 100 * (1 - CONFIDENCE) / 2
    low, high = np.percentile(means, [tail, 100 - tail])
    return float(low), float(high)


@dataclass(frozen=True)
class Standing:
    """One policy over a set of traces: the ranking's row."""

    policy: str
    utility: float  # mean over traces
    interval: tuple[float, float]  # 95 % bootstrap interval of that mean
    share_of_optimum: float | None  # mean utility / mean optimum, over traces with an optimum
    near_optimum: float | None  # share of those traces where the utility >= NEAR_OPTIMUM of it
    target_met: float | None
    quality: float | None  # expected accuracy, or mean bits without an accuracy profile


def ranking(rows: Sequence[dict[str, Any]], policies: Sequence[str]) -> list[Standing]:
    """Policies by mean utility over the traces of `rows` (judged by `against_optimum`), then
    by quality; policies without a run in `rows` are left out."""
    table = []
    for policy in policies:
        mine = [r for r in rows if r["policy"] == policy]
        if not mine:
            continue
        utilities = [r["utility_value"] for r in mine]
        known = [r for r in mine if r["optimum"] is not None]
        shares = [r["share_of_optimum"] for r in known if r["share_of_optimum"] is not None]
        table.append(Standing(
            policy=policy,
            utility=sum(utilities) / len(utilities),
            interval=bootstrap_interval(utilities),
            share_of_optimum=share_of(mean([r["utility_value"] for r in known]),
                                      mean([r["optimum"] for r in known])),
            near_optimum=(sum(s >= NEAR_OPTIMUM for s in shares) / len(shares)
                          if shares else None),
            target_met=mean([r["target_met_fraction"] for r in mine]),
            quality=mean([quality_of(r) for r in mine]),
        ))
    return sorted(table, key=lambda s: (-s.utility, -(s.quality or 0)))


def training_traces(traces: Sequence[Path], patterns: Sequence[str]) -> set[str]:
    """Names (`trace_names`) of the traces whose file name matches one of the glob
    `patterns`."""
    return {name for t, name in zip(traces, trace_names(traces), strict=True)
            if any(fnmatch.fnmatch(t.name, p) for p in patterns)}


def quality_of(row: dict[str, Any]) -> float | None:
    return row["expected_accuracy"] if row["expected_accuracy"] is not None else row["mean_bits"]


def mean(values: Sequence[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return sum(known) / len(known) if known else None


def utility_cell(standing: Standing) -> str:
    """Mean utility with its interval: ``0.8123 [0.7901, 0.8342]``."""
    low, high = standing.interval
    return f"{standing.utility:.4f} [{low:.4f}, {high:.4f}]"


def optimum_cell(value: float | None, digits: int = 3) -> str:
    """A share of the optimum or a gap to it; empty where there is none (no `optimal` run, or
    an optimum not above 0)."""
    return "" if value is None else f"{value:.{digits}f}"


def run_setting(rows: Sequence[dict[str, Any]], read: Callable[[dict[str, Any]], Any],
                show: Callable[[Any], str]) -> str:
    """A setting of these runs (read from each run's summary) as a page states it: its one
    value, or where to look when the runs differ, so that a page never states a default that
    its runs did not use."""
    values = sorted({read(r) for r in rows})
    return show(values[0]) if len(values) == 1 else "see each run's summary.json"


def latency_slo(rows: Sequence[dict[str, Any]]) -> str:
    """The utility's latency SLO of these runs, for a reader."""
    return run_setting(rows, lambda r: r["utility"]["latency_slo_s"], lambda v: f"{v:.2f} s")


def metrics_interval(rows: Sequence[dict[str, Any]]) -> str:
    """The intervals target met is counted over (``run.metrics_interval_s`` of the runs)."""
    return run_setting(rows, lambda r: r["run"]["config"]["run"]["metrics_interval_s"],
                       lambda v: f"{v:g} s")


def utility_weights(rows: Sequence[dict[str, Any]]) -> str:
    """The utility's weights of lateness and switching in these runs."""
    return run_setting(rows, lambda r: (r["utility"]["late_weight"], r["utility"]["switch_weight"]),
                       lambda w: f"late {w[0]:g}, switching {w[1]:g}")


def definitions(rows: Sequence[dict[str, Any]], slo: str | None = None) -> str:
    """What the rankings' numbers mean, for their readers, with the settings of `rows` (the
    runs); `slo` says what the SLO is where the page gives it elsewhere."""
    near = percent(NEAR_OPTIMUM)
    return (
        "Utility (`quantpipe_core.utility`): per offered microbatch, the value of the bits it "
        "was delivered with (expected accuracy, or log2(bits)/5 without an accuracy profile; 0 "
        "if it never arrived), minus its seconds past the latency SLO "
        f"({slo or latency_slo(rows)}), minus the change in value from the previous one (each "
        f"times its weight: {utility_weights(rows)}); higher is "
        "better, and it can be negative. Policies are ranked by the mean over traces, with a "
        f"{percent(CONFIDENCE)} percentile-bootstrap interval over traces ({RESAMPLES} "
        "resamples, fixed seed). Share of optimum: utility over the trace's optimum, and over "
        f"traces mean utility over mean optimum; >= {near} of optimum: the share of traces on "
        f"which the policy reached at least {near} of that trace's optimum. Gap to optimal: "
        "utility minus the optimum. Target met: share of the intervals of "
        f"`run.metrics_interval_s` ({metrics_interval(rows)}; first excluded) in which the sink "
        "received at least "
        f"{percent(TARGET_MET_SHARE)} of the target rate."
    )


def report(rows: Sequence[dict[str, Any]], traces: Sequence[Path], policies: Sequence[str],
           command: str, training: Collection[str] = ()) -> str:
    """The Markdown report: the ranking over held-out traces, the one over `training` traces
    (names), then a table per trace."""
    accuracy_known = any(r["expected_accuracy"] is not None for r in rows)
    quality = "expected accuracy" if accuracy_known else "mean bits (no accuracy profile)"
    versions = rows[0]["run"]["versions"] if rows else {}
    names = trace_names(traces)
    held_out = [n for n in names if n not in training]
    trained = [n for n in names if n in training]
    lines = [
        "# Policy comparison",
        "",
        f"Command: `{command}`  ",
        f"Date: {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC  ",
        "Versions: " + ", ".join(f"{k} {v}" for k, v in versions.items()),
        "",
        definitions(rows),
        "",
        POLICY_NOTES,
        "",
    ]
    if rows and not any(r["policy"] == "optimal" for r in rows):
        lines += [without_optimal_reason(len(rows[0]["run"]["cuts"])), ""]
    if trained:
        lines += [f"Training traces, which policies may be tuned on: "
                  f"{', '.join(trained)}. The ranking is "
                  f"over the {count(len(held_out), 'held-out trace')}, which no policy was "
                  "tuned on; the training traces have a table of their own below it.", ""]
    else:
        lines += ["No traces are marked for training: the ranking is over every trace, so a "
                  "policy tuned on any of them is favoured here.", ""]
    lines += [f"## Ranking ({count(len(held_out), 'held-out trace' if trained else 'trace')})",
              "", "![scatter](scatter.png)", "",
              f"| rank | policy | utility [95 % CI] | share of optimum "
              f"| >= {percent(NEAR_OPTIMUM)} of optimum | target met | {quality} |",
              "|---" * 7 + "|"]
    for rank, s in enumerate(ranking(held_out_rows(rows, training), policies), start=1):
        lines += [f"| {rank} | {s.policy} | {utility_cell(s)} | {optimum_cell(s.share_of_optimum)} "
                  f"| {optimum_cell(s.near_optimum, 2)} | {cell(s.target_met, 3)} "
                  f"| {cell(s.quality, 4)} |"]
    lines += [""]
    if trained:
        lines += [f"### Training traces ({count(len(trained), 'trace')})", "",
                  *training_table([r for r in rows if r["trace"] in training], policies,
                                  quality)]
    for trace, name in zip(traces, names, strict=True):
        mine = [r for r in rows if r["trace"] == name]
        role = " (training)" if name in training else ""
        lines += [f"## {name}{trace.suffix}{role}", "", f"![{name}]({name}.png)", ""]
        header = ["policy", *(name for name, _, _ in COLUMNS)]
        lines += ["| " + " | ".join(header) + " |", "|---" * len(header) + "|"]
        for row in mine:
            cells = [row["policy"], *(optimum_cell(row[key], d) if key in OPTIMUM_KEYS
                                      else cell(row[key], d) for _, key, d in COLUMNS)]
            lines += ["| " + " | ".join(cells) + " |"]
        lines += [""]
    return "\n".join(lines) + "\n"


def held_out_rows(rows: Sequence[dict[str, Any]], training: Collection[str]
                  ) -> list[dict[str, Any]]:
    return [r for r in rows if r["trace"] not in training]


def training_table(rows: Sequence[dict[str, Any]], policies: Sequence[str],
                   quality: str) -> list[str]:
    """The smaller table over the training traces, in ranking order without ranks: the
    ranking that counts is the held-out one."""
    lines = [f"| policy | utility [95 % CI] | share of optimum | target met | {quality} |",
             "|---" * 5 + "|"]
    for s in ranking(rows, policies):
        lines += [f"| {s.policy} | {utility_cell(s)} | {optimum_cell(s.share_of_optimum)} "
                  f"| {cell(s.target_met, 3)} | {cell(s.quality, 4)} |"]
    return [*lines, ""]


def plots(rows: Sequence[dict[str, Any]], traces: Sequence[Path], policies: Sequence[str],
          out: Path, training: Collection[str] = ()) -> None:
    """Per trace, rate, bits and delivered rate against time; one scatter of target met
    against quality over the held-out traces (the ranking's)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    for trace, name in zip(traces, trace_names(traces), strict=True):
        fig, (link_ax, bits_ax, rate_ax) = plt.subplots(
            3, 1, figsize=(10, 7.5), sharex=True, height_ratios=(1, 2, 2)
        )
        for index, row in enumerate(r for r in rows if r["trace"] == name):
            windows = [w for w in read_windows(Path(row["out"]) / "windows.csv")
                       if w["link"] == 0]
            t = [w["t_start_s"] for w in windows]
            if index == 0:
                link_ax.step(t, [w["trace_mbps"] for w in windows], where="post", color="grey")
            bits_ax.step(t, [w["bits"] for w in windows], where="post", label=row["policy"])
            rate_ax.step(t, [w["delivered_items_per_s"] for w in windows], where="post",
                         label=row["policy"])
        target = next(r["target_rate_items_per_s"] for r in rows if r["trace"] == name)
        rate_ax.axhline(target, color="grey", linestyle=":", label="target")
        link_ax.set_ylabel("Mbit/s (link 0)")
        bits_ax.set_ylabel("bits (link 0)")
        rate_ax.set_ylabel("delivered items/s (link 0)")
        rate_ax.set_xlabel("time (s)")
        bits_ax.legend(fontsize=7, ncol=4)
        fig.suptitle(f"{name}{trace.suffix}")
        fig.tight_layout()
        fig.savefig(out / f"{name}.png", dpi=90)
        plt.close(fig)
    fig, ax = plt.subplots(figsize=(6, 4.5))
    for s in ranking(held_out_rows(rows, training), policies):
        if s.target_met is not None and s.quality is not None:
            ax.scatter(s.target_met, s.quality)
            ax.annotate(s.policy, (s.target_met, s.quality), fontsize=8, xytext=(3, 3),
                        textcoords="offset points")
    accuracy_known = any(r["expected_accuracy"] is not None for r in rows)
    ax.set_xlabel("target met (share of intervals)")
    ax.set_ylabel("expected accuracy" if accuracy_known else "mean bits")
    ax.set_title("held-out traces" if training else "all traces", fontsize=9)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out / "scatter.png", dpi=90)
    plt.close(fig)


def write_table(rows: Sequence[dict[str, Any]], path: Path,
                training: Collection[str] = ()) -> None:
    keys = ["trace", "training", "policy", *(key for _, key, _ in COLUMNS), "optimum",
            "items_completed"]
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=keys, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(dict(r, training=r["trace"] in training) for r in rows)
