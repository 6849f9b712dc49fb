"""``python -m quantpipe_core.runtime --config cfg.toml --rank R``: run one pipeline stage."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from quantpipe_core.cli import (
    ArgumentParser,
    add_run_options,
    int_at_least,
    nonnegative_int,
)
from quantpipe_core.config import ConfigError, load_config
from quantpipe_core.runtime.auth import KEY_ENV, load_run_key
from quantpipe_core.runtime.stage import RankOptions, run_rank


def parser() -> argparse.ArgumentParser:
    p = ArgumentParser(
        prog="python -m quantpipe_core.runtime",
        description="Run one stage of a QuantPipe pipeline (one process per device).",
    )
    p.add_argument("--config", required=True, help="the run's TOML configuration")
    p.add_argument("--rank", type=nonnegative_int, required=True,
                   help="this device's index in the config's [[devices]] (0 = source)")
    add_run_options(p)
    p.add_argument("--master-addr", default="127.0.0.1",
                   help="address of rank 0, which every rank must reach (default 127.0.0.1)")
    p.add_argument("--master-port", type=port_number, default=29500,
                   help="rank 0's port (default 29500)")
    p.add_argument("--key-file", type=Path, default=None,
                   help=f"file holding the run key that every rank must share (default: the "
                   f"{KEY_ENV} environment variable); ranks prove it before any activation "
                   "flows, and every frame carries a tag keyed by it. Make one with: openssl "
                   "rand -hex 32")
    p.add_argument("--insecure", action="store_true",
                   help="run without a run key on a non-loopback --master-addr: anyone who "
                   "reaches rank 0 can then join the run")
    p.add_argument("--fault", default="", help=argparse.SUPPRESS)  # testing aid
    return p


def port_number(text: str) -> int:
    """An argparse type: a TCP port, 1..65535."""
    port = int_at_least(1)(text)
    if port > 65535:
        raise argparse.ArgumentTypeError(f"a port is at most 65535, got {port}")
    return port


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        config = load_config(args.config)
        options = RankOptions(
            rank=args.rank, master_addr=args.master_addr, master_port=args.master_port,
            out=args.out, timeout_s=args.timeout_s, duration_s=args.duration,
            microbatches=args.microbatches, key=load_run_key(args.key_file),
            insecure=args.insecure, fault=args.fault,
        )
        code = run_rank(config, options)
    except (ConfigError, ValueError) as error:
        print(f"quantpipe runtime: rank {args.rank}: {error}", file=sys.stderr)
        code = 2
    except KeyboardInterrupt:
        code = 130
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)  # link threads blocked in gloo after a fault must not keep the process alive


if __name__ == "__main__":
    main()
