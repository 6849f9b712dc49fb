"""From a configuration to what every rank needs: the model's stages, the cuts, packet sizes,
policies and the target rate, resolved by `quantpipe_core.plan` exactly as for the simulator
(only the links' traces are absent: a real link has no trace)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from quantpipe_core.config import Config
from quantpipe_core.models import StagedModel
from quantpipe_core.plan import (
    LinkSpec,
    Plan,
    SourceSpec,
    StageSpec,
    accuracy_function,
    build_specs,
    resolve,
    run_record,
    run_utility,
)
from quantpipe_core.results import RunInfo


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
        self, duration_s: float, trace_mbps: Sequence[Callable[[float, float], float]] | None = None
    ) -> RunInfo:
        """What the summary needs; `trace_mbps` gives each link's mean capacity over a span, where
        the links' rates are known (the emulator's replayed traces)."""
        return RunInfo(
            stages=len(self.stages),
            items_per_microbatch=self.config.model.microbatch,
            target_rate_items_per_s=self.source.target_rate_items_per_s,
            duration_s=duration_s,
            metrics_interval_s=self.config.run.metrics_interval_s,
            accuracy_of=accuracy_function(self.plan, self.config),
            trace_mbps=trace_mbps,
            record=self.record(),
            utility=run_utility(self.config, self.stages, self.links, self.source),
        )

    def record(self) -> dict[str, Any]:
        record = run_record(self.config, self.plan)
        record["runtime"] = "quantpipe_core.runtime (torch.distributed gloo)"
        return record


def resolve_runtime(config: Config) -> RuntimePlan:
    """Cuts, compute profiles (for ``target_rate = "auto"``), packet sizes and one policy per
    link. ``partition = "auto"`` needs every link's trace in the config (the partitioner plans on
    their mean rates); otherwise no trace is read."""
    plan = resolve(config, traces_needed=False)
    stages, links, source = build_specs(config, plan)
    return RuntimePlan(config, plan.model, plan, stages, links, source)
