"""Which devices, in which order, and where to cut: the pipeline with the highest throughput.

A model is a sequence of `n` units. A stage is a contiguous range of units on one device; between
consecutive stages the activation crosses the link joining their devices. A pipeline runs one
microbatch per bottleneck, the slowest stage or link, so `partition` minimises

    bottleneck = max(slowest stage compute time, slowest link transfer time)

over simple device paths (each device at most once, consecutive devices joined by an edge) and
cut points, then prefers fewer stages, then the least total stage time.

A boundary `p` in 0..n is the point after `p` units: a stage runs units `a..q-1` between
boundaries `a < q`, and a link at boundary `p` carries the cut after unit `p - 1`.

How (every step is exact; only the running time is unbounded):

1. The optimal bottleneck is one of the stage times or link times, so it is found by binary
   search over those candidates with a feasibility test: can a simple path cover the units with
   every stage and link within the bound `T`? Each plan the test finds is re-cut optimally for
   its device sequence (a DP over boundaries), which often lowers the upper end by many
   candidates; near the best plan found, where a failing test is slow, the search tests only the
   candidate just below it, whose failure ends the search.
2. The test is a depth-first search over states (devices used, current device). A state carries
   not one position but the bit set of every boundary where its stage may end: a device may stop
   anywhere its budget allows, and a shorter stage may be the one whose cut fits a slow link, so
   no greedy "go as far as possible" rule is used. A state is explored again only for boundaries
   new to it, and a boundary is dropped when the devices still reachable could not cover the
   remaining units even if each took its longest stage (in units and in work).
3. At the optimal bottleneck, every state is explored one stage count at a time up to the first
   count at which a plan finishes (the fewest stages); a backward pass keeps the boundaries that
   lead to that finish, and a forward pass over them finds the least total stage time.

Pruning only ever drops states that cannot finish, and feasibility is monotone in `T`, so the
result is optimal. Candidates closer than a relative 1e-12 are merged (equal sums rounded
differently), so "optimal" is up to that rounding. The search is exponential in the number of
devices in the worst case (a Hamiltonian path is a special case). `benchmarks/partition.py`, a
ViT-Base-like model of 146 units on 16 devices and about 55 links, takes about 0.3 s with 4-bit
links; where every device is needed and many orders fit (2-bit links, denser graphs, more
devices) the proofs at the optimum take seconds (see the benchmark's options).
"""

from __future__ import annotations

import bisect
import itertools
import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass

import networkx as nx
import numpy as np

from quantpipe_core.names import check_bits
from quantpipe_core.quant import wire_size

LinkBytes = Callable[[int, int], int]
# Within this fraction below the best plan found, a bound that admits no plan takes long to
# prove so, so the search tests the candidate just below that plan, whose failure ends it.
NEAR = 0.15
# Bottleneck candidates closer than this (relative) are one: floating-point rounding of sums.
SAME = 1e-12


@dataclass(frozen=True)
class Placement:
    """A pipeline: stage i runs on `devices[i]`, units `(cuts[i-1], cuts[i]]`."""

    devices: tuple[str, ...]
    cuts: tuple[int, ...]
    stage_s: tuple[float, ...]
    link_s: tuple[float, ...]
    cut_ids: tuple[str, ...] | None
    n_units: int

    @property
    def bottleneck_s(self) -> float:
        """Seconds per microbatch of the slowest stage or link: what limits the pipeline."""
        return max(self.stage_s + self.link_s)

    @property
    def throughput_per_s(self) -> float:
        """Microbatches per second once the pipeline is full."""
        bottleneck = self.bottleneck_s
        return 1.0 / bottleneck if bottleneck > 0 else math.inf

    def stages(self) -> list[range]:
        """The unit indices each stage runs."""
        bounds = (-1, *self.cuts, self.n_units - 1)
        return [range(a + 1, q + 1) for a, q in itertools.pairwise(bounds)]


