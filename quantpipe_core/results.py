"""What a run measured, and the files every run writes: the simulator and the runtime alike.

- ``timeline.csv``: one row per microbatch: ``microbatch``, ``t_source_s``, ``stage{k}_start_s``,
  ``stage{k}_end_s``, ``bits_link{k}``, ``t_sink_s``, ``latency_s``;
- ``windows.csv``: one row per policy window per link: ``link``, ``window_index``, ``t_start_s``,
  ``t_end_s``, ``bits`` (mean over the window), ``measured_mbps``, ``trace_mbps`` (mean capacity
  over the window; empty where unknown), ``delivered_items_per_s``;
- ``summary.json``: throughput, target, share of metrics intervals meeting it, bits, accuracy,
  latency percentiles, switches (of the delivered microbatches; ``encoded_*``: of every one a
  stage encoded, as windows.csv shows), the utility and its terms (`quantpipe_core.utility`),
  per-link figures (``coded_window_share`` on a link with a lossless coder), notes on what the
  figures leave out, and the run record;
- ``plot.png``: trace rate, bits and delivered rate against time.
"""

from __future__ import annotations

import csv
import json
import threading
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import pairwise
from pathlib import Path
from typing import Any

import numpy as np

from quantpipe_core.utility import Utility, log_value

TARGET_MET_SHARE = 0.95  # an interval meets the target when the sink got 95 % of it
RUN_FILES = ("timeline.csv", "windows.csv", "summary.json", "plot.png")
MAX_PLOT_BINS = 100_000  # of the delivered-rate plot: finer metrics intervals are merged there


@dataclass
class WindowRecord:
    """One policy window on one link: when it ran, its bits, what the sender had measured, and
    how many of its microbatches the stage encoded (``used``; None: all, as a record that does
    not say): a run that ends mid-window encoded only the first ones. ``coded`` says whether the
    window went through the link's lossless coder (None: the link has none)."""

    link: int
    window_index: int
    t_start_s: float
    t_end_s: float | None
    bits: list[int]
    measured_mbps: float | None
    used: int | None = None
    coded: bool | None = None

    def sent_bits(self) -> list[int]:
        """The bits of the microbatches the stage encoded in this window."""
        return self.bits if self.used is None else self.bits[: self.used]


