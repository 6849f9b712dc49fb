"""Trace-driven SimPy model of the pipeline: ``python -m sim.run TRACE``.

- `simulate(config, trace) -> SimResult`: the Python API behind the command (``result.summary``,
  ``result.write(out)``), in `sim.simulation`;
- `sim.pipeline`: the SimPy processes (source, stages, links);
- `sim.oracle`, `sim.optimal`: the policies that know the future trace (simulator only): the
  greedy oracle and the utility's offline optimum;
- `sim.traces`: the trace tool (``python -m sim.traces info|convert|generate``);
- `sim.compare`, `sim.report`: policy comparisons and the reports of docs/reports/, both on the
  library `sim.comparison` (runs, optimum, ranking, tables, plots);
- `sim.sweep`: grids of runs from a spec (`sim.grid`) into one table; `sim.engine` runs the
  simulations of all three in local processes or on Ray.
"""

from __future__ import annotations

from typing import Any

__all__ = ["SimResult", "simulate"]


def __getattr__(name: str) -> Any:
    """Load the simulation (and torch, for the models) only when it is asked for, so that
    ``python -m sim.traces`` starts fast."""
    if name in __all__:
        from sim import simulation

        return getattr(simulation, name)
    raise AttributeError(f"module 'sim' has no attribute {name!r}")