def tensor_link_bytes(
    shapes: Sequence[Sequence[Sequence[int]]], **codec: object
) -> LinkBytes:
    """`link_bytes` for `partition`: the tensors crossing each cut, sized as the codec sends them.

    `shapes[i]` lists the shapes of the tensors that cross a cut after unit i (a residual stream
    and a hidden activation may cross together). `codec` are `wire_size`'s options.
    """
    frozen = [[tuple(shape) for shape in cut] for cut in shapes]

    def link_bytes(unit: int, bits: int) -> int:
        if not 0 <= unit < len(frozen):
            raise ValueError(f"no tensor shapes for a cut after unit {unit}")
        return sum(wire_size(shape, bits, **codec) for shape in frozen[unit])

    return link_bytes


def partition(
    unit_s: Mapping[str, Sequence[float]],
    link_bytes: LinkBytes,
    graph: nx.Graph,
    bits: int | Mapping[tuple[str, str], int] = 32,
    *,
    unit_names: Sequence[str] | None = None,
    unit_memory: Sequence[int] | None = None,
    source: str | None = None,
    sink: str | None = None,
    max_stages: int | None = None,
) -> Placement:
    """The placement with the smallest bottleneck, then the fewest stages, then least stage time.

    `unit_s[device][i]` is the seconds per microbatch of unit i on that device. `link_bytes(i,
    bits)` is the bytes per microbatch of a cut after unit i. Graph edges carry "mbps" (required)
    and "latency_s" (default 0); nodes may carry "memory_bytes", which bounds the sum of
    `unit_memory` over a stage. A DiGraph edge u -> v lets a stage on v follow one on u. `source`
    and `sink` fix the first and last device. Raises ValueError on bad input or when no
    placement exists.
    """
    problem = _Problem(
        unit_s, link_bytes, graph, bits, unit_names, unit_memory, source, sink, max_stages
    )
    candidates = problem.candidate_bottlenecks()
    anything = _search(problem, candidates[-1], problem.max_stages) if candidates.size else None
    if anything is None:
        raise ValueError(f"no feasible placement: {problem.constraints()} cannot all hold")
    bottleneck, devices = _smallest_bottleneck(problem, candidates, anything)
    return problem.placement(_cheapest(problem, _Budget(problem, bottleneck), len(devices)))


