"""Run the emulation agreement cases of docs/emulation.md one after another (as root) and write
their table: ``.venv/bin/python scripts/emulation_agreement.py [--out runs/agreement]
[--shared ../shared/traces] [--only NAME ...]``. Each case takes about its duration plus 15 s.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
NORWAY = "hsdpa-norway/norway_bus_10"


def cases(shared: Path) -> list[tuple[str, list[str]]]:
    """(name, emulation.run arguments) for each case."""
    step, norway = ROOT / "traces" / "step-drop.csv", shared / NORWAY
    runs = []
    for policy in ("quantpipe", "mpc"):
        runs += [
            (f"digits-vit-step-drop-{policy}",
             [str(step), "--config", "configs/emulation/digits-vit.toml", "--scale", "0.1",
              "--policy", policy]),
            (f"digits-vit-norway-{policy}",
             [str(norway), "--config", "configs/emulation/digits-vit.toml", "--policy", policy]),
            (f"minilm-step-drop-{policy}",
             [str(step), "--config", "configs/emulation/minilm.toml", "--policy", policy]),
            (f"minilm-norway-{policy}",
             [str(norway), "--config", "configs/emulation/minilm.toml", "--scale", "10",
              "--policy", policy]),
        ]
    runs.append(("digits-vit-mb32-norway-quantpipe",  # 4x larger frames: the cause check
                 [str(norway), "--config", "configs/emulation/digits-vit-mb32.toml", "--scale",
                  "4", "--policy", "quantpipe"]))
    runs.append(("vit-base-3stage-step-drop-quantpipe",
                 [str(step), "--config", "configs/emulation/vit-base-3stage.toml"]))
    return runs


def row(name: str, args: list[str], folder: Path) -> str:
    agreement = json.loads((folder / "agreement.json").read_text())
    emulated = json.loads((folder / "summary.json").read_text())
    simulated = json.loads((folder / "simulated" / "summary.json").read_text())
    trace = Path(args[0]).name
    scale = args[args.index("--scale") + 1] if "--scale" in args else "1"
    error, same = agreement["rate_error_median"], agreement["same_bits_share"]
    return (
        f"| {name} | {trace} x{scale} | {agreement['windows']} "
        f"| {100 * error:.1f} % / {100 * agreement['rate_error_p90']:.1f} % | {100 * same:.1f} % "
        f"| {emulated['mean_bits']:.2f} / {simulated['mean_bits']:.2f} "
        f"| {emulated['throughput_items_per_s']:.1f} / {simulated['throughput_items_per_s']:.1f} "
        f"| {emulated['bits_switches']} / {simulated['bits_switches']} |"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "agreement")
    parser.add_argument("--shared", type=Path, default=ROOT.parent / "shared" / "traces",
                        help="the shared real traces (for the Norway cases)")
    parser.add_argument("--only", nargs="*", default=None,
                        help="run only these cases (none: just rebuild the table)")
    args = parser.parse_args()
    rows = [
        "| case | trace | windows | rate error median / p90 | same bits | mean bits emu / sim "
        "| items/s emu / sim | switches emu / sim |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, run_args in cases(args.shared):
        folder = args.out / name
        if args.only is None or name in args.only:
            print(f"== {name}", flush=True)
            done = subprocess.run([sys.executable, "-m", "emulation.run", *run_args, "--out",
                                   str(folder)], cwd=ROOT, check=False)
            if done.returncode != 0:
                print(f"{name}: emulation.run exited with {done.returncode}", file=sys.stderr)
        if (folder / "agreement.json").exists():
            rows.append(row(name, run_args, folder))
    (args.out / "table.md").write_text("\n".join(rows) + "\n")
    print("\n".join(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
