"""``python -m quantpipe_core.runtime.launch --config cfg.toml [--out DIR]``: every rank of the
config as a local process on loopback, then the results of all of them in DIR.

The ranks share a fresh run key (in their environment, never on a command line), listen on
loopback only and die with the launcher. Each rank runs in a process group of its own; Ctrl-C
(or SIGTERM) here makes every rank save its report, and a rank that ends on a fault gives the
others ``--timeout-s`` plus a margin to notice before they are killed. After a fault or an
interrupt the ranks' own reports (``rankR.json``) are merged into the four files, so what was
measured before it is kept.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from quantpipe_core.cli import ArgumentParser, add_run_options, check_out_dir
from quantpipe_core.config import ConfigError, load_config
from quantpipe_core.runtime.auth import KEY_ENV, new_run_key
from quantpipe_core.runtime.lifetime import PARENT_ENV
from quantpipe_core.runtime.plan import resolve_runtime
from quantpipe_core.runtime.report import read_rank_reports, write_merged

GRACE_S = 10.0  # after a rank's fault, beyond the receive timeout, before the others are killed
KILL_WAIT_S = 3.0
POLL_S = 0.1


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rank_command(
    config: Path, rank: int, master_addr: str, port: int, out: Path, timeout_s: float, *,
    duration_s: float | None = None, microbatches: int | None = None, fault: str = "",
) -> list[str]:
    """The command that runs `rank` of `config` (here, and in the emulator's hosts)."""
    command = [
        sys.executable, "-m", "quantpipe_core.runtime", "--config", str(config),
        "--rank", str(rank), "--master-addr", master_addr, "--master-port", str(port),
        "--out", str(out), "--timeout-s", str(timeout_s),
    ]
    if duration_s is not None:
        command += ["--duration", str(duration_s)]
    if microbatches is not None:
        command += ["--microbatches", str(microbatches)]
    if fault:
        command += ["--fault", fault]
    return command


def rank_environment(key: str, **extra: str) -> dict[str, str]:
    """The environment of a rank this process starts: the run key, this process as the parent
    the rank dies with, and `extra` (e.g. the gloo interface)."""
    return {**os.environ, KEY_ENV: key, PARENT_ENV: str(os.getpid()), **extra}


def rank_fault(faults: list[str], rank: int) -> str:
    """This rank's part of the hidden ``--fault RANK:KIND:N`` options (testing aid)."""
    mine = [what for where, _, what in (f.partition(":") for f in faults) if where == str(rank)]
    return mine[-1] if mine else ""


def stop(processes: list[subprocess.Popen]) -> None:
    """SIGTERM to every rank's process group, then SIGKILL to whatever is left."""
    for process in processes:
        if process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
    deadline = time.monotonic() + KILL_WAIT_S
    for process in processes:
        try:
            process.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def supervise(
    processes: list[subprocess.Popen], timeout_s: float, on_tick: Callable[[], None] | None = None
) -> bool:
    """Wait for every rank; True once all have ended. After a rank's fault the others get
    `timeout_s` (their receive timeout) plus a grace to notice it; False if some are still
    running then. `on_tick` runs every `POLL_S` (progress, a replayer's health)."""
    deadline = None
    while any(p.poll() is None for p in processes):
        if deadline is None and any(p.poll() not in (None, 0) for p in processes):
            deadline = time.monotonic() + timeout_s + GRACE_S
        if deadline is not None and time.monotonic() > deadline:
            return False
        if on_tick is not None:
            on_tick()
        time.sleep(POLL_S)
    return True


def run(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    world = len(config.devices)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for stale in out.glob("rank*.json"):
        stale.unlink()
    port = free_port()
    env = rank_environment(new_run_key(), GLOO_SOCKET_IFNAME=os.environ.get(
        "GLOO_SOCKET_IFNAME", "lo"))
    processes: list[subprocess.Popen] = []

    def interrupted(signum, frame):
        raise KeyboardInterrupt

    def merge_reports() -> None:
        """The four files from what the ranks saved, timed over what they measured."""
        write_merged(out, resolve_runtime(config), read_rank_reports(out, world), None)

    previous = signal.signal(signal.SIGTERM, interrupted)
    try:
        for rank in range(world):
            processes.append(subprocess.Popen(
                rank_command(
                    args.config, rank, "127.0.0.1", port, out, args.timeout_s,
                    duration_s=args.duration, microbatches=args.microbatches,
                    fault=rank_fault(args.fault, rank),
                ),
                start_new_session=True, env=env,
            ))
        if not supervise(processes, args.timeout_s):
            print("quantpipe launch: ranks still running after a fault: killing them",
                  file=sys.stderr)
    except KeyboardInterrupt:
        print("quantpipe launch: interrupted: every rank saves its measurements",
              file=sys.stderr)
        stop(processes)
        merge_reports()
        print(f"quantpipe launch: what was measured before the interrupt is in {out}",
              file=sys.stderr)
        return 130
    finally:
        stop(processes)
        signal.signal(signal.SIGTERM, previous)
    codes = [p.returncode for p in processes]
    failed = [(rank, code) for rank, code in enumerate(codes) if code != 0]
    for rank, code in failed:
        print(f"quantpipe launch: rank {rank} ({config.devices[rank].name}) exited with {code}",
              file=sys.stderr)
    if failed:
        merge_reports()
        return 1
    summary = json.loads((out / "summary.json").read_text())
    print(
        f"{summary['items_completed']} items, {summary['throughput_items_per_s']:.1f} items/s "
        f"(target {summary['target_rate_items_per_s']:.1f}), mean bits {summary['mean_bits']}, "
        f"measured accuracy {summary['measured_accuracy']}; results in {out}"
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    p = ArgumentParser(
        prog="python -m quantpipe_core.runtime.launch",
        description="Run every stage of a QuantPipe pipeline as local processes (loopback).",
    )
    p.add_argument("--config", required=True, type=Path, help="the run's TOML configuration")
    add_run_options(p)
    p.add_argument("--fault", action="append", default=[], help=argparse.SUPPRESS)  # RANK:KIND:N
    args = p.parse_args(argv)
    try:
        if args.out is None:
            args.out = check_out_dir(Path("runtime-out"))
        return run(args)
    except (ConfigError, ValueError) as error:
        print(f"quantpipe launch: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