@dataclass
class Records:
    """Times and bits per microbatch (keyed by microbatch, or (microbatch, stage/link)).

    ``items`` holds the item count of a microbatch that is not full (the last of a data set);
    every other one holds `RunInfo.items_per_microbatch`. The simulator and the runtime write
    through the methods below, the one recording contract; each holds `lock`, because a
    runtime stage writes from three threads while another may take a `snapshot`."""

    t_source: dict[int, float] = field(default_factory=dict)
    stage_start: dict[tuple[int, int], float] = field(default_factory=dict)
    stage_end: dict[tuple[int, int], float] = field(default_factory=dict)
    link_bits: dict[tuple[int, int], int] = field(default_factory=dict)
    link_bytes: dict[tuple[int, int], int] = field(default_factory=dict)
    link_arrive: dict[tuple[int, int], float] = field(default_factory=dict)
    t_sink: dict[int, float] = field(default_factory=dict)
    windows: list[WindowRecord] = field(default_factory=list)
    items: dict[int, int] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def offered(self, microbatch: int, t: float, items: int | None = None) -> None:
        """The source offered `microbatch` at `t`; `items` if it is not full."""
        with self.lock:
            self.t_source[microbatch] = t
            if items is not None:
                self.items[microbatch] = items

    def started(self, microbatch: int, stage: int, t: float) -> None:
        with self.lock:
            self.stage_start[microbatch, stage] = t

    def finished(self, microbatch: int, stage: int, t: float) -> None:
        with self.lock:
            self.stage_end[microbatch, stage] = t

    def sunk(self, microbatch: int, t: float) -> None:
        """The last stage finished `microbatch` at `t`: it counts as delivered."""
        with self.lock:
            self.t_sink[microbatch] = t

    def sent(self, microbatch: int, link: int, bits: int, nbytes: int) -> None:
        """`link` delivered `microbatch`'s packet of `nbytes` at `bits`."""
        with self.lock:
            self.link_bits[microbatch, link] = bits
            self.link_bytes[microbatch, link] = nbytes

    def arrived(self, microbatch: int, link: int, t: float) -> None:
        """`microbatch`'s packet reached the stage after `link` at `t`."""
        with self.lock:
            self.link_arrive[microbatch, link] = t

    def window(self, record: WindowRecord) -> None:
        """A policy window began on its link (its sender fills in its end and use later)."""
        with self.lock:
            self.windows.append(record)

    def snapshot(self, copy: Callable[[Records], Any]) -> Any:
        """`copy(self)` while no writer changes the records (e.g. to serialize them)."""
        with self.lock:
            return copy(self)

    def items_of(self, microbatch: int, full: int) -> int:
        """Items in `microbatch`, `full` unless recorded otherwise."""
        return self.items.get(microbatch, full)

    def sent_bits(self, link: int) -> list[int]:
        """The bits of every microbatch the sending stage of `link` encoded, in order: what its
        policy chose and windows.csv shows, delivered or not."""
        mine = sorted((w for w in self.windows if w.link == link), key=lambda w: w.window_index)
        return [b for w in mine for b in w.sent_bits()]


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
    arrival_lists: dict[int, list[tuple[float, int]]] = {}
    for (mb, link), t in records.link_arrive.items():
        arrival_lists.setdefault(link, []).append(
            (t, records.items_of(mb, info.items_per_microbatch)))
    arrivals = {k: np.array(sorted(v)).reshape(-1, 2) for k, v in arrival_lists.items()}
    rows = []
    for w in records.windows:
        end = info.duration_s if w.t_end_s is None else w.t_end_s
        span = end - w.t_start_s
        times, items = arrivals.get(w.link, np.empty((0, 2))).T
        counted = np.concatenate([[0], np.cumsum(items.astype(np.int64))])
        delivered = int(counted[np.searchsorted(times, end)]
                        - counted[np.searchsorted(times, w.t_start_s)])
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
            "delivered_items_per_s": delivered / span if span > 0 else None,
        })
    return rows


def summary(records: Records, info: RunInfo) -> dict[str, Any]:
    """The run's figures. Items, latency, accuracy, ``mean_bits`` and ``switches`` count the
    microbatches the sink received within the run; ``encoded_mean_bits`` and
    ``encoded_switches`` count every microbatch a stage encoded (what its policy chose, as
    windows.csv shows), so a backlog at the end does not hide what the policy did."""
    done = sorted(mb for mb in records.t_sink if records.t_sink[mb] <= info.duration_s)
    latencies = np.array([records.t_sink[mb] - records.t_source[mb] for mb in done])
    done_items = [records.items_of(mb, info.items_per_microbatch) for mb in done]
    items = sum(done_items)
    links = info.stages - 1
    per_link_bits = [[records.link_bits[mb, k] for mb in done] for k in range(links)]
    all_bits = [b for bits in per_link_bits for b in bits]
    encoded = [records.sent_bits(k) for k in range(links)]
    all_encoded = [b for bits in encoded for b in bits]
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
            "mean_bits": mean_or_none(bits),
            "switches": switches(bits),
            "bytes": int(sum(records.link_bytes[mb, k] for mb in done)),
            "encoded_mean_bits": mean_or_none(encoded[k]),
            "encoded_switches": switches(encoded[k]),
        })
        coded = [w.coded for w in records.windows if w.link == k and w.coded is not None]
        if coded:  # a link with a lossless coder: the share of its windows its policy coded
            link_figures[-1]["coded_window_share"] = float(np.mean(coded))
    met = target_met_fraction([records.t_sink[mb] for mb in done], info, done_items)
    return {
        "throughput_items_per_s": items / info.duration_s if info.duration_s > 0 else 0.0,
        "target_rate_items_per_s": info.target_rate_items_per_s,
        "target_met_fraction": met,
        "mean_bits": mean_or_none(all_bits),
        "expected_accuracy": accuracy,
        "measured_accuracy": None,
        "latency_p50_s": float(np.percentile(latencies, 50)) if done else None,
        "latency_p95_s": float(np.percentile(latencies, 95)) if done else None,
        "bits_switches": sum(f["switches"] for f in link_figures),
        "encoded_mean_bits": mean_or_none(all_encoded),
        "encoded_bits_switches": sum(f["encoded_switches"] for f in link_figures),
        "items_completed": items,
        "utility": scored,
        "links": link_figures,
        "run": dict(info.record),
        "notes": summary_notes(records, info, done, met),
    }


