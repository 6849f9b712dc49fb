"""Compare policies on traces: ``python -m sim.compare TRACES... --policies ...``.

Runs every (trace, policy) pair on an engine (`sim.engine`: local processes, or Ray with
``--backend ray``), keeps each run's four files under ``OUT/<trace>-<policy>/``, and writes
``OUT/report.md`` (a table per trace, a ranking, the gap to the oracle), ``OUT/results.csv`` (one
row per run) and plots: per trace, the link's rate, and bits and delivered rate against time for
every policy, and one scatter of target-met share against expected accuracy (mean bits where
the model has no accuracy profile).
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import json
import sys
from collections.abc import Sequence
from contextlib import closing
from pathlib import Path
from typing import Any

from tqdm import tqdm

from quantpipe_core.cli import name_list
from quantpipe_core.config import Config, ConfigError, load_config
from quantpipe_core.results import RUN_FILES, read_windows
from sim.engine import Engine, EngineError, Run, add_engine_options, open_engine
from sim.run import option_overrides

DEFAULT_POLICIES = ("fixed:32", "fixed:8", "fixed:4", "fixed:2", "quantpipe", "controller", "mpc",
                    "oracle")
COLUMNS = (
    ("target met", "target_met_fraction", 3),
    ("items/s", "throughput_items_per_s", 2),
    ("p50 latency s", "latency_p50_s", 2),
    ("p95 latency s", "latency_p95_s", 2),
    ("mean bits", "mean_bits", 2),
    ("expected accuracy", "expected_accuracy", 4),
    ("switches", "bits_switches", 0),
)


def with_policy(config: Config, policy: str) -> Config:
    """`config` running `policy`; its parameters are kept only for the policy they were for."""
    params = dict(config.policy.params) if policy == config.policy.name else {}
    return config.replace(**{"policy.name": policy, "policy.params": params})


class RunFailed(RuntimeError):
    """A simulation of the comparison raised; a report needs every one."""


def compare(
    config: Config, traces: Sequence[Path], policies: Sequence[str], out: Path, engine: Engine
) -> list[dict[str, Any]]:
    """Every pair on `engine`, each run's four files in ``out/<trace>-<policy>/``; their
    summaries with the trace, policy and folder, in (trace, policy) order."""
    cases = [(t, p) for t in traces for p in policies]
    runs = [Run(str(i), with_policy(config, p), t, RUN_FILES) for i, (t, p) in enumerate(cases)]
    rows: dict[str, dict[str, Any]] = {}
    for outcome in tqdm(engine.map(runs), total=len(runs), desc="runs", unit="run"):
        trace, policy = cases[int(outcome.key)]
        if outcome.summary is None:
            raise RunFailed(f"{trace} with policy {policy}: {outcome.error}")
        folder = out / f"{trace.stem}-{policy.replace(':', '')}"
        outcome.write_files(folder)
        rows[outcome.key] = {"trace": trace.stem, "policy": policy, "out": str(folder),
                             **outcome.summary}
    return [rows[run.key] for run in runs]


def ranking(rows: list[dict[str, Any]], policies: Sequence[str]) -> list[tuple[str, float, float]]:
    """Policies by mean target-met share, then mean expected accuracy (or bits)."""
    table = []
    for policy in policies:
        mine = [r for r in rows if r["policy"] == policy]
        met = mean([r["target_met_fraction"] for r in mine])
        quality = mean([quality_of(r) for r in mine])
        table.append((policy, met, quality))
    return sorted(table, key=lambda row: (-(row[1] or 0), -(row[2] or 0)))


def quality_of(row: dict[str, Any]) -> float | None:
    return row["expected_accuracy"] if row["expected_accuracy"] is not None else row["mean_bits"]


def mean(values: list[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return sum(known) / len(known) if known else None


def cell(value: Any, digits: int) -> str:
    if value is None:
        return "n/a"
    return f"{value:.{digits}f}" if digits else str(value)


def report(rows: list[dict[str, Any]], traces: Sequence[Path], policies: Sequence[str],
           out: Path, command: str) -> str:
    """The Markdown report."""
    accuracy_known = any(r["expected_accuracy"] is not None for r in rows)
    versions = rows[0]["run"]["versions"] if rows else {}
    lines = [
        "# Policy comparison",
        "",
        f"Command: `{command}`  ",
        f"Date: {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC  ",
        "Versions: " + ", ".join(f"{k} {v}" for k, v in versions.items()),
        "",
        "Target met: share of 5 s intervals (first excluded) in which the sink received at "
        "least 95 % of the target rate. "
        + ("Expected accuracy: from the model's accuracy profile." if accuracy_known else
           "This model has no accuracy profile, so quality is shown as mean bits."),
        "",
    ]
    for trace in traces:
        mine = [r for r in rows if r["trace"] == trace.stem]
        oracle = next((r for r in mine if r["policy"] == "oracle"), None)
        lines += [f"## {trace.name}", "", f"![{trace.stem}]({trace.stem}.png)", ""]
        header = ["policy", *(name for name, _, _ in COLUMNS)]
        if oracle:
            header.append("target met vs oracle")
        lines += ["| " + " | ".join(header) + " |", "|---" * len(header) + "|"]
        for row in mine:
            cells = [row["policy"], *(cell(row[key], d) for _, key, d in COLUMNS)]
            if oracle:
                gap = None
                if row["target_met_fraction"] is not None and oracle["target_met_fraction"]:
                    gap = row["target_met_fraction"] - oracle["target_met_fraction"]
                cells.append(cell(gap, 3))
            lines += ["| " + " | ".join(cells) + " |"]
        lines += [""]
    quality = "expected accuracy" if accuracy_known else "mean bits"
    lines += ["## Ranking (mean over traces)", "", "![scatter](scatter.png)", "",
              f"| rank | policy | target met | {quality} |", "|---|---|---|---|"]
    for rank, (policy, met, q) in enumerate(ranking(rows, policies), start=1):
        lines += [f"| {rank} | {policy} | {cell(met, 3)} | {cell(q, 4)} |"]
    return "\n".join(lines) + "\n"


def plots(rows: list[dict[str, Any]], traces: Sequence[Path], policies: Sequence[str],
          out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    for trace in traces:
        fig, (link_ax, bits_ax, rate_ax) = plt.subplots(
            3, 1, figsize=(10, 7.5), sharex=True, height_ratios=(1, 2, 2)
        )
        for index, row in enumerate(r for r in rows if r["trace"] == trace.stem):
            windows = [w for w in read_windows(Path(row["out"]) / "windows.csv")
                       if w["link"] == 0]
            t = [w["t_start_s"] for w in windows]
            if index == 0:
                link_ax.step(t, [w["trace_mbps"] for w in windows], where="post", color="grey")
            bits_ax.step(t, [w["bits"] for w in windows], where="post", label=row["policy"])
            rate_ax.step(t, [w["delivered_items_per_s"] for w in windows], where="post",
                         label=row["policy"])
        target = next(r["target_rate_items_per_s"] for r in rows if r["trace"] == trace.stem)
        rate_ax.axhline(target, color="grey", linestyle=":", label="target")
        link_ax.set_ylabel("Mbit/s (link 0)")
        bits_ax.set_ylabel("bits (link 0)")
        rate_ax.set_ylabel("delivered items/s (link 0)")
        rate_ax.set_xlabel("time (s)")
        bits_ax.legend(fontsize=7, ncol=4)
        fig.suptitle(trace.name)
        fig.tight_layout()
        fig.savefig(out / f"{trace.stem}.png", dpi=90)
        plt.close(fig)
    fig, ax = plt.subplots(figsize=(6, 4.5))
    for policy, met, quality in ranking(rows, policies):
        if met is not None and quality is not None:
            ax.scatter(met, quality)
            ax.annotate(policy, (met, quality), fontsize=8, xytext=(3, 3),
                        textcoords="offset points")
    accuracy_known = any(r["expected_accuracy"] is not None for r in rows)
    ax.set_xlabel("target met (share of intervals)")
    ax.set_ylabel("expected accuracy" if accuracy_known else "mean bits")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out / "scatter.png", dpi=90)
    plt.close(fig)


def write_table(rows: list[dict[str, Any]], path: Path) -> None:
    keys = ["trace", "policy", *(key for _, key, _ in COLUMNS), "items_completed"]
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=keys, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m sim.compare",
        description="Simulate every policy on every trace and write a Markdown report with "
        "tables, a ranking and plots.",
    )
    parser.add_argument("traces", type=Path, nargs="+", help="trace files")
    parser.add_argument("--policies", type=name_list, default=list(DEFAULT_POLICIES),
                        help=f"comma-separated (default {','.join(DEFAULT_POLICIES)})")
    parser.add_argument("--config", type=Path, default=None, help="TOML run configuration")
    parser.add_argument("--scale", type=float, default=None, help="multiply every trace's rates")
    parser.add_argument("--duration", type=float, default=None, help="seconds per run")
    add_engine_options(parser, jobs=2)
    parser.add_argument("--out", type=Path, default=Path("runs/compare"),
                        help="output folder (default runs/compare)")
    args = parser.parse_args(argv)
    if missing := [str(t) for t in args.traces if not t.is_file()]:
        parser.error(f"no such trace file: {', '.join(missing)}")
    try:
        config = load_config(args.config)
        changes = option_overrides(scale=args.scale, duration=args.duration)
        config = config.replace(**changes) if changes else config
        for policy in args.policies:
            with_policy(config, policy)
        engine = open_engine(args.backend, args.address, args.jobs)
    except (ConfigError, ValueError, EngineError) as error:
        print(f"sim.compare: {error}", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    try:
        with closing(engine):
            rows = compare(config, args.traces, args.policies, args.out, engine)
    except RunFailed as error:
        print(f"sim.compare: {error}", file=sys.stderr)
        return 1
    command = "python -m sim.compare " + " ".join(sys.argv[1:] if argv is None else argv)
    plots(rows, args.traces, args.policies, args.out)
    write_table(rows, args.out / "results.csv")
    (args.out / "report.md").write_text(report(rows, args.traces, args.policies, args.out,
                                               command))
    (args.out / "results.json").write_text(json.dumps(rows, indent=1, default=str) + "\n")
    print(f"wrote {args.out / 'report.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
