"""Compare policies on traces: ``python -m sim.compare TRACES... --policies ...``.

Runs every (trace, policy) pair on an engine (`sim.engine`: local processes, or Ray with
``--backend ray``), keeps each run's four files under ``OUT/<trace>-<policy>/``, and writes
``OUT/report.md``, ``OUT/results.csv`` (one row per run) and plots: per trace, the link's rate,
and bits and delivered rate against time for every policy, and one scatter of target-met share
against expected accuracy (mean bits where the model has no accuracy profile).

Policies are ranked by their mean utility over traces (`quantpipe_core.utility`), with a 95 %
bootstrap interval over traces, and measured against the offline optimum (`sim.comparison`).
Traces named by ``--train`` are the ones policies may be tuned on; the ranking is over the others
(held out), and the training traces get a smaller table of their own.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from contextlib import closing
from pathlib import Path

from quantpipe_core.cli import ArgumentParser, name_list, positive_float, writable_out_dir
from quantpipe_core.config import ConfigError, load_config
from quantpipe_core.run_command import option_overrides
from sim.comparison import (
    DEFAULT_POLICIES,
    RunFailed,
    compare,
    optimum_feasible,
    plots,
    report,
    training_traces,
    with_policy,
    write_table,
)
from sim.engine import EngineError, add_engine_options, open_engine


def main(argv: Sequence[str] | None = None) -> int:
    parser = ArgumentParser(
        prog="python -m sim.compare",
        description="Simulate every policy on every trace and write a Markdown report with "
        "a ranking by utility, tables and plots.",
    )
    parser.add_argument("traces", type=Path, nargs="+", help="trace files")
    parser.add_argument("--policies", type=name_list, default=None,
                        help=f"comma-separated (default {','.join(DEFAULT_POLICIES)}, without "
                        "optimal for pipelines of more than one link)")
    parser.add_argument("--train", type=name_list, default=[], metavar="GLOBS",
                        help="comma-separated file-name globs of the traces policies were tuned "
                        "on; the ranking is over the others (default: none, rank over all)")
    parser.add_argument("--config", type=Path, default=None, help="TOML run configuration")
    parser.add_argument("--scale", type=positive_float, default=None,
                        help="multiply every trace's rates, > 0")
    parser.add_argument("--duration", type=positive_float, default=None,
                        help="seconds per run, > 0")
    add_engine_options(parser, jobs=2)
    parser.add_argument("--out", type=writable_out_dir, default=Path("runs/compare"),
                        help="output folder (default runs/compare)")
    args = parser.parse_args(argv)
    if missing := [str(t) for t in args.traces if not t.is_file()]:
        parser.error(f"no such trace file: {', '.join(missing)}")
    try:
        training = training_traces(args.traces, args.train)
    except ValueError as error:
        parser.error(str(error))
    if unmatched := [p for p in args.train if not training_traces(args.traces, [p])]:
        parser.error(f"--train: no trace matches {', '.join(unmatched)}")
    try:
        if args.policies == []:
            raise ValueError("--policies is empty: give at least one policy, e.g. quantpipe,mpc")
        config = load_config(args.config)
        changes = option_overrides(scale=args.scale, duration=args.duration)
        config = config.replace(**changes) if changes else config
        policies = args.policies or [p for p in DEFAULT_POLICIES
                                     if p != "optimal" or optimum_feasible(config)]
        for policy in policies:
            with_policy(config, policy)
        engine = open_engine(args.backend, args.address, args.jobs)
    except (ConfigError, ValueError, EngineError) as error:
        print(f"sim.compare: {error}", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    try:
        with closing(engine):
            rows = compare(config, args.traces, policies, args.out, engine)
    except RunFailed as error:
        print(f"sim.compare: {error}", file=sys.stderr)
        return 1
    command = "python -m sim.compare " + " ".join(sys.argv[1:] if argv is None else argv)
    plots(rows, args.traces, policies, args.out, training)
    write_table(rows, args.out / "results.csv", training)
    (args.out / "report.md").write_text(report(rows, args.traces, policies, command, training))
    (args.out / "results.json").write_text(json.dumps(rows, indent=1, default=str) + "\n")
    print(f"wrote {args.out / 'report.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
