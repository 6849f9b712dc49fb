"""What the commands that run one config on a trace share (``python -m sim.run`` and
``python -m emulation.run`` take the same options, refuse bad input the same way and print the
same summary), kept here so that no command module imports another."""

from __future__ import annotations

import argparse
import importlib
from pathlib import Path
from typing import Any

from quantpipe_core.cli import (
    ArgumentParser,
    add_debug_option,
    debugging,
    fail,
    nonnegative_int,
    positive_float,
    writable_out_dir,
)
from quantpipe_core.config import SIM_ONLY_POLICIES, USER_CLASS, Config, default_toml, load_config
from quantpipe_core.formatting import cell
from quantpipe_core.policy import BUILT_IN, make_policy
from quantpipe_core.sender import PolicyFailed
from quantpipe_core.trace import TraceError


class PrintDefaultConfig(argparse.Action):
    """``--print-default-config``: the documented default config on stdout, then exit 0 (like
    ``--version``, it needs no trace)."""

    def __init__(self, option_strings: list[str], dest: str, **kwargs: Any) -> None:
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, **kwargs)

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace,
                 values: Any, option_string: str | None = None) -> None:
        print(default_toml(), end="")
        parser.exit()


def build_parser(prog: str, description: str) -> argparse.ArgumentParser:
    """The options of a run on a trace, the same for every command that runs one."""
    parser = ArgumentParser(prog=prog, description=description)
    parser.add_argument("trace", type=Path,
                        help="bandwidth trace (CSV time_s,mbps; Mahimahi; or 'time mbps' log); "
                        "used on every link whose config names no trace")
    parser.add_argument("--config", type=Path, default=None,
                        help="TOML run configuration (default: built-in defaults; "
                        "see docs/config.md)")
    parser.add_argument("--print-default-config", action=PrintDefaultConfig,
                        help="print the default configuration, every field documented, and exit")
    built_in = ["fixed", "fixed:N", *(name for name in BUILT_IN if name != "fixed")]
    parser.add_argument("--policy", default=None,
                        help=f"{', '.join(built_in)}, {', '.join(SIM_ONLY_POLICIES)} (simulator "
                        "only: optimal is the offline optimum of the utility) or module:Class "
                        "(overrides the config)")
    parser.add_argument("--bits", type=int, default=None,
                        help="bitwidth for --policy fixed (1..16, or 32 for float32)")
    parser.add_argument("--target-rate", type=positive_float, default=None,
                        help="target items/s, > 0 (default: 90%% of the compute-bound rate)")
    parser.add_argument("--scale", type=positive_float, default=None,
                        help="multiply every link's rates by F > 0 (e.g. 30 for mobile traces)")
    parser.add_argument("--duration", type=positive_float, default=None,
                        help="seconds to run, > 0 (default: one pass of the longest trace)")
    parser.add_argument("--seed", type=nonnegative_int, default=None,
                        help="run seed, >= 0 (recorded)")
    parser.add_argument("--out", type=writable_out_dir, default=None,
                        help="output folder (default runs/<trace>-<policy>/)")
    add_debug_option(parser)
    return parser


def run_config(args: argparse.Namespace) -> Config:
    """The config file (or the defaults) with the command line's overrides; `ConfigError`,
    `ValueError` or `TraceError` (missing trace) when they do not make a run."""
    config = load_config(args.config)
    changes = overrides(args)
    if changes:
        config = config.replace(**changes)
    if not args.trace.is_file():
        raise TraceError(f"trace {args.trace} does not exist")
    for k, link in enumerate(config.links):
        if link.trace and not Path(link.trace).is_file():
            raise TraceError(f"{args.config}: links[{k}].trace: no such file {link.trace}")
    return config


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


def default_out(args: argparse.Namespace, config: Config, suffix: str = "") -> Path:
    """``--out``, or ``runs/<trace>-<policy><suffix>``."""
    name = f"{args.trace.stem}-{config.policy.name.replace(':', '')}{suffix}"
    return args.out or Path("runs") / name


class UserPolicyError(ValueError):
    """The user's policy class failed; the message names it and what failed."""


def check_user_policy(config: Config) -> None:
    """Import and build a user's ``module:Class`` policy once, before the run, so that a module
    or constructor that raises is a one-line `UserPolicyError` now, not a traceback later."""
    name = config.policy.name
    if not USER_CLASS.fullmatch(name):
        return
    module = name.partition(":")[0]
    try:
        importlib.import_module(module)
    except Exception as error:
        raise UserPolicyError(
            f"policy {name!r}: importing {module} raised {_kind(error)}"
        ) from error
    try:
        make_policy(name, **config.policy.params)
    except ValueError:
        raise
    except Exception as error:
        raise UserPolicyError(f"policy {name!r}: its constructor raised {_kind(error)}") from error


def refusal(error: Exception, config: Config) -> ValueError | None:
    """What to tell the user about an error raised by a run: a `UserPolicyError` naming the
    policy, link, window and time if the policy's decision failed; a refused input (any
    `ValueError`) as it is; None for anything else, a bug whose traceback should show."""
    decision = next((e for e in _chain(error) if isinstance(e, PolicyFailed)), None)
    if decision is not None:
        failed = UserPolicyError(
            f"policy {config.policy.name!r} failed on link {decision.link}, window "
            f"{decision.window} (t = {decision.now_s:.3f} s): {_kind(_chain(error)[-1])}"
        )
        failed.__cause__ = error
        return failed
    return error if isinstance(error, ValueError) else None


def refuse(prog: str, error: ValueError, args: argparse.Namespace) -> int:
    """One line for `error` (with the traceback first under --debug if the user's policy
    failed); the exit status, 2."""
    user_error = error if isinstance(error, UserPolicyError) else None
    return fail(prog, str(error), user_error=user_error, debug=debugging(args))


def _chain(error: BaseException) -> list[BaseException]:
    """`error` and the exceptions that caused it, outermost first."""
    chain = [error]
    while chain[-1].__cause__ is not None and chain[-1].__cause__ not in chain:
        chain.append(chain[-1].__cause__)
    return chain


def _kind(error: BaseException) -> str:
    return f"{type(error).__name__}: {error}"


def print_summary(summary: dict[str, Any], cuts: list[str], out: Path) -> None:
    """A run's figures, one per line, and the files it wrote."""
    print(f"cuts: {', '.join(cuts) or '(one stage)'}")
    rows = [
        ("throughput (items/s)", cell(summary["throughput_items_per_s"], 2)),
        ("target (items/s)", cell(summary["target_rate_items_per_s"], 2)),
        ("target met (share of intervals)", cell(summary["target_met_fraction"], 3)),
        ("mean bits", cell(summary["mean_bits"], 2)),
        ("expected accuracy", cell(summary["expected_accuracy"], 4)),
        ("latency p50 / p95 (s)",
         f"{cell(summary['latency_p50_s'], 3)} / {cell(summary['latency_p95_s'], 3)}"),
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
