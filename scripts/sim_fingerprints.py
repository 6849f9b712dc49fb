"""Fingerprints of the simulator's outputs, to show that a refactoring changed no result.

Simulates every shipped trace (traces/*.csv) under the built-in defaults and every config in
configs/reports and configs/emulation, with each built-in online policy, and records the SHA-256
of timeline.csv, windows.csv and summary.json (plot.png is left out: its bytes depend on the
plotting library, not on the simulator).

    python scripts/sim_fingerprints.py --write tests/data/sim_fingerprints.json   # before
    python scripts/sim_fingerprints.py --check tests/data/sim_fingerprints.json   # after

`--check` prints each case that differs and exits 1 if any does; tests/test_sim_fingerprints.py
runs it.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

from tqdm import tqdm

from quantpipe_core.config import Config, load_config
from sim.simulation import simulate

ROOT = Path(__file__).resolve().parent.parent
CONFIG_FOLDERS = ("configs/reports", "configs/emulation")
POLICIES = ("fixed:4", "quantpipe", "controller", "mpc", "planner", "oracle")
FILES = ("timeline.csv", "windows.csv", "summary.json")


def cases() -> Iterator[tuple[str, Config, Path]]:
    """(name, config, trace) for every shipped trace, config and policy; traces by their path
    relative to the checkout, as the run record keeps it (a clone elsewhere gets the same
    digests)."""
    configs = {"defaults": load_config(None)}
    for folder in CONFIG_FOLDERS:
        for path in sorted((ROOT / folder).glob("*.toml")):
            configs[f"{folder}/{path.name}"] = load_config(path)
    for trace in sorted(Path("traces").glob("*.csv")):
        for config_name, config in configs.items():
            for policy in POLICIES:
                run = config.replace(**{"policy.name": policy})
                yield f"{trace.name} {config_name} {policy}", run, trace


def fingerprints() -> dict[str, dict[str, str]]:
    """Each case's file digests."""
    found: dict[str, dict[str, str]] = {}
    todo = list(cases())
    with tempfile.TemporaryDirectory() as scratch:
        for name, config, trace in tqdm(todo, desc="simulating", unit="run"):
            out = Path(scratch) / "run"
            simulate(config, trace).write(out, files=FILES)
            found[name] = {f: hashlib.sha256((out / f).read_bytes()).hexdigest() for f in FILES}
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    action = parser.add_mutually_exclusive_group(required=True)
    action.add_argument("--write", type=Path, help="write the fingerprints to this JSON file")
    action.add_argument("--check", type=Path, help="compare with the fingerprints in this file")
    args = parser.parse_args(argv)
    write, check = (None if p is None else p.resolve() for p in (args.write, args.check))
    os.chdir(ROOT)
    found = fingerprints()
    if write is not None:
        write.parent.mkdir(parents=True, exist_ok=True)
        write.write_text(json.dumps(found, indent=1, sort_keys=True) + "\n")
        print(f"wrote {len(found)} fingerprints to {write}")
        return 0
    assert check is not None
    expected = json.loads(check.read_text())
    differ = sorted(k for k in expected.keys() | found.keys() if expected.get(k) != found.get(k))
    for name in differ:
        files = [f for f in FILES if expected.get(name, {}).get(f) != found.get(name, {}).get(f)]
        print(f"differs: {name}: {', '.join(files)}")
    print(f"{len(found) - len(differ)} of {len(expected | found)} cases identical")
    return 1 if differ else 0


if __name__ == "__main__":
    sys.exit(main())