class _Problem:
    """The validated input, as arrays indexed by device number and boundary."""

    def __init__(
        self,
        unit_s: Mapping[str, Sequence[float]],
        link_bytes: LinkBytes,
        graph: nx.Graph,
        bits: int | Mapping[tuple[str, str], int],
        unit_names: Sequence[str] | None,
        unit_memory: Sequence[int] | None,
        source: str | None,
        sink: str | None,
        max_stages: int | None,
    ) -> None:
        self.names = _device_names(unit_s, graph)
        self.index = {name: d for d, name in enumerate(self.names)}
        times = _unit_times(unit_s, self.names)
        self.n = times.shape[1]
        self.unit_names = _unit_names(unit_names, self.n)
        self.has_memory_limits = unit_memory is not None and any(
            graph.nodes[name].get("memory_bytes") is not None for name in self.names
        )
        self.source = self._endpoint(source, "source")
        self.sink = self._endpoint(sink, "sink")
        if source is not None and sink is not None and not nx.has_path(graph, source, sink):
            raise ValueError(f"no path from source {source!r} to sink {sink!r} in the graph")
        self.max_stages = _stage_limit(max_stages, len(self.names))
        self.all_devices = (1 << len(self.names)) - 1
        prefix = np.concatenate([np.zeros((len(self.names), 1)), np.cumsum(times, axis=1)], axis=1)
        # stage_s[d, a, q]: seconds of units a..q-1 on device d, nondecreasing in q
        self.stage_s = prefix[:, None, :] - prefix[:, :, None]
        self.memory_reach = _memory_reach(graph, self.names, unit_memory, self.n)
        boundary = np.arange(self.n + 1)
        fits = (boundary[None, None, :] > boundary[None, :, None]) & (
            boundary[None, None, :] <= self.memory_reach[:, :, None]
        )
        # fitting_stage_s[d, a, q]: stage_s where a < q and the weights fit d, else inf
        self.fitting_stage_s = np.where(fits, self.stage_s, math.inf)
        self.link_s = _link_seconds(graph, self.index, link_bytes, bits, self.n)
        # cost_floor[p]: seconds of units p..n-1 each on its fastest device, the work left
        self.cost_floor = np.concatenate([np.cumsum(times.min(axis=0)[::-1])[::-1], [0.0]])
        self.negative_floor = (-self.cost_floor).tolist()  # nondecreasing, for bisect

    def _endpoint(self, name: str | None, role: str) -> int | None:
        if name is None:
            return None
        if name not in self.index:
            raise ValueError(f"{role} {name!r} is not a device of the graph")
        return self.index[name]

    def candidate_bottlenecks(self) -> np.ndarray:
        """Every stage time and link time, sorted: the optimal bottleneck is one of them."""
        values = np.unique(np.concatenate([self.fitting_stage_s.ravel(), *self.link_s.values()]))
        values = values[np.isfinite(values)]
        # equal sums rounded differently would each cost a search: keep the largest of a cluster
        distinct = np.append(np.diff(values) > SAME * values[1:], True)
        return values[distinct]

    def constraints(self) -> str:
        """The constraints in force, for an error that says which ones may clash."""
        active = ["each device used at most once along the graph's edges"]
        if self.has_memory_limits:
            active.append("the devices' memory_bytes")
        if self.source is not None:
            active.append(f"source {self.names[self.source]!r}")
        if self.sink is not None:
            active.append(f"sink {self.names[self.sink]!r}")
        active.append(f"at most {self.max_stages} stages")
        return ", ".join(active)

    def placement(self, plan: list[tuple[int, int, int]]) -> Placement:
        """The public result of a plan of (device, first boundary, last boundary) per stage."""
        devices = [d for d, _, _ in plan]
        cuts = [q for _, _, q in plan[:-1]]
        links = zip(devices, devices[1:], cuts, strict=False)
        return Placement(
            devices=tuple(self.names[d] for d in devices),
            cuts=tuple(q - 1 for q in cuts),
            stage_s=tuple(float(self.stage_s[d, a, q]) for d, a, q in plan),
            link_s=tuple(float(self.link_s[d, e][p]) for d, e, p in links),
            cut_ids=None
            if self.unit_names is None
            else tuple(self.unit_names[q - 1] for q in cuts),
            n_units=self.n,
        )


def _device_names(unit_s: Mapping[str, Sequence[float]], graph: nx.Graph) -> list[str]:
    if not unit_s or graph.number_of_nodes() == 0:
        raise ValueError("no devices: unit_s and the graph must both name at least one device")
    missing = [name for name in unit_s if name not in graph]
    if missing:
        raise ValueError(f"devices in unit_s but not in the graph: {sorted(missing)}")
    untimed = [name for name in graph.nodes if name not in unit_s]
    if untimed:
        raise ValueError(f"devices in the graph without unit times in unit_s: {sorted(untimed)}")
    return sorted(unit_s)


def _unit_times(unit_s: Mapping[str, Sequence[float]], names: list[str]) -> np.ndarray:
    lengths = {name: len(unit_s[name]) for name in names}
    if len(set(lengths.values())) > 1:
        raise ValueError(f"every device needs one time per unit; lengths differ: {lengths}")
    if not next(iter(lengths.values())):
        raise ValueError("no units: unit_s has empty time lists")
    times = np.array([unit_s[name] for name in names], dtype=float)
    valid = np.isfinite(times) & (times >= 0)
    if not valid.all():
        bad = [name for name, ok in zip(names, valid.all(axis=1), strict=True) if not ok]
        raise ValueError(f"unit times must be finite and non-negative; see devices {bad}")
    return times


def _unit_names(unit_names: Sequence[str] | None, n: int) -> list[str] | None:
    if unit_names is not None and len(unit_names) != n:
        raise ValueError(f"unit_names has {len(unit_names)} names for {n} units")
    return None if unit_names is None else list(unit_names)