def summary_notes(
    records: Records, info: RunInfo, done: Sequence[int], met: float | None
) -> list[str]:
    """What a reader of a summary must know to trust its zeros and nulls."""
    said = []
    if not done:
        late = [t for t in records.t_sink.values() if t > info.duration_s]
        when = f" (the first arrived at {min(late):.3g} s)" if late else ""
        said.append(
            f"no microbatch reached the sink within the run's {info.duration_s:g} s{when}: the "
            "run (or its trace) is shorter than a microbatch's trip through the pipeline"
        )
    if met is None:
        said.append(
            f"target_met_fraction is null: the run's {info.duration_s:g} s hold fewer than two "
            f"metrics intervals of {info.metrics_interval_s:g} s (the first is warm-up)"
        )
    for k in range(info.stages - 1):
        window = max((len(w.bits) for w in records.windows if w.link == k), default=0)
        arrived = sum(1 for (_, link), t in records.link_arrive.items()
                      if link == k and t <= info.duration_s)
        waiting = len(records.sent_bits(k)) - arrived
        if window and waiting > window:
            bits = records.sent_bits(k)
            said.append(
                f"link {k}: {waiting} encoded microbatches were not delivered by the end (a "
                f"backlog); counting them, as windows.csv does, the link's mean bits are "
                f"{np.mean(bits):.2f} and its switches {switches(bits)} (encoded_mean_bits, "
                "encoded_switches)"
            )
    return said


def mean_or_none(values: Sequence[float]) -> float | None:
    return float(np.mean(values)) if values else None


def switches(bits: Sequence[int]) -> int:
    """How often consecutive microbatches changed bitwidth."""
    return int(sum(a != b for a, b in pairwise(bits)))


def target_met_fraction(
    sink_times: Sequence[float], info: RunInfo, items: Sequence[int] | None = None
) -> float | None:
    """Share of whole metrics intervals, the first excluded (warm-up), in which the sink got at
    least 95 % of the target's items. `items` are those of each sink time (default: full
    microbatches). Counted over the intervals that received something, so a tiny interval
    (1e-9 s) costs nothing."""
    interval = info.metrics_interval_s
    count = int(info.duration_s // interval)
    if count < 2:
        return None
    if items is None:
        items = [info.items_per_microbatch] * len(sink_times)
    which, position = np.unique((np.array(sink_times) // interval).astype(np.int64),
                                return_inverse=True)
    received = np.bincount(position, weights=np.asarray(items, dtype=float),
                           minlength=which.size)
    needed = TARGET_MET_SHARE * info.target_rate_items_per_s * interval
    inside = (which >= 1) & (which < count)
    met = int(np.sum(received[inside] >= needed))
    if needed <= 0:  # an interval that received nothing meets a target of nothing too
        met += count - 1 - int(np.sum(inside))
    return met / (count - 1)


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
    sinks = np.array(list(records.t_sink.values()))
    if len(sinks):
        items = [records.items_of(mb, info.items_per_microbatch) for mb in records.t_sink]
        interval = max(info.metrics_interval_s, info.duration_s / MAX_PLOT_BINS)
        edges = np.arange(0, info.duration_s + interval, interval)
        counts, _ = np.histogram(sinks, bins=edges, weights=items)
        axes[2].step(edges[:-1], counts / interval, where="post", label="delivered")
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
