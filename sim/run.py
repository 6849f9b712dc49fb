"""Simulate a pipeline on a bandwidth trace: ``python -m sim.run TRACE [options]``.

With no config, the built-in defaults: ViT-Base-shaped profile, 2 stages split at the middle,
microbatch 8, clip ds-aciq, policy quantpipe, target rate 90 % of the compute-bound rate.
Writes timeline.csv, windows.csv, summary.json and plot.png to --out
(default runs/<trace>-<policy>/) and prints a short summary.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from tqdm import tqdm

from quantpipe_core.cli import check_out_dir
from quantpipe_core.run_command import (
    build_parser,
    check_user_policy,
    default_out,
    print_summary,
    refusal,
    refuse,
    run_config,
)
from sim.simulation import simulate

PROG = "sim.run"

DESCRIPTION = (
    "Simulate pipeline-parallel inference with adaptive activation quantization on a bandwidth "
    "trace, and write timeline.csv, windows.csv, summary.json and plot.png."
)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """The command line; ``--print-default-config`` prints the default config and exits."""
    return build_parser("python -m sim.run", DESCRIPTION).parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the simulation; bad input ends it with one line on stderr and `SystemExit(2)`."""
    args = parse_args(argv)
    try:
        config = run_config(args)
        out = check_out_dir(default_out(args, config))
        check_user_policy(config)
    except ValueError as error:
        raise SystemExit(refuse(PROG, error, args)) from None
    try:
        with tqdm(total=100, desc="simulating", unit="%", leave=False) as bar, \
                tqdm(total=100, desc="solving the optimum", unit="%", leave=False,
                     disable=config.policy.name != "optimal") as solving:
            result = simulate(config, args.trace, on_progress=lambda _now: bar.update(1),
                              on_solving=lambda share: solving.update(
                                  round(100 * share) - solving.n))
    except Exception as error:
        if (refused := refusal(error, config)) is None:
            raise
        raise SystemExit(refuse(PROG, refused, args)) from None
    summary = result.write(out)
    print_summary(summary, result.cuts, out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