def _stage_limit(max_stages: int | None, devices: int) -> int:
    if max_stages is None:
        return devices
    if max_stages < 1:
        raise ValueError(f"max_stages must be at least 1, got {max_stages}")
    return min(max_stages, devices)


def _memory_reach(
    graph: nx.Graph, names: list[str], unit_memory: Sequence[int] | None, n: int
) -> np.ndarray:
    """reach[d, a]: the furthest boundary a stage on d starting at a may end at, for memory."""
    reach = np.full((len(names), n + 1), n)
    if unit_memory is None:
        return reach
    if len(unit_memory) != n or any(m < 0 for m in unit_memory):
        raise ValueError(f"unit_memory needs {n} non-negative byte counts, got {unit_memory!r}")
    limits = [graph.nodes[name].get("memory_bytes") for name in names]
    _check_model_fits(unit_memory, names, limits)
    used = [0, *np.cumsum(unit_memory, dtype=object)]
    for d, limit in enumerate(limits):
        if limit is not None:
            reach[d] = [bisect.bisect_right(used, used[a] + limit) - 1 for a in range(n + 1)]
    return reach


def _check_model_fits(unit_memory: Sequence[int], names: list[str], limits: list) -> None:
    if any(limit is not None and limit < 0 for limit in limits):
        raise ValueError("memory_bytes of a device must be non-negative")
    if any(limit is None for limit in limits):
        return
    largest = max(limits)
    too_big = [i for i, m in enumerate(unit_memory) if m > largest]
    if too_big:
        owner = names[limits.index(largest)]
        raise ValueError(
            f"the model fits no device's memory: unit {too_big[0]} needs "
            f"{unit_memory[too_big[0]]} bytes, the largest device ({owner!r}) has {largest}"
        )
    if sum(unit_memory) > sum(limits):
        raise ValueError(
            f"the model fits no set of devices: its weights take {sum(unit_memory)} bytes, all "
            f"devices together hold {sum(limits)}"
        )


def _link_seconds(
    graph: nx.Graph,
    index: dict[str, int],
    link_bytes: LinkBytes,
    bits: int | Mapping[tuple[str, str], int],
    n: int,
) -> dict[tuple[int, int], np.ndarray]:
    """Seconds per microbatch on each directed device pair, by boundary (inf where no cut is)."""
    edge_bits = _edge_bits(graph, bits)
    sizes: dict[int, np.ndarray] = {}
    seconds = {}
    for u, v, data in _directed_edges(graph):
        mbps, latency = _edge_speed(u, v, data)
        b = edge_bits[u, v]
        if b not in sizes:
            sizes[b] = _cut_bytes(link_bytes, b, n)
        per_boundary = np.full(n + 1, math.inf)
        per_boundary[1:n] = sizes[b] * 8 / (mbps * 1e6) + latency
        seconds[index[u], index[v]] = per_boundary
    return seconds


def _directed_edges(graph: nx.Graph) -> Iterator[tuple[str, str, dict]]:
    """Each allowed (stage on u, then stage on v) pair once, with its edge data."""
    for u, v, data in graph.edges(data=True):
        if u == v:
            continue
        yield u, v, data
        if not graph.is_directed():
            yield v, u, data


def _edge_speed(u: str, v: str, data: dict) -> tuple[float, float]:
    mbps = data.get("mbps")
    if isinstance(mbps, bool) or not isinstance(mbps, int | float) or not mbps > 0:
        raise ValueError(f"edge ({u!r}, {v!r}) needs a positive 'mbps', got {mbps!r}")
    latency = data.get("latency_s", 0.0)
    if not (isinstance(latency, int | float) and 0 <= latency < math.inf):
        raise ValueError(f"edge ({u!r}, {v!r}) has a bad 'latency_s' {latency!r}")
    return float(mbps), float(latency)


