"""Inspect, convert and generate bandwidth traces.

    python -m sim.traces info ../shared/traces/mahimahi/TMobile-LTE-short.up --bin 1 --plot t.png
    python -m sim.traces convert IN.csv OUT.up --to mahimahi --bin 0.1
    python -m sim.traces generate step-drop traces/step-drop.csv --high 40 --low 8 --at 30

Formats, options and the generators are described in docs/traces.md.
"""

from __future__ import annotations

import argparse
import inspect
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from quantpipe_core import trace_generators as generators
from quantpipe_core.cli import ArgumentParser, writable_file
from quantpipe_core.trace import (
    DEFAULT_FLOOR_MBPS,
    FORMATS,
    MAX_ELEMENTS,
    Trace,
    file_format,
    load_trace,
    write_trace,
)

# generate KIND: the generator, a one-line description, and its own options (flag -> parameter)
KINDS: dict[str, tuple[Callable[..., Trace], str, dict[str, str]]] = {
    "step-drop": (
        generators.step_drop,
        "a constant rate that drops once",
        {"--high": "high_mbps", "--low": "low_mbps", "--at": "at_s", "--noise": "noise"},
    ),
    "ramp": (
        generators.ramp,
        "a slow linear slide down to a low rate at mid-trace, then back up",
        {"--high": "high_mbps", "--low": "low_mbps", "--noise": "noise"},
    ),
    "random-walk": (
        generators.random_walk,
        "a multiplicative random walk between two bounds",
        {"--start": "start_mbps", "--low": "low_mbps", "--high": "high_mbps", "--sigma": "sigma"},
    ),
    "on-off": (
        generators.on_off,
        "a constant rate with a periodic outage at the floor",
        {"--high": "high_mbps", "--period": "period_s", "--off": "off_s", "--noise": "noise"},
    ),
    "like": (
        generators.like,
        "a synthetic trace with the statistics of a real one (--from)",
        {},
    ),
}
COMMON = {"--seed": "seed", "--duration": "duration_s", "--step": "step_s"}
HELP = {
    "high_mbps": "the high rate, Mbit/s",
    "low_mbps": "the low rate, Mbit/s",
    "start_mbps": "the rate at time 0, Mbit/s",
    "at_s": "when the rate drops, s",
    "period_s": "one on-then-off cycle, s",
    "off_s": "the outage at the end of each period, s",
    "noise": "multiply each step's rate by exp(NOISE * N(0, 1))",
    "sigma": "standard deviation of each step's change in log-rate",
    "seed": "random seed",
    "duration_s": "trace length, s",
    "step_s": "one rate sample every STEP seconds",
}


def describe(trace: Trace, floor_mbps: float) -> dict[str, float]:
    """The numbers `info` prints: time-weighted rate statistics, outage share, persistence."""
    rates = trace.mbps
    widths = np.diff(np.append(trace.starts_s, trace.duration_s))
    order = np.argsort(rates, kind="stable")
    share = np.cumsum(widths[order]) / trace.duration_s

    def percentile(q: float) -> float:
        return float(rates[order][min(np.searchsorted(share, q / 100), rates.size - 1)])
    stats = {
        "duration_s": trace.duration_s,
        "segments": float(rates.size),
        "mean_mbps": trace.mean_mbps(),
        "min_mbps": float(rates.min()),
        "p5_mbps": percentile(5),
        "median_mbps": percentile(50),
        "p95_mbps": percentile(95),
        "max_mbps": float(rates.max()),
        "at_floor": float(widths[rates <= floor_mbps].sum() / trace.duration_s),
    }
    if trace.duration_s > MAX_ELEMENTS:  # too many seconds to bin: no persistence figure
        return stats
    seconds = trace.bin_means(1.0)[: int(trace.duration_s)]
    if seconds.size >= 3 and seconds.std() > 0:
        stats["lag1_autocorr_1s"] = float(np.corrcoef(seconds[:-1], seconds[1:])[0, 1])
    return stats


def info(args: argparse.Namespace) -> None:
    trace = _load(args)
    stats = describe(trace, args.floor)
    fmt = args.format or file_format(args.source)
    rows = [("file", args.source), ("format", fmt)]
    for key, value in stats.items():
        if key == "segments":
            rows.append((key, f"{value:.0f}"))
        elif key == "at_floor":
            rows.append((key, f"{100 * value:.1f} % of the time (floor {args.floor} Mbit/s)"))
        else:
            rows.append((key, f"{value:.3f}"))
    print("\n".join(f"{key:<18}{value}" for key, value in rows))
    if args.plot:
        plot(trace, args.plot)
        print(f"wrote {args.plot}")


