"""Emulate a pipeline on a bandwidth trace: ``python -m emulation.run TRACE [options]`` (root).

Takes the same arguments as ``python -m sim.run``, so a simulated case reruns emulated by
changing the module name. The real runtime's ranks run in Mininet hosts joined by a chain of
htb-shaped links whose rates replay the traces in real time; then the simulator runs the same
config on the same traces. Writes to --out (default ``runs/<trace>-<policy>-emulated/``):

- ``timeline.csv``, ``windows.csv``, ``summary.json``, ``plot.png``: the emulated run;
- ``simulated/``: the same four files from the simulator;
- ``agreement.json``, ``agreement.png``: the two compared window by window
  (`emulation.agreement`);
- ``ranks/``: the config the ranks ran, each rank's log and raw report.
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Sequence

from tqdm import tqdm

from emulation.agreement import write_agreement
from emulation.emulate import EmulationError, emulate, link_traces
from emulation.replay import replay_config
from quantpipe_core.cli import check_out_dir, fail, positive_float
from quantpipe_core.formatting import percent
from quantpipe_core.plan import check_real_link_policy, run_duration
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

PROG = "emulation.run"

DESCRIPTION = (
    "Emulate pipeline-parallel inference in Mininet (as root): the real runtime's stages in "
    "hosts joined by links whose rates replay the trace; then simulate the same config and "
    "compare the two. Same options as python -m sim.run."
)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser("python -m emulation.run", DESCRIPTION)
    parser.add_argument("--timeout-s", type=positive_float, default=30.0,
                        help="longest wait of any rank for a receive before the run ends with "
                        "an error, > 0 (default 30)")
    args = parser.parse_args(argv)
    try:
        config, notes = replay_config(run_config(args), args.trace)
        check_real_link_policy(config.policy.name)
        check_user_policy(config)
        traces = link_traces(config, args.trace)
        duration = run_duration(config, traces)
        out = check_out_dir(default_out(args, config, "-emulated"))
    except ValueError as error:
        return refuse(PROG, error, args)
    if os.geteuid() != 0:
        return fail(PROG, "Mininet needs root: run it as root (e.g. sudo .venv/bin/python -m "
                    "emulation.run ...)")
    print(f"emulating {duration:g} s of {args.trace} on {len(config.devices)} hosts "
          f"({config.model.name}, policy {config.policy.name}); this takes real time")
    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        with tqdm(total=round(duration), desc="emulating", unit="s", leave=False) as bar:
            def progress(now_s: float) -> None:
                bar.update(max(0, min(round(now_s), bar.total) - bar.n))

            emulated = emulate(config, args.trace, traces, out, timeout_s=args.timeout_s,
                               on_progress=progress)
    except EmulationError as error:
        return fail(PROG, str(error))
    except KeyboardInterrupt:
        print("emulation.run: interrupted before any rank reported; the network is cleaned up",
              file=sys.stderr)
        return 130
    finally:
        signal.signal(signal.SIGTERM, previous)
    print("emulated:")
    print_summary(emulated.summary, emulated.summary["run"]["cuts"], out)
    if emulated.interrupted:
        print("emulation.run: interrupted: what was measured before it is above; no simulation "
              "or agreement; the network is cleaned up", file=sys.stderr)
        return 130
    try:
        simulated = simulate(config, args.trace)
    except Exception as error:
        if (refused := refusal(error, config)) is None:
            raise
        return refuse(PROG, refused, args)
    simulated.write(out / "simulated")
    result = write_agreement(out, out, out / "simulated", {
        "notes": notes,
        "emulated_failed_ranks": emulated.failed_ranks,
        "replay_late_ms_max": emulated.summary["run"]["emulation"]["replay_late_ms_max"],
    })
    print(f"simulated: throughput {simulated.summary['throughput_items_per_s']:.2f} items/s, "
          f"mean bits {simulated.summary['mean_bits']}; results in {out / 'simulated'}")
    print(f"agreement over {result['windows']} windows: delivered-rate error median "
          f"{percent(result['rate_error_median'], 1)} (<= 10 %: {result['rate_agrees']}), "
          f"same bits {percent(result['same_bits_share'], 1)} "
          f"(>= 80 %: {result['bits_agree']}); "
          f"{out / 'agreement.json'}, {out / 'agreement.png'}")
    return 1 if emulated.failed_ranks else 0


def interrupt(signum: int, frame: object) -> None:
    """SIGTERM as Ctrl-C: the emulator saves every rank's measurements, then cleans up."""
    raise KeyboardInterrupt


if __name__ == "__main__":
    sys.exit(main())