def _edge_bits(
    graph: nx.Graph, bits: int | Mapping[tuple[str, str], int]
) -> dict[tuple[str, str], int]:
    """The bitwidth of every directed edge; an undirected edge takes (u, v) or (v, u)."""
    if not isinstance(bits, Mapping):
        width = _valid_bits(bits, "every link")
        return {(u, v): width for u, v, _ in _directed_edges(graph)}
    for pair in bits:
        if not (isinstance(pair, tuple) and len(pair) == 2 and graph.has_edge(*pair)):
            raise ValueError(f"bits given for {pair!r}, which is not an edge of the graph")
    widths = {}
    for u, v, _ in _directed_edges(graph):
        given = {bits[key] for key in ((u, v), (v, u)) if key in bits}
        if graph.is_directed():
            given = {bits[u, v]} if (u, v) in bits else set()
        if len(given) != 1:
            problem = "no bitwidth" if not given else f"conflicting bitwidths {sorted(given)}"
            raise ValueError(f"{problem} for edge ({u!r}, {v!r})")
        widths[u, v] = _valid_bits(given.pop(), f"edge ({u!r}, {v!r})")
    return widths


def _valid_bits(bits: object, where: str) -> int:
    try:
        return check_bits(bits, allow_float=True)
    except ValueError as err:
        raise ValueError(f"bad bits for {where}: {err}") from None


def _cut_bytes(link_bytes: LinkBytes, bits: int, n: int) -> np.ndarray:
    sizes = np.array([link_bytes(i, bits) for i in range(n - 1)], dtype=float)
    if not np.all(np.isfinite(sizes) & (sizes >= 0)):
        raise ValueError(
            f"link_bytes must return non-negative byte counts; at {bits} bits: {sizes}"
        )
    return sizes


class _Budget:
    """What the search needs at one bound T on the bottleneck.

    reach[d][a]: the furthest boundary a stage on d starting at a may end at (a if none).
    longest[d]: the most units d can take in one stage, from anywhere.
    most_work[d]: the most of the remaining-work floor (`cost_floor`) d can take in one stage.
    link_open[d, e]: bit set of the boundaries where the link d -> e may carry the cut.
    neighbours[d]: bit set of the devices d has an open link to; next_devices[d] lists them.
    """

    def __init__(self, problem: _Problem, limit_s: float) -> None:
        boundaries = np.arange(problem.n + 1)
        time_reach = np.count_nonzero(problem.stage_s <= limit_s, axis=2) - 1
        reach = np.minimum(time_reach, problem.memory_reach)
        self.reach = reach.tolist()
        self.longest = (reach - boundaries).max(axis=1).tolist()
        floor = problem.cost_floor
        self.most_work = (floor[None, :] - floor[reach]).max(axis=1).tolist()
        self.link_open = {
            pair: _bit_set(seconds <= limit_s)
            for pair, seconds in problem.link_s.items()
            if seconds.min() <= limit_s
        }
        self.neighbours = [0] * len(problem.names)
        for d, e in self.link_open:
            self.neighbours[d] |= 1 << e
        self.linked = list(self.neighbours)  # open links either way
        for d, e in self.link_open:
            self.linked[e] |= 1 << d
        self.known_parts: dict[int, list[tuple[int, int, float]]] = {}
        # most promising first, so a feasible bound is usually confirmed by the first path tried
        self.next_devices = [
            sorted(_bits(mask), key=lambda e: (-self.longest[e], e)) for mask in self.neighbours
        ]

    def parts(self, devices: int) -> list[tuple[int, int, float]]:
        """The connected parts of the graph of open links among `devices`, direction ignored.

        Each as (bit set, sum of its devices' `longest`, sum of their `most_work`); memoised.
        """
        if devices not in self.known_parts:
            parts, rest = [], devices
            while rest:
                part, frontier = 0, rest & -rest
                while frontier:
                    part |= frontier
                    grown = 0
                    for d in _bits(frontier):
                        grown |= self.linked[d]
                    frontier = grown & rest & ~part
                members = list(_bits(part))
                units = sum(self.longest[d] for d in members)
                parts.append((part, units, sum(self.most_work[d] for d in members)))
                rest &= ~part
            self.known_parts[devices] = parts
        return self.known_parts[devices]


