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
from pathlib import Path
from typing import Any

from tqdm import tqdm

from quantpipe_core.config import Config, ConfigError, load_config
from quantpipe_core.trace import TraceError
from sim.simulation import simulate

DESCRIPTION = (
    "Simulate pipeline-parallel inference with adaptive activation quantization on a bandwidth "
    "trace, and write timeline.csv, windows.csv, summary.json and plot.png."
)


def build_parser(prog: str, description: str) -> argparse.ArgumentParser:
    """The options of a run on a trace; `python -m emulation.run` takes the same ones."""
    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument("trace", type=Path,
                        help="bandwidth trace (CSV time_s,mbps; Mahimahi; or 'time mbps' log); "
                        "used on every link whose config names no trace")
    parser.add_argument("--config", type=Path, default=None,
                        help="TOML run configuration (default: built-in defaults; "
                        "see docs/config.md)")
    parser.add_argument("--policy", default=None,
                        help="fixed, fixed:N, quantpipe, controller, mpc, planner, oracle, optimal "
                        "(the offline optimum of the utility, simulator only) or module:Class "
                        "(overrides the config)")
    parser.add_argument("--bits", type=int, default=None,
                        help="bitwidth for --policy fixed (1..16, or 32 for float32)")
    parser.add_argument("--target-rate", type=float, default=None,
                        help="target items/s (default: 90%% of the compute-bound rate)")
    parser.add_argument("--scale", type=float, default=None,
                        help="multiply every link's rates by F (e.g. 30 for mobile traces)")
    parser.add_argument("--duration", type=float, default=None,
                        help="seconds to run (default: one pass of the longest trace)")
    parser.add_argument("--seed", type=int, default=None, help="run seed (recorded)")
    parser.add_argument("--out", type=Path, default=None,
                        help="output folder (default runs/<trace>-<policy>/)")
    return parser


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    return build_parser("python -m sim.run", DESCRIPTION).parse_args(argv)


def run_config(args: argparse.Namespace) -> Config:
    """The config file (or the defaults) with the command line's overrides; `ConfigError`,
    `ValueError` or `TraceError` (missing trace) when they do not make a run."""
    config = load_config(args.config)
    changes = overrides(args)
    if changes:
        config = config.replace(**changes)
    if not args.trace.is_file():
        raise TraceError(f"trace {args.trace} does not exist")
    return config


def default_out(args: argparse.Namespace, config: Config, suffix: str = "") -> Path:
    """``--out``, or ``runs/<trace>-<policy><suffix>``."""
    name = f"{args.trace.stem}-{config.policy.name.replace(':', '')}{suffix}"
    return args.out or Path("runs") / name


def overrides(args: argparse.Namespace) -> dict[str, Any]:
    """Config fields the command line sets; a ValueError for options that do not go together."""
    changes = option_overrides(
        target_rate=args.target_rate, scale=args.scale, duration=args.duration, seed=args.seed
    )
    policy = args.policy
    if args.bits is not None:
        if policy != "fixed":
            raise ValueError("--bits goes with --policy fixed only (or write --policy fixed:N)")
        policy = f"fixed:{args.bits}"
    elif policy == "fixed":
        raise ValueError("--policy fixed needs --bits N (or write --policy fixed:N)")
    if policy is not None:
        changes["policy.name"] = policy
    return changes


def option_overrides(
    *,
    target_rate: float | None = None,
    scale: float | None = None,
    duration: float | None = None,
    seed: int | None = None,
) -> dict[str, Any]:
    """The dotted config fields that these command-line options set (None: not given)."""
    fields = {
        "source.target_rate": target_rate,
        "links.*.scale": scale,
        "run.duration_s": duration,
        "run.seed": seed,
    }
    return {key: value for key, value in fields.items() if value is not None}


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)

    def fail(message: str) -> None:
        print(f"sim.run: {message}", file=sys.stderr)
        raise SystemExit(2)

    try:
        config = run_config(args)
        with tqdm(total=100, desc="simulating", unit="%", leave=False) as bar:
            result = simulate(config, args.trace, on_progress=lambda _now: bar.update(1))
    except (ConfigError, TraceError, ValueError) as error:
        fail(str(error))
    out = default_out(args, config)
    summary = result.write(out)
    print_summary(summary, result.cuts, out)
    return 0


def print_summary(summary: dict[str, Any], cuts: list[str], out: Path) -> None:
    def show(value: Any, digits: int = 3) -> str:
        return "n/a" if value is None else f"{value:.{digits}f}"

    print(f"cuts: {', '.join(cuts) or '(one stage)'}")
    rows = [
        ("throughput (items/s)", show(summary["throughput_items_per_s"], 2)),
        ("target (items/s)", show(summary["target_rate_items_per_s"], 2)),
        ("target met (share of intervals)", show(summary["target_met_fraction"])),
        ("mean bits", show(summary["mean_bits"], 2)),
        ("expected accuracy", show(summary["expected_accuracy"], 4)),
        ("latency p50 / p95 (s)",
         f"{show(summary['latency_p50_s'])} / {show(summary['latency_p95_s'])}"),
        ("bit switches", str(summary["bits_switches"])),
        ("items completed", str(summary["items_completed"])),
    ]
    if (scored := summary.get("utility")) is not None:
        rows.append(("utility per microbatch", (
            f"{scored['value']:.4f} = value {scored['accuracy']:.4f} - late "
            f"{scored['lateness']:.4f} - switching {scored['switching']:.4f}"
        )))
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        print(f"  {name:<{width}}  {value}")
    for note in summary.get("notes", []):
        print(f"note: {note}")
    print(f"wrote {out}/timeline.csv, windows.csv, summary.json, plot.png")


if __name__ == "__main__":
    sys.exit(main())
