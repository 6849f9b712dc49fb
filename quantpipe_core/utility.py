"""One utility per run: what policies are compared by, in the simulator, the runtime and the
emulator alike, and what the simulator's offline optimum (`sim.optimal`) maximizes.

Per offered microbatch (every one the source emitted by the run's end), in the spirit of adaptive
video streaming's QoE (Pensieve, Mao et al. 2017; robustMPC, Yin et al. 2015):

    value(bits on every link)                      if it reached the sink, else 0
  - late_weight   * max(0, latency - latency_slo)  latency = sink - source, or age at the end
  - switch_weight * |value - previous value|       when it and the one before it were delivered

A run's utility is the mean over offered microbatches, so runs of different lengths compare.
``value`` is the accuracy profile's expected accuracy for the bits on every link, or, for a model
without one, ``log_value``: log2(bits) / log2(32), averaged over links (Pensieve's log QoE, scaled
so that float32 is worth 1).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

FLOAT32_BITS = 32

ValueOf = Callable[[Sequence[int]], float]


def log_value(bits: Sequence[int]) -> float:
    """Value of the bits on every link without an accuracy profile: log2(bits) / 5, averaged."""
    return sum(math.log2(b) for b in bits) / (len(bits) * math.log2(FLOAT32_BITS))


@dataclass(frozen=True)
class Utility:
    """The utility's parameters (`quantpipe_core.config.UtilityConfig` documents them)."""

    latency_slo_s: float
    late_weight: float = 1.0
    switch_weight: float = 1.0

    def lateness(self, latency_s: float) -> float:
        """Utility lost by one microbatch that took `latency_s` (or is that old, undelivered)."""
        return self.late_weight * max(0.0, latency_s - self.latency_slo_s)

    def switching(self, value: float, previous: float | None) -> float:
        """Utility lost by changing value from the previous delivered microbatch's."""
        return 0.0 if previous is None else self.switch_weight * abs(value - previous)

    def of_run(
        self,
        t_source: Mapping[int, float],
        t_sink: Mapping[int, float],
        bits: Callable[[int], Sequence[int]],
        value_of: ValueOf,
        duration_s: float,
    ) -> dict[str, Any]:
        """The run's utility and its three terms, each a mean per offered microbatch.

        `bits(mb)` gives the bits microbatch `mb` crossed every link with (asked only of
        delivered ones); `value_of` values them.
        """
        offered = sorted(mb for mb, t in t_source.items() if t <= duration_s)
        accuracy = late = switching = 0.0
        late_count = 0
        previous: float | None = None
        for mb in offered:
            arrived = t_sink.get(mb)
            delivered = arrived is not None and arrived <= duration_s
            latency = (arrived if delivered else duration_s) - t_source[mb]
            cost = self.lateness(latency)
            late += cost
            late_count += cost > 0
            if delivered:
                value = value_of(bits(mb))
                accuracy += value
                switching += self.switching(value, previous)
                previous = value
            else:
                previous = None
        count = max(len(offered), 1)
        return {
            "value": (accuracy - late - switching) / count,
            "accuracy": accuracy / count,
            "lateness": late / count,
            "switching": switching / count,
            "late_share": late_count / count,
            "offered_microbatches": len(offered),
            "latency_slo_s": self.latency_slo_s,
            "late_weight": self.late_weight,
            "switch_weight": self.switch_weight,
        }


def auto_latency_slo(compute_path_s: float, window: int, period_s: float) -> float:
    """The default SLO: the compute path plus one policy window of arrivals at the target rate,
    the queueing a policy that reacts once per window cannot avoid."""
    return compute_path_s + window * period_s