def _bit_set(flags: np.ndarray) -> int:
    return int.from_bytes(np.packbits(flags, bitorder="little").tobytes(), "little")


def _bits(mask: int) -> Iterator[int]:
    while mask:
        low = mask & -mask
        yield low.bit_length() - 1
        mask ^= low


def _ends(starts: int, reach: list[int]) -> int:
    """Bit set of every boundary a stage may end at, given the bit set of where it may start.

    reach is nondecreasing, so the starts up to the furthest end reached so far merge into one
    run of ends that the largest of them extends; each loop step jumps a whole stage.
    """
    ends = 0
    while starts:
        first = (starts & -starts).bit_length() - 1
        last_start, end = first, reach[first]
        while inside := (starts >> (last_start + 1)) & ((1 << (end - last_start)) - 1):
            last_start += inside.bit_length()
            end = reach[last_start]
        if end > first:
            ends |= (1 << (end + 1)) - (1 << (first + 1))
        starts &= ~((1 << (end + 1)) - 1)
    return ends


def _lowest_useful_end(
    problem: _Problem, budget: _Budget, used: int, device: int, stages: int
) -> int:
    """The first boundary from which the devices still reachable could cover the rest.

    A bound, not a promise: "reachable" ignores link direction, and every reachable device (as
    many as there are stages left) takes its longest stage and its most work. `n + 1` when the
    sink cannot be reached at all.
    """
    unused = problem.all_devices & ~used
    reachable, units, work = 0, 0, 0.0
    for part, part_units, part_work in budget.parts(unused):
        if part & budget.neighbours[device]:
            reachable, units, work = reachable | part, units + part_units, work + part_work
    if problem.sink is not None and not reachable >> problem.sink & 1:
        return problem.n + 1
    left = stages - used.bit_count()
    if reachable.bit_count() > left:  # only the most capable of them can still run
        devices = list(_bits(reachable))
        units = sum(sorted((budget.longest[e] for e in devices), reverse=True)[:left])
        work = sum(sorted((budget.most_work[e] for e in devices), reverse=True)[:left])
    # the floor falls along the boundaries; allow for rounding in the sums of work
    by_work = bisect.bisect_left(problem.negative_floor, -work * (1 + 1e-9))
    return max(problem.n - units, by_work)


def _first_devices(problem: _Problem) -> list[int]:
    return list(range(len(problem.names))) if problem.source is None else [problem.source]


State = tuple[int, int]  # (bit set of the devices used, device of the current stage)
Arrival = tuple[float, State | None, int]  # (least total stage time, state before, start)


class _Viable(dict[State, int]):
    """For each state, the bit set of boundaries where its stage may end and the plan still finish.

    The last boundary if the plan may finish on this device; the boundaries from
    `_lowest_useful_end` on if it may go on. Computed on first use.
    """

    def __init__(self, problem: _Problem, budget: _Budget, stages: int) -> None:
        super().__init__()
        self.problem, self.budget, self.stages = problem, budget, stages

    def __missing__(self, state: State) -> int:
        used, device = state
        n, sink = self.problem.n, self.problem.sink
        viable = 1 << n if sink in (None, device) else 0
        if device != sink and used.bit_count() < self.stages:
            lowest = _lowest_useful_end(self.problem, self.budget, used, device, self.stages)
            viable |= (1 << n) - (1 << min(lowest, n))
        self[state] = viable
        return viable


def _finishes(problem: _Problem, state: State, ends: int) -> bool:
    return bool(ends >> problem.n & 1) and problem.sink in (None, state[1])


