"""The offline optimum of the run's utility, for the simulator only: what any policy could reach
had it known the whole trace in advance (as Pensieve's offline-optimal baseline).

`PipelineModel` is the simulator's pipeline (`sim.pipeline`) written as arithmetic: an open
source emitting one microbatch per period, FIFO stages that take compute plus codec time, and
links that carry one packet at a time along the trace's capacity integral. Every time in it is
computed with the same floating-point operations as the SimPy model, so `replay` of a plan gives
the very times, and the very utility, that the simulator reports when it runs the plan.

`solve` is a dynamic programme over microbatches. A state is the time each stage and each link
becomes free after the microbatches so far, plus the last microbatch's bits (for the switching
term); an action is the bits of the next microbatch on every link. Two reductions keep the state
count small while staying exact or safely optimistic:

- a resource's free time below the earliest moment the next microbatch can reach it is raised to
  that moment, which changes nothing that follows (exact);
- with ``grid_s > 0`` free times are rounded *down* to a grid above that moment and states that
  round alike are merged, keeping the best utility. The pipeline is monotone (a resource free
  earlier never delays anything), so the merged programme can only over-estimate: its value is an
  upper bound on every plan's utility, hence on every policy's. Where rounding leaves it unsure
  whether a microbatch reached the sink before the run's end, the bound takes the better case.

The plan the programme follows is then replayed exactly: its utility is reached by the simulator
(`OptimalPolicy` feeds it to each link), and ``bound - value`` says how far from optimal the plan
can be. With ``grid_s = 0`` states are only merged when identical and the programme is exact
(bound == value): affordable on small cases, where tests check it against brute force.

With several links the joint programme does not finish on real traces; `sim.link_relaxation`
bounds them with one relaxed programme of this kind per link.
"""

from __future__ import annotations

import itertools
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from quantpipe_core.plan import LinkSpec, SourceSpec, StageSpec
from quantpipe_core.policy import Observation
from quantpipe_core.utility import Utility

DEFAULT_GRID_S = 0.01  # stages' backlog rounded down to 10 ms; links exact (docs/policies.md)


@dataclass(frozen=True)
class PipelineModel:
    """What the optimum needs of a simulated run, already resolved (`from_specs` builds it)."""

    stages: Sequence[StageSpec]
    links: Sequence[LinkSpec]
    period_s: float  # between two microbatches of the open source
    duration_s: float
    utility: Utility
    actions: tuple[tuple[int, ...], ...]  # bits on every link, one tuple per choice
    values: tuple[float, ...]  # value of each action
    relaxed: bool = False  # times are early (`sim.link_relaxation`): delivery in the better case
    source_times: np.ndarray = field(init=False, repr=False)

    def __post_init__(self) -> None:
        times, t = [], 0.0
        while t < self.duration_s:  # accumulated as SimPy's timeouts accumulate
            times.append(t)
            t = t + self.period_s
        object.__setattr__(self, "source_times", np.array(times))

    @classmethod
    def from_specs(
        cls,
        stages: Sequence[StageSpec],
        links: Sequence[LinkSpec],
        source: SourceSpec,
        duration_s: float,
        utility: Utility,
        bits: Sequence[int],
        value_of: Callable[[Sequence[int]], float],
    ) -> PipelineModel:
        if source.mode != "open":
            raise ValueError("the offline optimum models the open source only (source.mode)")
        if any(link.trace is None for link in links):
            raise ValueError("the offline optimum needs every link's trace")
        actions = tuple(itertools.product(sorted(bits), repeat=len(links)))
        return cls(stages, links, source.period_s, duration_s, utility, actions,
                   tuple(float(value_of(a)) for a in actions))

    @property
    def microbatches(self) -> int:
        return len(self.source_times)

    @property
    def bit_choices(self) -> tuple[int, ...]:
        """Every bitwidth some action uses, smallest first."""
        return tuple(sorted({b for action in self.actions for b in action}))


