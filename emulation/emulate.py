"""One emulated run: the runtime's ranks in the chain's hosts, the links' rates replayed from
their traces, and every rank's measurements merged into the simulator's four files.

The replay and the runtime share one clock: rank 0 writes the instant its run starts
(``clock.json``, see `quantpipe_core.runtime.report.write_clock`) and change ``i`` of a trace is
applied at that instant plus ``t_i``. Until then every link runs at its trace's first rate, which
is what the simulator assumes at time 0.

    traces = link_traces(config, "traces/step-drop.csv")
    result = emulate(config, "traces/step-drop.csv", traces, Path("runs/emulated"))
"""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from emulation.replay import HtbClass, Replayer, replay_trace, replayable_mbps
from emulation.topology import chain
from quantpipe_core.config import Config, to_toml
from quantpipe_core.plan import run_duration
from quantpipe_core.runtime.auth import new_run_key
from quantpipe_core.runtime.launch import rank_command, rank_environment, stop, supervise
from quantpipe_core.runtime.plan import resolve_runtime
from quantpipe_core.runtime.report import read_clock, read_rank_reports, write_merged
from quantpipe_core.trace import Trace

PROJECT_ROOT = Path(__file__).resolve().parent.parent
MASTER_PORT = 29500
START_TIMEOUT_S = 120.0  # for every rank to import torch, load its stage and join the group


class EmulationError(RuntimeError):
    """A run that could not be completed; the message says which rank or link and why."""


@dataclass
class Emulated:
    """A finished emulated run: its summary and the ranks that failed."""

    summary: dict[str, Any]
    failed_ranks: list[int]
    interrupted: bool = False


def link_traces(config: Config, trace_path: str | Path) -> list[Trace]:
    """Each link's trace as the replay applies it; `trace_path` where a link names none."""
    return [replay_trace(link, link.trace or trace_path) for link in config.links]


def wait_for_clock(ranks_out: Path, processes: list[subprocess.Popen]) -> float:
    """Rank 0's start (unix seconds), once every rank has joined; an error if a rank ends
    first or the group does not form within `START_TIMEOUT_S`."""
    deadline = time.monotonic() + START_TIMEOUT_S
    while (t0 := read_clock(ranks_out)) is None:
        ended = [rank for rank, p in enumerate(processes) if p.poll() is not None]
        if ended:
            raise EmulationError(f"rank {ended[0]} exited ({processes[ended[0]].returncode}) "
                                 f"before the run started: see {ranks_out}/rank{ended[0]}.log")
        if time.monotonic() > deadline:
            raise EmulationError(f"the ranks did not start within {START_TIMEOUT_S:g} s: see "
                                 f"{ranks_out}/rank*.log")
        time.sleep(0.01)
    return t0


def emulate(
    config: Config,
    trace_path: str | Path,
    traces: list[Trace],
    out: Path,
    *,
    timeout_s: float = 30.0,
    on_progress: Callable[[float], None] | None = None,
) -> Emulated:
    """Run `config` in Mininet (as root) with `trace_path` on every link that names no trace;
    `traces` are the links' traces as `link_traces` loads them.

    Writes the four result files into `out`, and into ``out/ranks`` the run's config file,
    each rank's log (``rankR.log``) and raw report. `on_progress` gets the run's seconds so far.
    Ctrl-C makes every rank save its report; what they measured is merged as after a fault,
    and the result says it was interrupted.
    """
    duration = run_duration(config, traces)
    ranks_out = out / "ranks"
    shutil.rmtree(ranks_out, ignore_errors=True)
    ranks_out.mkdir(parents=True)
    config_file = ranks_out / "config.toml"
    config_file.write_text(to_toml(config))
    world = len(config.devices)
    processes: list[subprocess.Popen] = []
    replayer: Replayer | None = None
    interrupted = False
    failure: EmulationError | None = None
    key = new_run_key()
    with chain(world, [replayable_mbps(trace.rate_mbps(0.0)) for trace in traces]) as net:
        classes = [HtbClass.find(link.pid, link.intf) for link in net.links]
        try:
            for rank, host in enumerate(net.hosts):
                env = rank_environment(key, GLOO_SOCKET_IFNAME=net.ifname(rank),
                                       PYTHONPATH=str(PROJECT_ROOT), OMP_NUM_THREADS="1")
                command = rank_command(config_file, rank, net.addr(0), MASTER_PORT, ranks_out,
                                       timeout_s, duration_s=duration)
                with (ranks_out / f"rank{rank}.log").open("w") as log:
                    processes.append(host.popen(command, env=env, cwd=PROJECT_ROOT, stdout=log,
                                                stderr=subprocess.STDOUT))
            t0 = wait_for_clock(ranks_out, processes)
            replayer = Replayer(classes, traces, start=time.monotonic() - (time.time() - t0),
                                duration_s=duration)
            replayer.start()

            def tick() -> None:
                if replayer.error is not None:
                    raise EmulationError(f"trace replay failed: {replayer.error}")
                if on_progress is not None:
                    on_progress(time.time() - t0)

            supervise(processes, timeout_s, tick)
        except KeyboardInterrupt:
            interrupted = True
        except EmulationError as error:
            failure = error
        finally:
            if replayer is not None:
                replayer.stop()
            stop(processes)
    failed = [rank for rank, p in enumerate(processes) if p.returncode != 0]
    reports = read_rank_reports(ranks_out, world)
    if not reports:
        raise failure or EmulationError(f"no rank wrote a report: see {ranks_out}/rank*.log")
    late = [a.done_s - a.due_s for a in replayer.applied] if replayer else []
    record = {
        "runtime": "quantpipe_core.runtime in Mininet hosts (emulation.run)",
        "emulation": {
            "topology": "routed chain of Mininet hosts, htb on each link's sending side",
            "replay_changes": len(late),
            "replay_late_ms_median": 1e3 * sorted(late)[len(late) // 2] if late else None,
            "replay_late_ms_max": 1e3 * max(late) if late else None,
            "failed_ranks": failed,
            "interrupted": interrupted,
        },
        "traces": {f"link{k}": str(link.trace or trace_path)
                   for k, link in enumerate(config.links)},
    }
    summary = write_merged(out, resolve_runtime(config), reports,
                           None if interrupted or failure else duration,
                           trace_mbps=[trace.mean_mbps for trace in traces], record=record)
    if failure is not None:
        raise EmulationError(f"{failure}; what was measured before it is in {out}")
    return Emulated(summary, failed, interrupted)