class _Search:
    """Depth-first search for a plan within a budget and a stage limit.

    `reached[state]` is the bit set of viable boundaries where the state's stage may end, over
    every way to the state seen so far; a state is extended again only for boundaries new to it.
    `found` is the device sequence of the first plan found.
    """

    def __init__(self, problem: _Problem, budget: _Budget, stages: int) -> None:
        self.problem, self.budget = problem, budget
        self.viable = _Viable(problem, budget, stages)
        self.reached: dict[State, int] = {}
        self.found: tuple[int, ...] | None = None

    def run(self) -> tuple[int, ...] | None:
        for d in _first_devices(self.problem):
            if self.found is None:
                self._arrive((1 << d, d), 1, (d,))
        return self.found

    def _arrive(self, state: State, starts: int, path: tuple[int, ...]) -> None:
        used, device = state
        ends = _ends(starts, self.budget.reach[device]) & self.viable[state]
        new_ends = ends & ~self.reached.get(state, 0)
        if not new_ends:
            return
        self.reached[state] = self.reached.get(state, 0) | new_ends
        if _finishes(self.problem, state, new_ends):
            self.found = path
            return
        for e in self.budget.next_devices[device]:
            starts = new_ends & self.budget.link_open[device, e]
            if starts and not used >> e & 1:
                self._arrive((used | 1 << e, e), starts, (*path, e))
                if self.found:
                    return


def _search(problem: _Problem, limit_s: float, stages: int) -> tuple[int, ...] | None:
    """Devices of a plan with at most `stages` stages within `limit_s`, or None if none exists."""
    return _Search(problem, _Budget(problem, limit_s), stages).run()


def _smallest_bottleneck(
    problem: _Problem, candidates: np.ndarray, devices: tuple[int, ...]
) -> tuple[float, tuple[int, ...]]:
    """The smallest candidate bottleneck that admits a plan, and the devices of such a plan.

    Binary search, where a plan found within a bound is re-cut for its devices, which often
    lowers the bound to test next by many candidates. Near the best plan found, a failing search
    is slow, so there it tests only the candidate just below, whose failure ends the search.
    """
    low, high = 0, _index(candidates, _path_bottleneck(problem, devices))
    while low < high:
        mid = (low + high) // 2
        if candidates[mid] > candidates[high] * (1 - NEAR):
            mid = high - 1
        found = _search(problem, candidates[mid], problem.max_stages)
        if found is None:
            low = mid + 1
        else:
            high, devices = _index(candidates, _path_bottleneck(problem, found)), found
    return float(candidates[low]), devices


def _index(candidates: np.ndarray, value: float) -> int:
    """Index of the candidate that stands for `value` (the largest of its cluster)."""
    return int(np.searchsorted(candidates, value * (1 - SAME)))


def _path_bottleneck(problem: _Problem, devices: tuple[int, ...]) -> float:
    """The smallest bottleneck of any cuts for this device sequence (a DP over boundaries)."""
    bottleneck = np.full(problem.n + 1, math.inf)  # of the stages so far, by where they end
    bottleneck[0] = 0.0
    for prev, device in zip((None, *devices), devices, strict=False):
        entry = bottleneck if prev is None else np.maximum(bottleneck, problem.link_s[prev, device])
        bottleneck = np.maximum(entry[:, None], problem.fitting_stage_s[device]).min(axis=0)
    return float(bottleneck[problem.n])


def _cheapest(problem: _Problem, budget: _Budget, stages: int) -> list[tuple[int, int, int]]:
    """The plan with the fewest stages (at most `stages`), then least total stage time.

    Explores every state one stage count at a time up to the first count at which a plan
    finishes, keeps the boundaries from which each state can still reach that finish, then
    carries the least cost to those boundaries forward. Returns (device, first boundary, last
    boundary) per stage.
    """
    layers = _layers(problem, budget, stages)
    useful = _useful_ends(problem, budget, layers)
    stage_s = problem.stage_s.tolist()
    best: dict[State, dict[int, Arrival]] = {}
    for state, ends in useful[0].items():
        best[state] = {q: (stage_s[state[1]][0][q], None, 0) for q in _bits(ends)}
    for layer, later in itertools.pairwise(useful):
        for state in layer:
            _push_costs(state, layer[state], later, best, budget, stage_s)
    last = min(
        (s for s in useful[-1] if _finishes(problem, s, useful[-1][s])),
        key=lambda s: best[s][problem.n][0],
    )
    return _trace_back(last, problem.n, best)


