"""Run a grid of simulations and gather one table: ``python -m sim.sweep SPEC.toml``.

The spec (see `sim.grid` and docs/sweeps.md) names traces, policies, a base config and axes of
config values. Each finished run goes at once to ``OUT/journal.jsonl`` (one JSON line, keyed by
`sim.grid.run_key`), so an interrupted sweep loses nothing and ``--resume`` reruns only the runs
the journal lacks or that failed. At the end, ``OUT/results.parquet`` and ``OUT/results.csv``
hold one row per run of the grid: its grid columns, the summary's metrics, ``error`` (empty, or
why the run failed; tracebacks in ``OUT/errors.txt``) and ``key``. ``--keep-runs`` decides
which of each run's files the driver writes to ``OUT/runs/<key>/``.
"""

from __future__ import annotations

import csv
import json
import sys
from collections.abc import Iterator, Sequence
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tqdm import tqdm

from quantpipe_core.cli import ArgumentParser, writable_out_dir
from quantpipe_core.config import ConfigError
from quantpipe_core.results import RUN_FILES
from sim.engine import Engine, EngineError, Run, add_engine_options, open_engine
from sim.grid import Grid, Point, read_grid

KEEP_RUNS = {"none": (), "summary": ("summary.json", "windows.csv"), "all": RUN_FILES}
JOURNAL = "journal.jsonl"
TABLE = ("results.parquet", "results.csv")


class SweepError(RuntimeError):
    """A sweep that must not start: its folder holds another sweep's journal."""


@dataclass(frozen=True)
class Tally:
    """What one call of `sweep` did."""

    runs: int  # rows of the table (points of the grid)
    ran: int  # simulations run now
    skipped: int  # rows whose result the journal already held
    failed: int  # rows whose run or config failed
    worker_seconds: float  # the simulations' time in the workers, summed


def sweep(grid: Grid, engine: Engine, out: Path, keep: str = "none", resume: bool = False,
          progress: bool = True) -> Tally:
    """Run every point of `grid` whose result `out`'s journal lacks (all of them unless
    `resume`), then write the table."""
    check_out(out, resume)
    journal = out / JOURNAL
    out.mkdir(parents=True, exist_ok=True)
    results = read_journal(journal)
    order: list[tuple[str, dict[str, Any]]] = []
    todo: dict[str, Point] = {}
    for point in grid.points():
        order.append((point.key, point.params))
        if point.key not in results or results[point.key]["error"] is not None:
            todo[point.key] = point
    skipped = sum(key not in todo for key, _ in order)
    ran, seconds = 0, 0.0
    with journal.open("a") as log, (out / "errors.txt").open("a" if resume else "w") as errors, \
            tqdm(total=len(todo), desc="runs", unit="run", disable=not progress) as bar:
        def record(entry: dict[str, Any], detail: str | None) -> None:
            log.write(json.dumps(entry) + "\n")
            log.flush()
            results[entry["key"]] = entry
            if detail:
                errors.write(f"== run {entry['key']}\n{detail}\n")
            bar.update()

        def runs() -> Iterator[Run]:
            """The runs to do, each config let go once its run is handed over."""
            for key in list(todo):
                point = todo.pop(key)
                if point.config is None:
                    record({"key": key, "error": f"ConfigError: {point.error}", "seconds": 0.0,
                            "metrics": {}}, None)
                else:
                    yield Run(key, point.config, point.trace, KEEP_RUNS[keep])

        for outcome in engine.map(runs()):
            ran, seconds = ran + 1, seconds + outcome.seconds
            outcome.write_files(out / "runs" / outcome.key)
            record({"key": outcome.key, "error": outcome.error, "seconds": outcome.seconds,
                    "metrics": metrics(outcome.summary)}, outcome.detail)
    if not (out / "errors.txt").stat().st_size:
        (out / "errors.txt").unlink()
    columns = table_columns(order, results)
    write_table(columns, out)
    failed = sum(error is not None for error in columns["error"])
    return Tally(len(order), ran, skipped, failed, seconds)


def check_out(out: Path, resume: bool) -> None:
    """A new sweep must not mix its results into another's journal."""
    if (out / JOURNAL).exists() and not resume:
        raise SweepError(f"{out} already holds a sweep ({JOURNAL}): --resume continues it; "
                         "or choose another --out")


