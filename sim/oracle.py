"""The oracle: a policy that knows the future trace. Simulator only, an upper bound."""

from __future__ import annotations

from dataclasses import dataclass, field

from quantpipe_core.plan import CapacityTrace
from quantpipe_core.policy import Observation


@dataclass
class OraclePolicy:
    """The largest bitwidth whose whole next window would cross the link, starting now, within
    the window's time at the target rate, judged on the capacity the trace will really have."""

    trace: CapacityTrace | None = field(default=None, repr=False)

    def decide(self, obs: Observation) -> list[int]:
        if self.trace is None:
            raise ValueError("the oracle policy needs the link's trace: it runs in sim only")
        allowed = sorted(obs.allowed_bits)
        deadline = obs.now_s + obs.window_len * obs.budget_s
        for bits in reversed(allowed):
            window_bits = obs.packet_bytes[bits] * 8 * obs.window_len
            if self.trace.finish_time(obs.now_s, window_bits) <= deadline:
                return [bits] * obs.window_len
        return [allowed[0]] * obs.window_len
