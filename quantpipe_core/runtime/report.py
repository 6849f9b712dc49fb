"""Each rank's measurements as JSON, and their merge into the simulator's four files.

A rank's report: ``{"rank", "records", "sink", "error"}``, and ``interrupted_at_s`` when Ctrl-C
or SIGTERM ended it; ``records`` holds what that rank measured itself (see `records_to_json`),
``sink`` the last rank's predictions and metric.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from quantpipe_core.results import Records, WindowRecord, summary, write_results
from quantpipe_core.runtime.plan import RuntimePlan

PAIR_FIELDS = ("stage_start", "stage_end", "link_bits", "link_bytes", "link_arrive")
SINGLE_FIELDS = ("t_source", "t_sink", "items")


def records_to_json(records: Records) -> dict[str, Any]:
    data: dict[str, Any] = {}
    for name in SINGLE_FIELDS:
        data[name] = [[mb, t] for mb, t in getattr(records, name).items()]
    for name in PAIR_FIELDS:
        data[name] = [[mb, k, v] for (mb, k), v in getattr(records, name).items()]
    data["windows"] = [
        {"link": w.link, "window_index": w.window_index, "t_start_s": w.t_start_s,
         "t_end_s": w.t_end_s, "bits": list(w.bits), "measured_mbps": w.measured_mbps,
         "used": w.used, "coded": w.coded}
        for w in records.windows
    ]
    return data


def merge_records(parts: list[dict[str, Any]]) -> Records:
    records = Records()
    for data in parts:
        for name in SINGLE_FIELDS:
            getattr(records, name).update({int(mb): t for mb, t in data.get(name, [])})
        for name in PAIR_FIELDS:
            getattr(records, name).update({(int(mb), int(k)): v for mb, k, v in data.get(name, [])})
        records.windows += [WindowRecord(**w) for w in data.get("windows", [])]
    records.windows.sort(key=lambda w: (w.link, w.window_index))
    return records


def rank_file(out: Path, rank: int) -> Path:
    return out / f"rank{rank}.json"


def write_rank_report(out: Path, report: dict[str, Any]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    rank_file(out, report["rank"]).write_text(json.dumps(report) + "\n")


def clock_file(out: Path) -> Path:
    return out / "clock.json"


def write_clock(out: Path, t0_unix_s: float) -> None:
    """When the run's clock started (rank 0's ``time.time()``), for tools that must line other
    events up with it: the emulator starts its trace replay at this instant."""
    out.mkdir(parents=True, exist_ok=True)
    clock_file(out).write_text(json.dumps({"t0_unix_s": t0_unix_s}) + "\n")


def read_clock(out: Path) -> float | None:
    """The run's start written by `write_clock`, or None before it is written."""
    try:
        return float(json.loads(clock_file(out).read_text())["t0_unix_s"])
    except (FileNotFoundError, json.JSONDecodeError, KeyError):
        return None


def read_rank_reports(out: Path, ranks: int) -> list[dict[str, Any]]:
    reports = []
    for rank in range(ranks):
        path = rank_file(out, rank)
        if path.exists():
            reports.append(json.loads(path.read_text()))
    return reports


def write_merged(
    out: Path,
    plan: RuntimePlan,
    reports: list[dict[str, Any]],
    duration_s: float | None,
    *,
    trace_mbps: Sequence[Callable[[float, float], float]] | None = None,
    record: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The four files from the ranks' reports; `duration_s` None = up to the last sink time.
    `trace_mbps` (each link's mean capacity over a span) and `record` (added to the summary's
    run record) are for callers that know the links, like the emulator."""
    records = merge_records([r["records"] for r in reports])
    links = len(plan.stages) - 1
    unrecorded = [mb for mb in records.t_sink
                  if any((mb, k) not in records.link_bits for k in range(links))]
    for mb in unrecorded:  # a sender that died took its link's records with it
        del records.t_sink[mb]
    if not duration_s:
        ends = [*records.t_sink.values(), *records.stage_end.values()]
        duration_s = max(ends, default=0.0)
    info = plan.run_info(duration_s, trace_mbps, record)
    result = summary(records, info)
    sink = next((r["sink"] for r in reports if r.get("sink")), None)
    result["measured_accuracy"] = sink["measured_accuracy"] if sink else None
    notes = plan.notes()
    if sink and sink["metric"] is None:
        notes.append(f"measured_accuracy is null: {sink['inputs']} random inputs, no labels")
    elif sink:
        notes.append(f"measured_accuracy is {sink['metric']} on {sink['inputs']} inputs")
    never_offered = sum(r.get("never_offered", 0) for r in reports)
    if never_offered:
        notes.append(f"the source fell behind: {never_offered} microbatches due before the end "
                     "were never offered (a stage or link slower than the target rate)")
    if unrecorded:
        notes.append(f"{len(unrecorded)} microbatches reached the sink but a sender's records "
                     "of them were lost: not counted")
    errors = [f"rank {r['rank']}: {r['error']}" for r in reports if r.get("error")]
    interrupts = [r["interrupted_at_s"] for r in reports if r.get("interrupted_at_s") is not None]
    if interrupts:
        notes.append(f"interrupted at t = {min(interrupts):.1f} s; figures cover what was "
                     "measured before it")
    elif errors:
        notes.append("the run ended on a fault; figures cover what was measured before it")
    result["notes"] = result["notes"] + notes + errors
    result["run"]["ranks_reported"] = sorted(r["rank"] for r in reports)
    write_results(out, records, info, result)
    return result
