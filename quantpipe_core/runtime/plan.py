"""From a configuration to what every rank needs: the model's stages, the cuts, packet sizes,
policies and the target rate, resolved by `quantpipe_core.plan` exactly as for the simulator
(only the links' traces are absent: a real link has no trace)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from quantpipe_core.config import Config
from quantpipe_core.models import StagedModel
from quantpipe_core.plan import (
    LinkSpec,
    Plan,
    SourceSpec,
    StageSpec,
    build_specs,
    notes,
    resolve,
    run_info,
)
from quantpipe_core.results import RunInfo

RUNTIME = "quantpipe_core.runtime (torch.distributed gloo)"  # in every run record it writes


@dataclass
class RuntimePlan:
    """A configuration resolved for a run on real links."""

    config: Config
    model: StagedModel
    plan: Plan
    stages: list[StageSpec]
    links: list[LinkSpec]
    source: SourceSpec

    @property
    def cuts(self) -> list[str]:
        return self.plan.cuts

    def run_info(
        self,
        duration_s: float,
        trace_mbps: Sequence[Callable[[float, float], float]] | None = None,
        record: Mapping[str, Any] | None = None,
    ) -> RunInfo:
        """What the summary needs; `trace_mbps` gives each link's mean capacity over a span, where
        the links' rates are known (the emulator's replayed traces), and `record` what the
        caller adds to the run record."""
        return run_info(self.config, self.plan, self.stages, self.links, self.source, duration_s,
                        trace_mbps=trace_mbps, record={"runtime": RUNTIME, **(record or {})})

    def notes(self) -> list[str]:
        """The notes every summary of this config carries (`plan.notes`)."""
        return notes(self.config, self.plan)


def resolve_runtime(config: Config) -> RuntimePlan:
    """Cuts, compute profiles (for ``target_rate = "auto"``), packet sizes and one policy per
    link. ``partition = "auto"`` needs every link's trace in the config (the partitioner plans on
    their mean rates); otherwise no trace is read."""
    plan = resolve(config, traces_needed=False)
    stages, links, source = build_specs(config, plan)
    return RuntimePlan(config, plan.model, plan, stages, links, source)