def metrics(summary: dict[str, Any] | None) -> dict[str, Any]:
    """The summary's scalar figures (per-link figures, notes and the run record aside)."""
    if summary is None:
        return {}
    return {k: v for k, v in summary.items() if v is None or isinstance(v, bool | int | float)}


def read_journal(path: Path) -> dict[str, dict[str, Any]]:
    """Each key's last entry; a line cut short by a crash is left out."""
    entries: dict[str, dict[str, Any]] = {}
    if path.exists():
        for line in path.read_text().splitlines():
            try:
                entry = json.loads(line)
            except json.JSONDecodeError:
                continue
            entries[entry["key"]] = entry
    return entries


def table_columns(order: Sequence[tuple[str, dict[str, Any]]],
                  results: dict[str, dict[str, Any]]) -> dict[str, list[Any]]:
    """The table by column (lighter than rows), a row per point in grid order: the grid
    columns, the metrics, error and key."""
    grid = list(order[0][1]) if order else []
    metrics = list(dict.fromkeys(name for key, _ in order for name in results[key]["metrics"]))
    columns: dict[str, list[Any]] = {name: [] for name in [*grid, *metrics, "error", "key"]}
    for key, params in order:
        entry = results[key]
        for name in grid:
            columns[name].append(params[name])
        for name in metrics:
            columns[name].append(entry["metrics"].get(name))
        columns["error"].append(entry["error"])
        columns["key"].append(key)
    return columns


def write_table(columns: dict[str, list[Any]], out: Path) -> None:
    """results.parquet (a column that mixes types becomes text) and results.csv."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    arrays = {}
    for name, values in columns.items():
        try:
            arrays[name] = pa.array(values)
        except (pa.ArrowInvalid, pa.ArrowTypeError):
            arrays[name] = pa.array([None if v is None else str(v) for v in values])
    pq.write_table(pa.table(arrays), out / TABLE[0])
    with (out / TABLE[1]).open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(columns)
        rows = zip(*columns.values(), strict=True)
        writer.writerows(["" if v is None else v for v in row] for row in rows)


def main(argv: Sequence[str] | None = None) -> int:
    parser = ArgumentParser(
        prog="python -m sim.sweep",
        description="Simulate every run of a sweep spec's grid (traces x policies x config "
        "values) on this machine or a Ray cluster, and write one table of their results "
        "(results.parquet, results.csv). See docs/sweeps.md.",
    )
    parser.add_argument("spec", type=Path, help="the sweep spec (TOML)")
    add_engine_options(parser, jobs=None)
    parser.add_argument("--out", type=writable_out_dir, default=None,
                        help="output folder (default runs/<spec name>)")
    parser.add_argument("--resume", action="store_true",
                        help="continue the sweep in --out: run only what its journal lacks "
                        "or what failed")
    parser.add_argument("--keep-runs", choices=tuple(KEEP_RUNS), default="none",
                        help="each run's files to write under OUT/runs/<key>/: none (default), "
                        "summary (summary.json, windows.csv) or all (also timeline.csv, "
                        "plot.png)")
    args = parser.parse_args(argv)
    out = args.out or Path("runs") / args.spec.stem

    def fail(error: Exception) -> int:
        print(f"sim.sweep: {error}", file=sys.stderr)
        return 2

    try:
        grid = read_grid(args.spec)
        check_out(out, args.resume)
        engine = open_engine(args.backend, args.address, args.jobs)
    except (ConfigError, SweepError, EngineError) as error:
        return fail(error)
    try:
        with closing(engine):
            tally = sweep(grid, engine, out, args.keep_runs, args.resume)
    except KeyboardInterrupt:
        print(f"sim.sweep: interrupted; the finished runs are in {out / JOURNAL}, and "
              "--resume continues", file=sys.stderr)
        return 130
    print(f"{tally.runs} runs: {tally.ran} simulated, {tally.skipped} already in the journal, "
          f"{tally.failed} failed" + (" (see the error column and errors.txt)"
                                      if tally.failed else ""))
    print(f"wrote {out / TABLE[0]} and {TABLE[1]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
