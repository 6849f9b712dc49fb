"""An upper bound on the offline optimum of a pipeline with several links: one programme per link
(a Lagrangian decomposition), where the joint programme of `sim.optimal` does not finish.

The joint programme branches over every combination of bits on the links and keeps a free time
per stage and link; on the 4-stage ViT-Base pipeline (3 links, 343 joint actions) it does not
finish a minute of trace in ten. The utility per microbatch splits into per-link terms once three
things are relaxed, each only in the optimum's favour:

- value: `split_values` gives each link a value of its own bits, v_k(b_k), with
  sum_k v_k(b_k) >= v(b) for every joint b (exact for the additive rule of the accuracy profiles
  and for `log_value`; a constant slack covers any other rule);
- lateness: a microbatch reaches the sink no earlier than it would if every link but k were free
  (no transfer time; its stages' codec at its cheapest bitwidth), since the pipeline is monotone.
  So its lateness is at least its lateness in link k's relaxed pipeline, for every k, and at
  least any mixture sum_k lam_k late_k with lam on the simplex;
- switching: left out (it only ever lowers the utility).

For every such lam, sum_k OPT_k(lam_k) bounds the joint optimum, where OPT_k is the one-link
optimum (`sim.optimal.solve`) of link k's relaxed pipeline with lateness weight lam_k times the
run's. A relaxed pipeline counts a microbatch delivered in the better case, since its sink times
are early. A free link adds no state, so the programme is about as small as a one-link run's.
`solve_by_links` tries the lam that put all the weight on one link, and the uniform one, and keeps
the least bound. Candidate joint plans (each link's bits from its own programme, one link's bits
on every link, each fixed bitwidth) are replayed exactly (`sim.optimal.replay`): the best is the
plan the simulator runs, and ``bound - value`` says how far from optimal it can be.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import replace

import numpy as np

from quantpipe_core.utility import Utility
from sim.optimal import DEFAULT_GRID_S, PipelineModel, Solution, replay, solve


class FreeLink:
    """A link's capacity in a relaxed pipeline: every transfer takes no time."""

    def finish_time(self, start_s: float, bits: float) -> float:
        return start_s

    def finish_times(self, starts_s: np.ndarray, bits: np.ndarray) -> np.ndarray:
        return np.asarray(starts_s, dtype=float).copy()


def split_values(model: PipelineModel) -> tuple[np.ndarray, float]:
    """Each link's value of each bitwidth, `(links, bitwidths)` in `model.bit_choices` order,
    and the slack that makes their sum bound every joint action's value.

    Link k's value of b is the value with b on link k and the top bitwidth elsewhere, less
    (links - 1) / links of the value with the top bitwidth everywhere.
    """
    choices, n_links = model.bit_choices, len(model.links)
    value = dict(zip(model.actions, model.values, strict=True))
    top = choices[-1]
    at_top = value[(top,) * n_links]
    per_link = np.array([
        [value[tuple(b if j == k else top for j in range(n_links))] for b in choices]
        for k in range(n_links)
    ]) - at_top * (n_links - 1) / n_links
    index = {b: i for i, b in enumerate(choices)}
    slack = max(v - sum(per_link[k, index[b]] for k, b in enumerate(action))
                for action, v in value.items())
    return per_link, max(float(slack), 0.0)


def relaxed_model(model: PipelineModel, k: int, weight: float, values: np.ndarray) -> PipelineModel:
    """Link k's relaxed pipeline: every other link free, its codec at its cheapest; lateness
    weighed by `weight` times the run's; no switching term; `values` per bitwidth of link k."""
    top = model.bit_choices[-1]
    stages = []
    for i, stage in enumerate(model.stages):
        encode = stage.encode_s if i == k else _cheapest(stage.encode_s)
        decode = stage.decode_s if i - 1 == k else _cheapest(stage.decode_s)
        stages.append(replace(stage, encode_s=encode, decode_s=decode))
    links = [link if j == k else replace(link, trace=FreeLink(),
                                         packet_bytes=dict.fromkeys(link.packet_bytes, 0))
             for j, link in enumerate(model.links)]
    actions = tuple(tuple(b if j == k else top for j in range(len(links)))
                    for b in model.bit_choices)
    utility = Utility(model.utility.latency_slo_s, model.utility.late_weight * weight, 0.0)
    return PipelineModel(stages, links, model.period_s, model.duration_s, utility, actions,
                         tuple(float(v) for v in values), relaxed=True)


def _cheapest(seconds: dict[int, float]) -> dict[int, float]:
    least = min(seconds.values(), default=0.0)
    return dict.fromkeys(seconds, least)


def solve_by_links(
    model: PipelineModel,
    grid_s: float = DEFAULT_GRID_S,
    on_progress: Callable[[float], None] | None = None,
    window: int = 1,
) -> Solution:
    """The bound and plan of the module docstring; `on_progress` and `window` as
    `sim.optimal.solve`'s."""
    began = time.perf_counter()
    n_links = len(model.links)
    per_link, slack = split_values(model)
    per_link[0] += slack
    weights = [np.eye(n_links)[k] for k in range(n_links)] + [np.full(n_links, 1 / n_links)]
    solved: dict[tuple[int, float], Solution] = {}
    bounds, largest = [], 1
    for lam in weights:
        total = 0.0
        for k in range(n_links):
            if lam[k] == 0:  # no lateness: at best the link's top value on every microbatch
                total += max(float(per_link[k].max()), 0.0)
                continue
            key = (k, float(lam[k]))
            if key not in solved:
                done = len(solved) / (2 * n_links)  # programmes: k at full and uniform weight
                report = None if on_progress is None else (
                    lambda share, done=done: on_progress(done + share / (2 * n_links)))
                solved[key] = solve(relaxed_model(model, k, lam[k], per_link[k]), grid_s, report,
                                    window)
                largest = max(largest, solved[key].largest_state_count)
            total += solved[key].bound
        bounds.append(total)
    # each link as its uniform-weight programme planned it; or every link as one link's
    # full-weight programme planned its own
    plans = [_joint_plan(model, [(solved[(k, 1 / n_links)], k) for k in range(n_links)])]
    plans += [_joint_plan(model, [(solved[(j, 1.0)], j)] * n_links) for j in range(n_links)]
    plans += [[(b,) * n_links] * model.microbatches for b in model.bit_choices]  # fixed bits
    values = [replay(model, plan) for plan in plans]
    best = int(np.argmax(values))
    return Solution(min(bounds), float(values[best]), plans[best], grid_s, largest,
                    time.perf_counter() - began, method="links", window=window)


def _joint_plan(
    model: PipelineModel, columns: list[tuple[Solution, int]]
) -> list[tuple[int, ...]]:
    """Link k's bits, for every microbatch, from column j of solution s, `columns[k] = (s, j)`."""
    return [tuple(s.plan[n][j] for s, j in columns) for n in range(model.microbatches)]
