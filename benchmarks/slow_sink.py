"""Memory and results behind a slow stage: the hardening issue's red-team case.

ViT-Base cut after block 0 (the sink runs 11 blocks), fixed 16 bits, 80 items/s offered for 45 s
on loopback: the sink cannot keep up. Each rank's resident memory is sampled every 0.5 s while
the launcher runs; printed: each rank's memory after warm-up and its peak, the run's wall time,
and what the summary kept. Before the bounded queues the sink's inbox grew ~4.7 MB/s, the run
went on for ~4 minutes and the summary said 0 items.

    python -m benchmarks.slow_sink [--duration 45] [--target-rate 80] [--out runs/slow-sink]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

WARM_UP_S = 15.0
SAMPLE_S = 0.5
CONFIG = """\
[model]
name = "vit-base"
microbatch = 8
cuts = ["block0.out"]
[policy]
name = "fixed:16"
[source]
mode = "open"
target_rate = {rate}
[run]
duration_s = {duration}
[[devices]]
name = "source"
[[devices]]
name = "slow-sink"
"""


def rank_memory_mb(out: Path) -> dict[int, float]:
    """Resident MB of each live rank process writing into `out` (found through /proc)."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().split(b"\0")
            status = (entry / "status").read_text()
        except OSError:
            continue
        if b"--rank" in cmdline and str(out).encode() in cmdline:
            rank = int(cmdline[cmdline.index(b"--rank") + 1])
            rss_kb = next(int(line.split()[1]) for line in status.splitlines()
                          if line.startswith("VmRSS:"))
            found[rank] = rss_kb / 1024
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=45.0, help="seconds of input")
    parser.add_argument("--target-rate", type=float, default=80.0, help="items/s offered")
    parser.add_argument("--out", type=Path, default=Path("runs/slow-sink"))
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    config = args.out / "config.toml"
    config.write_text(CONFIG.format(rate=args.target_rate, duration=args.duration))
    start = time.monotonic()
    launcher = subprocess.Popen([sys.executable, "-m", "quantpipe_core.runtime.launch",
                                 "--config", str(config), "--out", str(args.out.resolve())])
    samples: list[tuple[float, dict[int, float]]] = []
    while launcher.poll() is None:
        samples.append((time.monotonic() - start, rank_memory_mb(args.out.resolve())))
        time.sleep(SAMPLE_S)
    wall = time.monotonic() - start
    print(f"\nwall time {wall:.1f} s for {args.duration:g} s of input (exit {launcher.returncode})")
    for rank in (0, 1):
        series = [(t, mb[rank]) for t, mb in samples if rank in mb]
        warm = [mb for t, mb in series if t >= WARM_UP_S]
        if not warm:
            print(f"rank {rank}: no samples after {WARM_UP_S:g} s")
            continue
        print(f"rank {rank}: {warm[0]:.0f} MB at {WARM_UP_S:g} s, peak after it {max(warm):.0f} "
              f"MB (growth {max(warm) - warm[0]:+.0f} MB), last {warm[-1]:.0f} MB")
    summary = json.loads((args.out / "summary.json").read_text())
    print(f"summary: {summary['items_completed']} items, "
          f"{summary['throughput_items_per_s']:.2f} items/s of {args.target_rate:g} offered")
    for note in summary["notes"]:
        print(f"  note: {note}")


if __name__ == "__main__":
    main()
