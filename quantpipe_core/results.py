"""What a run measured, and the files every run writes: the simulator and the runtime alike.

- ``timeline.csv``: one row per microbatch: ``microbatch``, ``t_source_s``, ``stage{k}_start_s``,
  ``stage{k}_end_s``, ``bits_link{k}``, ``t_sink_s``, ``latency_s``;
- ``windows.csv``: one row per policy window per link: ``link``, ``window_index``, ``t_start_s``,
  ``t_end_s``, ``bits`` (mean over the window), ``measured_mbps``, ``trace_mbps`` (mean capacity
  over the window; empty where unknown), ``delivered_items_per_s``;
- ``summary.json``: throughput, target, share of metrics intervals meeting it, bits, accuracy,
  latency percentiles, switches, the utility and its terms (`quantpipe_core.utility`), per-link
  figures, and the run record;
- ``plot.png``: trace rate, bits and delivered rate against time.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import pairwise
from pathlib import Path
from typing import Any

import numpy as np

from quantpipe_core.utility import Utility, log_value

TARGET_MET_SHARE = 0.95  # an interval meets the target when the sink got 95 % of it
RUN_FILES = ("timeline.csv", "windows.csv", "summary.json", "plot.png")


@dataclass
class WindowRecord:
    """One policy window on one link: when it ran, its bits, what the sender had measured."""

    link: int
    window_index: int
    t_start_s: float
    t_end_s: float | None
    bits: list[int]
    measured_mbps: float | None


@dataclass
class Records:
    """Times and bits per microbatch (keyed by microbatch, or (microbatch, stage/link))."""

    t_source: dict[int, float] = field(default_factory=dict)
    stage_start: dict[tuple[int, int], float] = field(default_factory=dict)
    stage_end: dict[tuple[int, int], float] = field(default_factory=dict)
    link_bits: dict[tuple[int, int], int] = field(default_factory=dict)
    link_bytes: dict[tuple[int, int], int] = field(default_factory=dict)
    link_arrive: dict[tuple[int, int], float] = field(default_factory=dict)
    t_sink: dict[int, float] = field(default_factory=dict)
    windows: list[WindowRecord] = field(default_factory=list)


@dataclass(frozen=True)
class RunInfo:
    """What the summary needs besides the records."""

    stages: int
    items_per_microbatch: int
    target_rate_items_per_s: float
    duration_s: float
    metrics_interval_s: float = 5.0
    accuracy_of: Callable[[Sequence[int]], float | None] | None = None  # bits per link -> value
    trace_mbps: Sequence[Callable[[float, float], float]] | None = None  # per link, mean capacity
    record: Mapping[str, Any] = field(default_factory=dict)  # config, versions, traces, seed
    utility: Utility | None = None  # how the run is scored; None: no utility in the summary


def timeline_rows(records: Records, stages: int) -> list[dict[str, Any]]:
    rows = []
    for mb in sorted(records.t_source):
        row: dict[str, Any] = {"microbatch": mb, "t_source_s": records.t_source[mb]}
        for k in range(stages):
            row[f"stage{k}_start_s"] = records.stage_start.get((mb, k))
            row[f"stage{k}_end_s"] = records.stage_end.get((mb, k))
        for k in range(stages - 1):
            row[f"bits_link{k}"] = records.link_bits.get((mb, k))
        sink = records.t_sink.get(mb)
        row["t_sink_s"] = sink
        row["latency_s"] = None if sink is None else sink - records.t_source[mb]
        rows.append(row)
    return rows


def window_rows(records: Records, info: RunInfo) -> list[dict[str, Any]]:
    arrival_lists: dict[int, list[float]] = {}
    for (_, link), t in records.link_arrive.items():
        arrival_lists.setdefault(link, []).append(t)
    arrivals = {k: np.sort(np.array(v)) for k, v in arrival_lists.items()}
    rows = []
    for w in records.windows:
        end = info.duration_s if w.t_end_s is None else w.t_end_s
        span = end - w.t_start_s
        times = arrivals.get(w.link, np.empty(0))
        delivered = np.searchsorted(times, end) - np.searchsorted(times, w.t_start_s)
        trace = None
        if info.trace_mbps is not None and span > 0:
            trace = info.trace_mbps[w.link](w.t_start_s, end)
        rows.append({
            "link": w.link,
            "window_index": w.window_index,
            "t_start_s": w.t_start_s,
            "t_end_s": end,
            "bits": float(np.mean(w.bits)),
            "measured_mbps": w.measured_mbps,
            "trace_mbps": trace,
            "delivered_items_per_s": (
                delivered * info.items_per_microbatch / span if span > 0 else None
            ),
        })
    return rows


def summary(records: Records, info: RunInfo) -> dict[str, Any]:
    done = sorted(mb for mb in records.t_sink if records.t_sink[mb] <= info.duration_s)
    latencies = np.array([records.t_sink[mb] - records.t_source[mb] for mb in done])
    items = len(done) * info.items_per_microbatch
    links = info.stages - 1
    per_link_bits = [[records.link_bits[mb, k] for mb in done] for k in range(links)]
    all_bits = [b for bits in per_link_bits for b in bits]
    accuracy = None
    if info.accuracy_of is not None and done:
        values = [info.accuracy_of([records.link_bits[mb, k] for k in range(links)])
                  for mb in done]
        if None not in values:
            accuracy = float(np.mean(values))
    scored = None
    if info.utility is not None:
        value_of = info.accuracy_of if accuracy is not None else log_value
        scored = info.utility.of_run(
            records.t_source, records.t_sink,
            lambda mb: [records.link_bits[mb, k] for k in range(links)], value_of,
            info.duration_s,
        )
        scored["values_from"] = "accuracy profile" if accuracy is not None else "log2 rule"
    link_figures = []
    for k, bits in enumerate(per_link_bits):
        link_figures.append({
            "link": k,
            "mean_bits": float(np.mean(bits)) if bits else None,
            "switches": switches(bits),
            "bytes": int(sum(records.link_bytes[mb, k] for mb in done)),
        })
    return {
        "throughput_items_per_s": items / info.duration_s if info.duration_s > 0 else 0.0,
        "target_rate_items_per_s": info.target_rate_items_per_s,
        "target_met_fraction": target_met_fraction(
            [records.t_sink[mb] for mb in done], info
        ),
        "mean_bits": float(np.mean(all_bits)) if all_bits else None,
        "expected_accuracy": accuracy,
        "measured_accuracy": None,
        "latency_p50_s": float(np.percentile(latencies, 50)) if done else None,
        "latency_p95_s": float(np.percentile(latencies, 95)) if done else None,
        "bits_switches": sum(f["switches"] for f in link_figures),
        "items_completed": items,
        "utility": scored,
        "links": link_figures,
        "run": dict(info.record),
    }


def switches(bits: Sequence[int]) -> int:
    """How often consecutive microbatches changed bitwidth."""
    return int(sum(a != b for a, b in pairwise(bits)))


def target_met_fraction(sink_times: Sequence[float], info: RunInfo) -> float | None:
    """Share of whole metrics intervals, the first excluded (warm-up), in which the sink got at
    least 95 % of the target's items."""
    interval = info.metrics_interval_s
    count = int(info.duration_s // interval)
    if count < 2:
        return None
    received = np.bincount((np.array(sink_times) // interval).astype(int), minlength=count)
    items = received[1:count] * info.items_per_microbatch
    return float(np.mean(items >= TARGET_MET_SHARE * info.target_rate_items_per_s * interval))


def write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    with path.open("w", newline="") as f:
        if not rows:
            return
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        for row in rows:
            writer.writerow({k: "" if v is None else v for k, v in row.items()})


def read_windows(path: Path) -> list[dict[str, float | None]]:
    """The rows of a ``windows.csv`` as numbers (an empty cell is None)."""
    with path.open() as f:
        return [{k: float(v) if v != "" else None for k, v in row.items()}
                for row in csv.DictReader(f)]


def write_results(
    out: Path,
    records: Records,
    info: RunInfo,
    result: dict[str, Any] | None = None,
    files: Collection[str] = RUN_FILES,
) -> dict[str, Any]:
    """Write `files` (default: all four) into `out` and return the summary (`result`, if
    already made). A sweep keeps only some of them for each of its many runs."""
    out.mkdir(parents=True, exist_ok=True)
    windows = window_rows(records, info)
    if "timeline.csv" in files:
        write_csv(out / "timeline.csv", timeline_rows(records, info.stages))
    if "windows.csv" in files:
        write_csv(out / "windows.csv", windows)
    result = summary(records, info) if result is None else result
    if "summary.json" in files:
        (out / "summary.json").write_text(json.dumps(result, indent=2, default=str) + "\n")
    if "plot.png" in files:
        plot(out / "plot.png", windows, records, info)
    return result


def plot(path: Path, windows: list[dict[str, Any]], records: Records, info: RunInfo) -> None:
    """Trace rate and measured rate, bits, and delivered items/s against time, per link."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(3, 1, figsize=(10, 7), sharex=True)
    for link in sorted({w["link"] for w in windows}):
        rows = [w for w in windows if w["link"] == link]
        t = [w["t_start_s"] for w in rows]
        if any(w["trace_mbps"] is not None for w in rows):
            axes[0].step(t, [w["trace_mbps"] for w in rows], where="post",
                         label=f"link {link} trace")
        axes[0].step(t, [w["measured_mbps"] for w in rows], where="post", linestyle="--",
                     label=f"link {link} measured")
        axes[1].step(t, [w["bits"] for w in rows], where="post", label=f"link {link}")
    sinks = np.sort(np.array(list(records.t_sink.values())))
    if len(sinks):
        interval = info.metrics_interval_s
        edges = np.arange(0, info.duration_s + interval, interval)
        counts, _ = np.histogram(sinks, bins=edges)
        axes[2].step(edges[:-1], counts * info.items_per_microbatch / interval, where="post",
                     label="delivered")
    axes[2].axhline(info.target_rate_items_per_s, color="grey", linestyle=":", label="target")
    axes[0].set_ylabel("Mbit/s")
    axes[1].set_ylabel("bits")
    axes[2].set_ylabel("items/s")
    axes[2].set_xlabel("time (s)")
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.legend(loc="upper right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