@dataclass(frozen=True)
class Solution:
    """The optimum: an upper bound on any plan's utility, and a plan with its exact utility."""

    bound: float
    value: float
    plan: list[tuple[int, ...]]  # bits on every link, per microbatch
    grid_s: float
    largest_state_count: int
    seconds: float
    method: str = "joint"  # or "links": the bound of `sim.link_relaxation`
    window: int = 1  # microbatches that share one decision

    def summary(self) -> dict[str, Any]:
        held = {"window": self.window} if self.window > 1 else {}  # as before when per microbatch
        return {
            "method": self.method, "bound": self.bound, "plan_value": self.value,
            "gap": self.bound - self.value, "grid_s": self.grid_s, "microbatches": len(self.plan),
            "largest_state_count": self.largest_state_count, "seconds": self.seconds, **held,
        }


def replay(model: PipelineModel, plan: Sequence[tuple[int, ...]]) -> float:
    """The utility the simulator reports for `plan`: the pipeline's times one microbatch at a
    time, with the simulator's arithmetic."""
    k_links = len(model.links)
    stage_free = [0.0] * (k_links + 1)
    link_free = [0.0] * k_links
    index = {a: i for i, a in enumerate(model.actions)}
    total, previous = 0.0, None
    for n, t_source in enumerate(model.source_times):
        bits = plan[n]
        start = max(t_source, stage_free[0])
        end = start + (model.stages[0].compute_s + 0.0) + _encode(model, 0, bits)
        stage_free[0] = end
        for k, link in enumerate(model.links):
            nbytes = link.packet_bytes[bits[k]]
            begin = max(end, link_free[k])
            send = link.trace.finish_time(begin, nbytes * 8 / link.payload_share) - begin
            arrive = begin + (send + link.latency_s)
            link_free[k] = arrive
            start = max(arrive, stage_free[k + 1])
            work = model.stages[k + 1].compute_s + model.stages[k + 1].decode_s.get(bits[k], 0.0)
            end = start + (work + _encode(model, k + 1, bits))
            stage_free[k + 1] = end
        if end < model.duration_s:
            value = model.values[index[tuple(bits)]]
            total += value - model.utility.lateness(end - t_source)
            total -= model.utility.switching(value, previous)
            previous = value
        else:
            total -= model.utility.lateness(model.duration_s - t_source)
            previous = None
    return total / max(model.microbatches, 1)


def _encode(model: PipelineModel, stage: int, bits: Sequence[int]) -> float:
    """The encode time stage `stage` adds (none on the last stage), in the simulator's order."""
    if stage == len(model.links):
        return 0.0
    return model.stages[stage].encode_s.get(bits[stage], 0.0)


