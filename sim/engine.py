"""Where simulations run: a local process pool, or tasks on a Ray cluster.

`sim.sweep`, `sim.compare` and `sim.report` hand an engine `Run`s and get `Outcome`s back as
the runs finish. A run that raises comes back with its error instead of stopping the others.
The simulator is deterministic, so both backends return the same outcomes.

On Ray, each trace file is read once on the driver and put in the object store; every node
fetches it once and writes it to a local file for the simulator, whose record still names the
driver's path. Workers send back the summary and only the files a run asks for.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import tempfile
import time
import traceback
from collections.abc import Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass
from itertools import islice
from multiprocessing import get_context
from pathlib import Path
from typing import Any, Protocol

from quantpipe_core.config import Config

BACKENDS = ("local", "ray")
TRACE_CACHE = Path(tempfile.gettempdir()) / "quantpipe-traces"  # on each Ray node


class EngineError(RuntimeError):
    """A backend that cannot start: Ray missing, or its cluster out of reach."""


@dataclass(frozen=True)
class Run:
    """One simulation: `config` on `trace` (the driver's path). `key` names its outcome."""

    key: str
    config: Config
    trace: Path
    files: tuple[str, ...] = ()  # of the run's files (`quantpipe_core.results.RUN_FILES`)


@dataclass(frozen=True)
class Outcome:
    """What a worker sends back: the summary and the files asked for, or the error."""

    key: str
    summary: dict[str, Any] | None  # None when the run raised
    files: dict[str, bytes]
    error: str | None  # "TypeName: message"
    detail: str | None  # the traceback
    seconds: float  # in the worker

    def write_files(self, folder: Path) -> None:
        """The run's files, on the driver's disk."""
        if self.files:
            folder.mkdir(parents=True, exist_ok=True)
            for name, data in self.files.items():
                (folder / name).write_bytes(data)


@dataclass(frozen=True)
class TraceFile:
    """A trace file's bytes, shipped to the workers that have no access to the driver's
    disk."""

    path: Path  # as the driver names it
    data: bytes

    def local_copy(self) -> Path:
        """The bytes in a file on this machine, written once (by content) and kept."""
        folder = TRACE_CACHE / hashlib.sha256(self.data).hexdigest()[:16]
        path = folder / self.path.name
        if not path.is_file():
            folder.mkdir(parents=True, exist_ok=True)
            part = folder / f".{self.path.name}.{os.getpid()}"
            part.write_bytes(self.data)
            part.replace(path)
        return path


def execute(run: Run, trace: Path | TraceFile) -> Outcome:
    """Simulate `run` in a worker; an exception becomes the outcome's error."""
    start = time.perf_counter()
    path = run.trace
    try:
        from sim.simulation import simulate

        path = trace if isinstance(trace, Path) else trace.local_copy()
        result = simulate(run.config, path)
        for link in result.summary["run"]["traces"].values():
            if link["path"] == str(path):
                link["path"] = str(run.trace)
        files = {}
        if run.files:
            with tempfile.TemporaryDirectory() as folder:
                result.write(folder, run.files)
                files = {name: (Path(folder) / name).read_bytes() for name in run.files}
        return Outcome(run.key, result.summary, files, None, None, time.perf_counter() - start)
    except Exception as error:
        message = f"{type(error).__name__}: {error}".replace(str(path), str(run.trace))
        return Outcome(run.key, None, {}, message, traceback.format_exc(),
                       time.perf_counter() - start)


class Engine(Protocol):
    def map(self, runs: Iterable[Run]) -> Iterator[Outcome]:
        """Run `runs`, a few at a time, yielding each outcome as it finishes."""
        ...

    def close(self) -> None: ...


class LocalEngine:
    """`jobs` processes on this machine; they read the traces from the driver's disk."""

    def __init__(self, jobs: int) -> None:
        # spawn: a fork of a driver that holds threads (Ray's, tqdm's) can deadlock
        self.pool = ProcessPoolExecutor(max_workers=jobs, mp_context=get_context("spawn"))
        self.in_flight = 2 * jobs  # queued ahead, so no worker waits for the driver

    def map(self, runs: Iterable[Run]) -> Iterator[Outcome]:
        todo = iter(runs)
        pending: set[Future[Outcome]] = set()
        while True:
            for run in islice(todo, self.in_flight - len(pending)):
                pending.add(self.pool.submit(execute, run, run.trace))
            if not pending:
                return
            done, pending = wait(pending, return_when=FIRST_COMPLETED)
            yield from (future.result() for future in done)

    def close(self) -> None:
        self.pool.shutdown(cancel_futures=True)


class RayEngine:
    """Ray tasks, one per run, on the cluster at `address` (or ``RAY_ADDRESS``; "auto" finds
    one on this machine), or on a Ray instance of `jobs` CPUs started here. A Ray already
    initialized in this process is used as it is."""

    def __init__(self, address: str | None, jobs: int) -> None:
        try:
            import ray
        except ImportError:
            raise EngineError(
                "--backend ray needs Ray: pip install -e '.[cluster]' (scripts/setup.sh does)"
            ) from None
        self.ray = ray
        self.started = not ray.is_initialized()
        address = address or os.environ.get("RAY_ADDRESS")
        if self.started:
            try:
                if address:
                    ray.init(address=address)
                else:
                    ray.init(address="local", num_cpus=jobs, include_dashboard=False)
            except (ConnectionError, RuntimeError) as error:  # unreachable; other versions
                what = f"join the Ray cluster at {address}" if address else "start a local Ray"
                raise EngineError(f"cannot {what}: {error}") from None
        self.task = ray.remote(execute)
        self.in_flight = 2 * max(1, int(ray.cluster_resources().get("CPU", 1)))
        self.traces: dict[Path, Any] = {}  # path -> object reference

    def trace(self, path: Path) -> Any:
        """The object-store copy of the trace at `path`, put there on first use."""
        if path not in self.traces:
            self.traces[path] = self.ray.put(TraceFile(path, path.read_bytes()))
        return self.traces[path]

    def map(self, runs: Iterable[Run]) -> Iterator[Outcome]:
        todo = iter(runs)
        pending: dict[Any, Run] = {}
        while True:
            for run in islice(todo, self.in_flight - len(pending)):
                pending[self.task.remote(run, self.trace(run.trace))] = run
            if not pending:
                return
            [ready], _ = self.ray.wait(list(pending), num_returns=1)
            run = pending.pop(ready)
            try:
                yield self.ray.get(ready)
            except self.ray.exceptions.RayError as error:  # a worker or node lost
                yield Outcome(run.key, None, {}, f"{type(error).__name__}: {error}", None, 0.0)

    def close(self) -> None:
        if self.started:
            self.ray.shutdown()


def open_engine(backend: str, address: str | None = None, jobs: int | None = None) -> Engine:
    """The backend by name; `jobs` defaults to this machine's CPUs."""
    if jobs is not None and jobs < 1:
        raise EngineError("--jobs must be at least 1")
    jobs = jobs or os.cpu_count() or 1
    if backend == "ray":
        return RayEngine(address, jobs)
    if address:
        raise EngineError("--address goes with --backend ray")
    return LocalEngine(jobs)


def add_engine_options(parser: argparse.ArgumentParser, jobs: int | None) -> None:
    """--backend, --address and --jobs, the same for every command that runs simulations."""
    parser.add_argument("--backend", choices=BACKENDS, default="local",
                        help="local: a process pool here (default); ray: Ray tasks")
    parser.add_argument("--address", default=None,
                        help="the Ray cluster to join (default: RAY_ADDRESS, else start a local "
                        "Ray); 'auto' finds one started on this machine")
    parser.add_argument("--jobs", type=int, default=jobs,
                        help="parallel simulations: local processes, or the CPUs of the Ray "
                        "instance started here; a cluster's own CPUs decide there "
                        f"(default: {jobs or 'the CPUs of this machine'})")