def plot(trace: Trace, path: Path) -> None:
    """Rate against time, as the link sees it (steps), with the mean."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    times = np.append(trace.starts_s, trace.duration_s)
    rates = np.append(trace.mbps, trace.mbps[-1])
    fig, ax = plt.subplots(figsize=(9, 3.2), layout="constrained")
    ax.step(times, rates, where="post", linewidth=0.8, label="capacity")
    ax.axhline(trace.mean_mbps(), color="C1", linestyle="--", linewidth=1, label="mean")
    ax.set(xlabel="time (s)", ylabel="Mbit/s", title=trace.name, xlim=(0, trace.duration_s))
    ax.set_ylim(bottom=0)
    ax.legend(loc="best")
    fig.savefig(path, dpi=120)
    plt.close(fig)


def convert(args: argparse.Namespace) -> None:
    _write(_load(args), args.out, args.to)


def generate(args: argparse.Namespace) -> None:
    function, _, options = KINDS[args.kind]
    params = {param: getattr(args, param) for param in [*options.values(), *COMMON.values()]}
    if args.kind == "like":
        real = load_trace(args.source, format=args.format, scale=args.scale)
        _write(function(real, **params), args.out, args.to)
    else:
        _write(function(**params), args.out, args.to)


def _load(args: argparse.Namespace) -> Trace:
    return load_trace(
        args.source, format=args.format, scale=args.scale, bin_s=args.bin, floor_mbps=args.floor
    )


def _write(trace: Trace, out: Path, fmt: str) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    write_trace(trace, out, fmt)
    print(
        f"wrote {out} ({fmt}): {trace.duration_s:g} s, {len(trace.mbps)} segments, "
        f"mean {trace.mean_mbps():.3f} Mbit/s"
    )


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = ArgumentParser(
        prog="python -m sim.traces",
        description="Inspect, convert and generate bandwidth traces (csv, mahimahi, mbps-log). "
        "See docs/traces.md.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    add_info(commands)
    add_convert(commands)
    add_generate(commands)
    return parser.parse_args(argv)


def add_info(commands: argparse._SubParsersAction) -> None:
    sub = commands.add_parser(
        "info", help="print a trace's duration and rate statistics; optionally plot it",
        description="Print a trace's duration and time-weighted rate statistics (mean, min, "
        "percentiles, max, share of time at the floor, lag-1 autocorrelation of 1 s means), "
        "after --scale, --bin and --floor. Use --bin 1 on Mahimahi traces: at 1 ms every rate "
        "is a whole number of packets.",
    )
    sub.add_argument("source", metavar="TRACE", help="the trace file")
    _add_shaping(sub)
    sub.add_argument("--plot", type=writable_file,
                     help="also write a PNG of rate against time here")
    sub.set_defaults(run=info)


def add_convert(commands: argparse._SubParsersAction) -> None:
    sub = commands.add_parser(
        "convert", help="rewrite a trace in another format, optionally scaled and binned",
        description="Read a trace (--scale, --bin and --floor applied) and write it in another "
        "format. csv and mbps-log are exact; mahimahi rounds the capacity to whole 1500-byte "
        "packets per millisecond.",
    )
    sub.add_argument("source", metavar="IN", help="the trace to read")
    sub.add_argument("out", metavar="OUT", type=Path, help="the file to write")
    sub.add_argument("--to", choices=FORMATS, required=True, help="the format to write")
    _add_shaping(sub)
    sub.set_defaults(run=convert)


def add_generate(commands: argparse._SubParsersAction) -> None:
    sub = commands.add_parser(
        "generate", help="write a seeded synthetic trace",
        description="Write a seeded synthetic trace: the same options give the same file. "
        "`generate KIND --help` lists each kind's options.",
    )
    kinds = sub.add_subparsers(dest="kind", required=True, metavar="KIND")
    for kind, (function, summary, options) in KINDS.items():
        parser = kinds.add_parser(kind, help=summary, description=summary[0].upper() + summary[1:])
        parser.add_argument("out", metavar="OUT", type=Path, help="the file to write")
        defaults = inspect.signature(function).parameters
        for flag, param in {**options, **COMMON}.items():
            default = defaults[param].default
            value_type = int if param == "seed" else float
            help_text = HELP[param] + (" (default: the real trace's)" if default is None else "")
            parser.add_argument(
                flag, dest=param, type=value_type, default=default,
                help=help_text + (" (default %(default)s)" if default is not None else ""),
            )
        if kind == "like":
            parser.add_argument("--from", dest="source", metavar="TRACE", required=True,
                                help="the real trace whose statistics to copy")
            parser.add_argument("--format", choices=FORMATS,
                                help="the real trace's format (default: detected)")
            parser.add_argument("--scale", type=float, default=1.0,
                                help="multiply the real trace's rates first (default 1)")
        parser.add_argument("--to", choices=FORMATS, default="csv",
                            help="the format to write (default csv)")
        parser.set_defaults(run=generate)


def _add_shaping(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--format", choices=FORMATS, help="the input's format (default: detected)")
    parser.add_argument("--scale", type=float, default=1.0,
                        help="multiply every rate (default 1)")
    parser.add_argument("--bin", type=float, default=None,
                        help="average capacity over bins of this many seconds (default: none)")
    parser.add_argument("--floor", type=float, default=DEFAULT_FLOOR_MBPS,
                        help=f"raise lower rates to this, Mbit/s (default {DEFAULT_FLOOR_MBPS})")


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        args.run(args)
    except OSError as error:
        print(f"traces: {error.filename or ''}: {error.strerror or error}", file=sys.stderr)
        return 2
    except ValueError as error:
        print(f"traces: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