def _layers(problem: _Problem, budget: _Budget, stages: int) -> list[dict[State, int]]:
    """Every state with its viable ends, by stage count, up to the first count that finishes."""
    viable = _Viable(problem, budget, stages)
    layer = {}
    for d in _first_devices(problem):
        ends = _ends(1, budget.reach[d]) & viable[1 << d, d]
        if ends:
            layer[1 << d, d] = ends
    layers = [layer]
    while layer and not any(_finishes(problem, state, ends) for state, ends in layer.items()):
        starts: dict[State, int] = {}
        for (used, device), ends in layer.items():
            for e in budget.next_devices[device]:
                open_starts = ends & budget.link_open[device, e]
                if open_starts and not used >> e & 1:
                    after = (used | 1 << e, e)
                    starts[after] = starts.get(after, 0) | open_starts
        layer = {}
        for state, open_starts in starts.items():
            ends = _ends(open_starts, budget.reach[state[1]]) & viable[state]
            if ends:
                layer[state] = ends
        layers.append(layer)
    return layers


def _useful_ends(
    problem: _Problem, budget: _Budget, layers: list[dict[State, int]]
) -> list[dict[State, int]]:
    """The layers kept to the states and ends from which a plan finishes in the last layer."""
    earliest = [np.searchsorted(r, np.arange(len(r))).tolist() for r in budget.reach]
    last = {
        s: ends & 1 << problem.n for s, ends in layers[-1].items() if _finishes(problem, s, ends)
    }
    useful = [last]
    for layer in layers[-2::-1]:
        # where a stage may start to end at a useful boundary of each later state
        starts = {(used, e): _starts(ends, earliest[e]) for (used, e), ends in useful[0].items()}
        kept = {}
        for (used, device), ends in layer.items():
            finishing = 0
            for e in budget.next_devices[device]:
                later = starts.get((used | 1 << e, e), 0)
                finishing |= ends & budget.link_open[device, e] & later
            if finishing:
                kept[used, device] = finishing
        useful.insert(0, kept)
    return useful


def _starts(ends: int, earliest: list[int]) -> int:
    """Bit set of every boundary a stage may start at to end at one of `ends` (mirrors `_ends`).

    earliest[q] is the first start from which a stage may reach q (q itself if none).
    """
    starts = 0
    while ends:
        last = ends.bit_length() - 1
        first_end, start = last, earliest[last]
        while inside := (ends >> start) & ((1 << (first_end - start)) - 1):
            first_end = start + (inside & -inside).bit_length() - 1
            start = earliest[first_end]
        if start < last:
            starts |= (1 << last) - (1 << start)
        ends &= (1 << start) - 1
    return starts


def _push_costs(
    state: State,
    ends: int,
    later: dict[State, int],
    best: dict[State, dict[int, Arrival]],
    budget: _Budget,
    stage_s: list,
) -> None:
    """Offer the least total stage time at each useful end of `state` to the next states."""
    used, device = state
    for e in budget.next_devices[device]:
        after = (used | 1 << e, e)
        if after not in later or used >> e & 1:
            continue
        reach, times = budget.reach[e], stage_s[e]
        arrivals = best.setdefault(after, {})
        for a in _bits(ends & budget.link_open[device, e]):
            cost = best[state][a][0]
            for end in _bits(later[after] & ((1 << (reach[a] + 1)) - (1 << (a + 1)))):
                total = cost + times[a][end]
                if end not in arrivals or total < arrivals[end][0]:
                    arrivals[end] = (total, state, a)


def _trace_back(
    state: State, end: int, best: dict[State, dict[int, Arrival]]
) -> list[tuple[int, int, int]]:
    """The stages of the cheapest way to `end` in `state`, first stage first."""
    plan = []
    while state is not None:
        _, before, start = best[state][end]
        plan.append((state[1], start, end))
        state, end = before, start
    return plan[::-1]