def solve(
    model: PipelineModel,
    grid_s: float = DEFAULT_GRID_S,
    on_progress: Callable[[float], None] | None = None,
    window: int = 1,
) -> Solution:
    """The programme described in the module's docstring; `on_progress` gets the share of
    microbatches done, about every hundredth (a long trace takes minutes). With `window` > 1 a
    plan may change bits only at microbatches 0, `window`, 2 `window`, ...: the optimum of a
    policy that commits each window's bits at its start, as the sender's windows run."""
    if grid_s < 0 or not math.isfinite(grid_s):
        raise ValueError(f"grid_s must be a finite number >= 0, got {grid_s}")
    if window < 1:
        raise ValueError(f"window must be >= 1 microbatch, got {window}")
    began = time.perf_counter()
    n_links, n_actions = len(model.links), len(model.actions)
    values = np.array(model.values)
    u = model.utility
    exact = grid_s == 0 and not model.relaxed
    # per action: stage work, link bits and latency, in the simulator's order of operations
    work = np.empty((n_links + 1, n_actions))
    for k in range(n_links + 1):
        stage = model.stages[k]
        for a, bits in enumerate(model.actions):
            decode = stage.decode_s.get(bits[k - 1], 0.0) if k > 0 else 0.0
            work[k, a] = stage.compute_s + decode + _encode(model, k, bits)
    link_bits = np.array([[link.packet_bytes[bits[k]] * 8 / link.payload_share
                           for bits in model.actions] for k, link in enumerate(model.links)])
    floors = Floors(model, work, link_bits)

    # states: free time of stage 0, link 0, stage 1, ..., stage K; last action; utility so far
    free = np.zeros((1, 2 * n_links + 1))
    last = np.full(1, -1)
    score = np.zeros(1)
    parents: list[np.ndarray] = []
    chosen: list[np.ndarray] = []
    largest = 1
    end_s = model.duration_s
    every = max(model.microbatches // 100, 1)
    for n, t_source in enumerate(model.source_times):
        if on_progress is not None and n % every == 0:
            on_progress(n / model.microbatches)
        count = len(score)
        if n % window == 0:  # a decision: every action from every state
            parent = np.repeat(np.arange(count), n_actions)
            action = np.tile(np.arange(n_actions), count)
        else:  # within a window: the bits it started with
            parent, action = np.arange(count), last
        old = free[parent]
        new = np.empty_like(old)
        start = np.maximum(t_source, old[:, 0])
        end = start + work[0, action]
        new[:, 0] = end
        for k, link in enumerate(model.links):
            begin = np.maximum(end, old[:, 2 * k + 1])
            send = link.trace.finish_times(begin, link_bits[k, action]) - begin
            arrive = begin + (send + link.latency_s)
            new[:, 2 * k + 1] = arrive
            start = np.maximum(arrive, old[:, 2 * k + 2])
            end = start + work[k + 1, action]
            new[:, 2 * k + 2] = end
        value = values[action]
        previous = last[parent]
        switching = np.where(previous >= 0,
                             u.switch_weight * np.abs(value - values[np.maximum(previous, 0)]), 0)
        delivered = value - u.late_weight * np.maximum(end - t_source - u.latency_slo_s, 0)
        delivered -= switching
        missed = -u.lateness(end_s - t_source)
        if exact:
            reward = np.where(end < end_s, delivered, missed)
        else:  # `end` may be early by the rounding: the better of both cases
            reward = np.where(end < end_s, np.maximum(delivered, missed), missed)
        total = score[parent] + reward
        t_next = model.source_times[n + 1] if n + 1 < model.microbatches else None
        locked = (n + 1) % window != 0  # the next microbatch keeps its state's action
        keep, free = _merge(new, action, total, floors, t_next, grid_s, values, u.switch_weight,
                            locked)
        last, score = action[keep], total[keep]
        parents.append(parent[keep].astype(np.int32))
        chosen.append(last.astype(np.int16))
        largest = max(largest, len(score))
    best = int(np.argmax(score)) if len(score) else 0
    bound = float(score[best]) / max(model.microbatches, 1) if len(score) else 0.0
    plan: list[tuple[int, ...]] = []
    for n in range(len(parents) - 1, -1, -1):
        plan.append(model.actions[int(chosen[n][best])])
        best = int(parents[n][best])
    plan.reverse()
    value = replay(model, plan)
    return Solution(bound, value, plan, grid_s, largest, time.perf_counter() - began,
                    window=window)


class Floors:
    """How early the next microbatch can reach each resource, given the free times so far.

    Resources in pipeline order: stage 0, link 0, stage 1, ..., stage K. The next microbatch
    reaches stage 0 at its source time, a link no earlier than the stage before it frees plus
    that stage's least work, and a stage no earlier than the link before it frees plus its
    smallest packet's transfer from then. A free time below its floor can be raised to it
    without changing anything that follows.
    """

    def __init__(self, model: PipelineModel, work: np.ndarray, link_bits: np.ndarray) -> None:
        self.links = model.links
        self.least_work = work.min(axis=1)
        self.least_bits = link_bits.min(axis=1)

    def raise_(
        self, free: np.ndarray, t_next: float, grid_s: float
    ) -> tuple[np.ndarray, np.ndarray]:
        """Free times raised to their floors, and each one's excess over its floor; with a grid,
        excesses rounded down to it (so the free times only move earlier)."""
        raised = np.empty_like(free)
        excess = np.empty_like(free)
        floor = np.full(len(free), t_next)
        for r in range(free.shape[1]):
            raised[:, r] = np.maximum(free[:, r], floor)
            excess[:, r] = raised[:, r] - floor
            if grid_s > 0 and r % 2 == 0:  # stages only: links stay exact
                excess[:, r] = np.floor(excess[:, r] / grid_s) * grid_s
                raised[:, r] = floor + excess[:, r]
            k = r // 2
            if r % 2 == 0 and k < len(self.links):
                floor = raised[:, r] + self.least_work[k]
            elif r % 2 == 1:
                link, at = self.links[k], raised[:, r]
                floor = link.trace.finish_times(at, np.full(len(at), self.least_bits[k]))
                floor = floor + link.latency_s
        return raised, excess


def _merge(
    free: np.ndarray, action: np.ndarray, total: np.ndarray, floors: Floors,
    t_next: float | None, grid_s: float, values: np.ndarray, switch_weight: float,
    locked: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """The candidates worth keeping and their free times.

    Free times are raised to their floors (`Floors`). Candidates with equal last action and free
    times are merged (the best kept), and a candidate is dropped when another one frees every
    resource no later and has more utility, even after paying for the switch between their last
    actions: whatever the dropped one does next, the other can do too, at least as well. While
    the next microbatch is `locked` to its state's action (within a window), only candidates
    with the same last action can stand in for each other.
    """
    if t_next is None:
        return np.arange(len(total)), free
    raised, excess = floors.raise_(free, t_next, grid_s)
    keys = raised.view(np.int64)
    columns = [keys[:, j] for j in range(keys.shape[1] - 1, -1, -1)]
    order = np.lexsort((-total, *columns, action))
    ordered = np.column_stack((action[order], keys[order]))
    first = np.ones(len(order), dtype=bool)
    first[1:] = np.any(ordered[1:] != ordered[:-1], axis=1)
    keep = order[first]
    keep = keep[~_dominated(excess[keep], action[keep], total[keep], values, switch_weight,
                            locked)]
    return keep, raised[keep]


def _dominated(
    excess: np.ndarray, action: np.ndarray, total: np.ndarray, values: np.ndarray,
    switch_weight: float, locked: bool = False,
) -> np.ndarray:
    """Which candidates another one dominates (see `_merge`), found exactly along one resource.

    Floors grow with the free times before them, so a candidate with no larger excess on every
    resource frees every resource no later. Candidates are grouped by their excesses on every
    resource but the one where they differ most; within a group, a running best utility per last
    action, along that resource, tells who is beaten.
    """
    count = len(total)
    dominated = np.zeros(count, dtype=bool)
    if count < 2:
        return dominated
    spread = [len(np.unique(excess[:, r])) for r in range(excess.shape[1])]
    along = int(np.argmax(spread))
    others = np.delete(excess, along, axis=1).view(np.int64)
    columns = [others[:, j] for j in range(others.shape[1])]
    order = np.lexsort((-total, excess[:, along], *columns))
    group = np.zeros(count, dtype=np.int64)
    if columns:
        sorted_others = others[order]
        group[1:] = np.cumsum(np.any(sorted_others[1:] != sorted_others[:-1], axis=1))
    starts = np.flatnonzero(np.r_[True, group[1:] != group[:-1]])
    ends = np.r_[starts[1:], count]
    acts, utils = action[order], total[order]
    value_of = values[acts]
    beaten = np.zeros(count, dtype=bool)
    for a0, a1 in zip(starts, ends, strict=True):
        if a1 - a0 < 2:
            continue
        acts_g, utils_g, value_g = acts[a0:a1], utils[a0:a1], value_of[a0:a1]
        for a in np.unique(acts_g):
            mine = acts_g == a
            best = np.maximum.accumulate(np.where(mine, utils_g, -np.inf))
            before = np.r_[-np.inf, best[:-1]]  # the same action: strictly earlier in order
            cost = np.inf if locked else switch_weight * np.abs(values[a] - value_g)
            beaten[a0:a1] |= np.where(mine, before >= utils_g, best - cost > utils_g)
    dominated[order] = beaten
    return dominated


@dataclass
class OptimalPolicy:
    """Replays one link's column of a solved plan, window after window (simulator only)."""

    bits: list[int]

    def decide(self, obs: Observation) -> list[int]:
        start = obs.window_index * obs.window_len
        window = self.bits[start : start + obs.window_len]
        return window + [window[-1] if window else max(obs.allowed_bits)] * (
            obs.window_len - len(window))
