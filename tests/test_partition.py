"""The partitioner: the best pipeline (devices, order, cuts) against brute force, and its errors."""

from __future__ import annotations

import itertools
import math
import random
import re
import subprocess
import sys
import time
from pathlib import Path

import networkx as nx
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from quantpipe_core.partition import Placement, partition, tensor_link_bytes
from quantpipe_core.quant import wire_size


def link_seconds(graph, u, v, size):
    edge = graph.edges[u, v]
    return size * 8 / (edge["mbps"] * 1e6) + edge.get("latency_s", 0.0)


def edge_bits(bits, u, v):
    return bits if isinstance(bits, int) else bits.get((u, v), bits.get((v, u)))


def brute_force(
    unit_s, link_bytes, graph, bits=32, unit_memory=None, source=None, sink=None, max_stages=None
):
    """(bottleneck, stages, total stage time) of the best plan over every path and cut, or None."""
    names = sorted(unit_s)
    n = len(unit_s[names[0]])
    best = None
    for k in range(1, min(len(names), max_stages or len(names)) + 1):
        for path in itertools.permutations(names, k):
            if (source or path[0]) != path[0] or (sink or path[-1]) != path[-1]:
                continue
            if not all(graph.has_edge(u, v) for u, v in itertools.pairwise(path)):
                continue
            for cuts in itertools.combinations(range(n - 1), k - 1):
                bounds = (0, *(c + 1 for c in cuts), n)
                spans = list(itertools.pairwise(bounds))
                if unit_memory is not None and any(
                    sum(unit_memory[a:q]) > graph.nodes[d].get("memory_bytes", math.inf)
                    for d, (a, q) in zip(path, spans, strict=True)
                ):
                    continue
                stage = [sum(unit_s[d][a:q]) for d, (a, q) in zip(path, spans, strict=True)]
                links = [
                    link_seconds(graph, u, v, link_bytes(c, edge_bits(bits, u, v)))
                    for (u, v), c in zip(itertools.pairwise(path), cuts, strict=True)
                ]
                key = (max(stage + links), k, sum(stage))
                best = key if best is None or key < best else best
    return best


def check_plan(plan: Placement, unit_s, link_bytes, graph, bits=32, unit_memory=None):
    """The plan is a valid pipeline and its reported times are the times of what it does."""
    n = len(next(iter(unit_s.values())))
    assert len(set(plan.devices)) == len(plan.devices)
    assert all(graph.has_edge(u, v) for u, v in itertools.pairwise(plan.devices))
    assert len(plan.cuts) == len(plan.devices) - 1
    assert list(plan.cuts) == sorted(set(plan.cuts)) and all(0 <= c < n - 1 for c in plan.cuts)
    stages = plan.stages()
    assert [u for r in stages for u in r] == list(range(n))
    assert plan.stage_s == pytest.approx(
        [sum(unit_s[d][u] for u in r) for d, r in zip(plan.devices, stages, strict=True)]
    )
    expected_links = [
        link_seconds(graph, u, v, link_bytes(c, edge_bits(bits, u, v)))
        for (u, v), c in zip(itertools.pairwise(plan.devices), plan.cuts, strict=True)
    ]
    assert plan.link_s == pytest.approx(expected_links)
    assert plan.bottleneck_s == max(plan.stage_s + plan.link_s)
    assert plan.throughput_per_s == (1 / plan.bottleneck_s if plan.bottleneck_s else math.inf)
    if unit_memory is not None:
        for d, r in zip(plan.devices, stages, strict=True):
            assert sum(unit_memory[u] for u in r) <= graph.nodes[d].get("memory_bytes", math.inf)


@st.composite
def instances(draw):
    """Small random problems: 2-4 devices, 3-7 units, times in quarter seconds (sums are exact)."""
    names = [f"d{i}" for i in range(draw(st.integers(2, 4)))]
    n = draw(st.integers(3, 7))
    unit_s = {d: [draw(st.integers(0, 12)) / 4 for _ in range(n)] for d in names}
    graph = nx.DiGraph() if draw(st.booleans()) else nx.Graph()
    graph.add_nodes_from(names)
    for u, v in itertools.permutations(names, 2):
        if draw(st.booleans()):
            graph.add_edge(
                u,
                v,
                mbps=draw(st.sampled_from([1, 2, 4, 8])),
                latency_s=draw(st.sampled_from([0.0, 0.0, 0.25])),
            )
    sizes = [draw(st.integers(0, 8)) * 125_000 for _ in range(n - 1)]
    options = {}
    if draw(st.booleans()):
        options["unit_memory"] = [draw(st.integers(0, 4)) for _ in range(n)]
        for d in names:
            if draw(st.booleans()):
                graph.nodes[d]["memory_bytes"] = draw(st.integers(4, 12))
    for end in ("source", "sink"):
        if draw(st.booleans()):
            options[end] = draw(st.sampled_from(names))
    if draw(st.booleans()):
        options["max_stages"] = draw(st.integers(1, 3))
    if draw(st.booleans()):
        options["bits"] = draw(st.sampled_from([32, 8, 2]))
    else:
        options["bits"] = {(u, v): draw(st.sampled_from([32, 4, 1])) for u, v in graph.edges}
    return unit_s, lambda i, b: sizes[i] * b // 32, graph, options


@settings(max_examples=250, deadline=None)
@given(instances())
def test_the_best_plan_matches_brute_force_over_every_path_and_cut(instance):
    unit_s, link_bytes, graph, options = instance
    expected = brute_force(unit_s, link_bytes, graph, **options)
    if expected is None:
        with pytest.raises(ValueError, match=r"no feasible placement|no path from source|fits no"):
            partition(unit_s, link_bytes, graph, **options)
        return
    plan = partition(unit_s, link_bytes, graph, **options)
    check_plan(plan, unit_s, link_bytes, graph, options["bits"], options.get("unit_memory"))
    assert (plan.bottleneck_s, len(plan.devices)) == expected[:2]
    assert sum(plan.stage_s) == pytest.approx(expected[2])
    assert options.get("source", plan.devices[0]) == plan.devices[0]
    assert options.get("sink", plan.devices[-1]) == plan.devices[-1]


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 2**32 - 1), st.booleans())
def test_fewer_bits_never_lower_throughput(seed, directed):
    rng = random.Random(seed)
    names = [f"d{i}" for i in range(rng.randint(2, 5))]
    n = rng.randint(3, 9)
    unit_s = {d: [rng.uniform(0.001, 0.02) for _ in range(n)] for d in names}
    graph = nx.gnp_random_graph(len(names), 0.7, seed=seed, directed=directed)
    graph = nx.relabel_nodes(graph, dict(enumerate(names)))
    for u, v in graph.edges:
        graph.edges[u, v]["mbps"] = rng.uniform(5, 200)
    shapes = [[(rng.randint(1, 4), rng.randint(16, 64))] for _ in range(n - 1)]
    link_bytes = tensor_link_bytes(shapes)
    ladder = [32, 16, 8, 4, 3, 2, 1]
    assume(
        all(
            link_bytes(i, a) >= link_bytes(i, b)
            for i in range(n - 1)
            for a, b in itertools.pairwise(ladder)
        )
    )
    throughput = [partition(unit_s, link_bytes, graph, bits).throughput_per_s for bits in ladder]
    assert all(a <= b for a, b in itertools.pairwise(throughput))


def two_devices(mbps=100.0, times=(1.0, 1.0), directed=False):
    graph = nx.DiGraph() if directed else nx.Graph()
    graph.add_edge("a", "b", mbps=mbps)
    return {"a": list(times), "b": list(times)}, graph


def test_cuts_split_the_units_and_name_the_cut_points():
    unit_s = {"a": [0.01, 0.01, 0.01, 0.01], "b": [0.01, 0.01, 0.01, 0.01]}
    graph = nx.Graph([("a", "b", {"mbps": 100})])
    plan = partition(unit_s, lambda i, b: 1000, graph, unit_names=["e", "b0", "b1", "h"])
    assert plan.stages() == [range(0, 2), range(2, 4)]
    assert plan.cuts == (1,) and plan.cut_ids == ("b0",)
    assert plan.stage_s == pytest.approx((0.02, 0.02))
    assert plan.link_s == pytest.approx((1000 * 8 / 100e6,))
    assert plan.bottleneck_s == pytest.approx(0.02)


def test_one_device_runs_everything_when_links_are_too_slow():
    unit_s, graph = two_devices(mbps=0.001)
    plan = partition(unit_s, lambda i, b: 10**6, graph)
    assert len(plan.devices) == 1 and plan.cuts == () and plan.link_s == ()
    assert plan.stages() == [range(2)] and plan.bottleneck_s == 2.0


def test_a_tie_goes_to_fewer_stages_then_to_less_total_time():
    graph = nx.Graph([("fast", "slow", {"mbps": 1000})])
    # one stage on "fast" (2 s) ties with the bottleneck of any split: fewer stages win
    plan = partition({"fast": [2.0, 0.0], "slow": [4.0, 0.0]}, lambda i, b: 0, graph)
    assert plan.devices == ("fast",)
    # splits only: both orders reach a 2 s bottleneck, the one with less total time wins
    unit_s = {"fast": [2.0, 1.0], "slow": [2.0, 2.0]}
    plan = partition(unit_s, lambda i, b: 0, graph)
    assert plan.devices == ("slow", "fast") and sum(plan.stage_s) == 3.0


def test_digraph_edges_allow_one_direction_only():
    unit_s, graph = two_devices(directed=True)
    plan = partition(unit_s, lambda i, b: 0, graph)
    assert plan.devices == ("a", "b")
    one_stage = partition(unit_s, lambda i, b: 0, graph, source="b")
    assert one_stage.devices == ("b",)
    with pytest.raises(ValueError, match="no path from source 'b' to sink 'a'"):
        partition(unit_s, lambda i, b: 0, graph, source="b", sink="a")


def test_source_and_sink_hold_even_when_another_plan_is_faster():
    unit_s = {"a": [1.0, 1.0, 1.0], "b": [9.0, 9.0, 9.0], "c": [1.0, 1.0, 1.0]}
    graph = nx.Graph([("a", "b", {"mbps": 1e3}), ("b", "c", {"mbps": 1e3})])
    plan = partition(unit_s, lambda i, b: 0, graph, source="c", sink="b")
    assert plan.devices == ("c", "b") and plan.stages() == [range(2), range(2, 3)]


def test_memory_limits_split_a_model_no_device_holds_alone():
    unit_s, graph = two_devices(times=(1.0, 1.0, 1.0))
    graph.nodes["a"]["memory_bytes"] = graph.nodes["b"]["memory_bytes"] = 20
    plan = partition(unit_s, lambda i, b: 0, graph, unit_memory=[10, 10, 10])
    assert len(plan.devices) == 2 and plan.bottleneck_s == 2.0
    check_plan(plan, unit_s, lambda i, b: 0, graph, unit_memory=[10, 10, 10])


def test_bits_per_edge_take_either_orientation_of_an_undirected_edge():
    unit_s, graph = two_devices(mbps=8e-6)  # 1 byte per second
    plan = partition(unit_s, lambda i, b: b, graph, {("b", "a"): 1})
    assert plan.link_s == (1.0,) and plan.bottleneck_s == 1.0


def test_a_large_model_on_many_devices_is_planned_quickly():
    rng = random.Random(3)
    names = [f"dev{i}" for i in range(12)]
    graph = nx.connected_watts_strogatz_graph(12, 4, 0.3, seed=3)
    graph = nx.relabel_nodes(graph, dict(enumerate(names)))
    for u, v in graph.edges:
        graph.edges[u, v]["mbps"] = rng.uniform(50, 500)
    # 20 blocks of (attention, fc1 + GeLU, fc2) on devices 1x to 4x slower than a reference
    slowdown = {d: rng.uniform(1, 4) for d in names}
    unit_s = {d: [t * slowdown[d] for t in (0.004, 0.003, 0.003) * 20] for d in names}
    hidden, gelu = (8, 197, 768), (8, 197, 3072)
    link_bytes = tensor_link_bytes([[hidden], [hidden, gelu], [hidden]] * 20)
    start = time.perf_counter()
    plan = partition(unit_s, link_bytes, graph, 4)
    assert time.perf_counter() - start < 5
    check_plan(plan, unit_s, link_bytes, graph, 4)
    assert len(plan.devices) > 6
    assert plan.bottleneck_s < min(sum(times) for times in unit_s.values()) / 4


@pytest.mark.parametrize("bits", [*range(1, 17), 32])
@pytest.mark.parametrize("granularity", ["tensor", "token", "auto"])
def test_tensor_link_bytes_are_the_codec_wire_sizes(bits, granularity):
    shapes = [[(8, 197, 768)], [(8, 197, 768), (8, 197, 3072)], [(3, 5)]]
    link_bytes = tensor_link_bytes(shapes, granularity=granularity, outliers=2)
    for i, cut in enumerate(shapes):
        expected = sum(wire_size(shape, bits, granularity=granularity, outliers=2)
                       for shape in cut)
        assert link_bytes(i, bits) == expected
    with pytest.raises(ValueError, match="no tensor shapes for a cut after unit 3"):
        link_bytes(3, bits)


def graph_ab(**edge):
    graph = nx.Graph()
    graph.add_edge("a", "b", **({"mbps": 10} | edge))
    return graph


TIMES = {"a": [1.0, 1.0], "b": [1.0, 1.0]}


def no_bytes(i, b):
    return 0


@pytest.mark.parametrize(
    ("unit_s", "graph", "options", "message"),
    [
        ({}, graph_ab(), {}, "no devices"),
        (TIMES, nx.Graph(), {}, "no devices"),
        (TIMES | {"c": [1.0, 1.0]}, graph_ab(), {}, r"in unit_s but not in the graph: \['c'\]"),
        ({"a": [1.0, 1.0]}, graph_ab(), {}, r"in the graph without unit times .*\['b'\]"),
        ({"a": [1.0, 1.0], "b": [1.0]}, graph_ab(), {}, "lengths differ"),
        ({"a": [], "b": []}, graph_ab(), {}, "no units"),
        ({"a": [1.0, -1.0], "b": [1.0, 1.0]}, graph_ab(), {}, r"non-negative.*\['a'\]"),
        ({"a": [1.0, math.nan], "b": [1.0, 1.0]}, graph_ab(), {}, "finite and non-negative"),
        (TIMES, graph_ab(mbps=0), {}, r"edge \('a', 'b'\) needs a positive 'mbps', got 0"),
        (TIMES, nx.Graph([("a", "b")]), {}, "needs a positive 'mbps', got None"),
        (TIMES, graph_ab(latency_s=-1), {}, "bad 'latency_s'"),
        (TIMES, graph_ab(), {"source": "x"}, "source 'x' is not a device"),
        (TIMES, nx.empty_graph(["a", "b"]), {"source": "a", "sink": "b"}, "no path from source"),
        (TIMES, graph_ab(), {"bits": 17}, "bits must be in 1..16 or 32, got 17"),
        (TIMES, graph_ab(), {"bits": 0}, "bad bits for every link"),
        (TIMES, graph_ab(), {"bits": 4.0}, "bits must be an integer"),
        (TIMES, graph_ab(), {"bits": {("a", "b"): 33}}, r"bad bits for edge \('a', 'b'\)"),
        (TIMES, graph_ab(), {"bits": {}}, r"no bitwidth for edge \('a', 'b'\)"),
        (TIMES, graph_ab(), {"bits": {("a", "c"): 4}}, "not an edge of the graph"),
        (TIMES, graph_ab(), {"bits": {("a", "b"): 4, ("b", "a"): 8}}, "conflicting bitwidths"),
        (TIMES, graph_ab(), {"unit_names": ["x"]}, "1 names for 2 units"),
        (TIMES, graph_ab(), {"unit_memory": [1, -1]}, "non-negative byte counts"),
        (TIMES, graph_ab(), {"max_stages": 0}, "max_stages must be at least 1"),
    ],
)
def test_bad_input_is_refused_with_a_message_that_says_what_is_wrong(
    unit_s, graph, options, message
):
    with pytest.raises(ValueError, match=message):
        partition(unit_s, no_bytes, graph, **options)


def limited(memory_a, memory_b):
    graph = graph_ab()
    graph.nodes["a"]["memory_bytes"], graph.nodes["b"]["memory_bytes"] = memory_a, memory_b
    return graph


def test_a_unit_larger_than_every_device_is_reported_as_not_fitting():
    with pytest.raises(ValueError, match="fits no device's memory: unit 1 needs 50 bytes"):
        partition(TIMES, no_bytes, limited(40, 30), unit_memory=[10, 50])


def test_weights_beyond_all_memory_together_are_reported():
    with pytest.raises(ValueError, match=r"fits no set of devices: .* 80 bytes.* hold 70"):
        partition(TIMES, no_bytes, limited(40, 30), unit_memory=[40, 40])


def test_constraints_that_admit_no_plan_are_reported():
    with pytest.raises(ValueError, match=r"no feasible placement: .*memory_bytes.*at most 1 stage"):
        partition(TIMES, no_bytes, limited(40, 40), unit_memory=[40, 40], max_stages=1)
    line = nx.path_graph(["a", "c", "b"])
    nx.set_edge_attributes(line, 10, "mbps")
    with pytest.raises(ValueError, match="no feasible placement"):
        partition(TIMES | {"c": [1.0, 1.0]}, no_bytes, line, source="a", sink="b")


def test_link_bytes_must_be_byte_counts():
    with pytest.raises(ValueError, match="non-negative byte counts; at 32 bits"):
        partition(TIMES, lambda i, b: -1, graph_ab())


@pytest.mark.slow
def test_the_benchmark_runs_and_reports_its_goal():
    script = Path(__file__).resolve().parent.parent / "benchmarks" / "partition.py"
    args = ["--blocks", "4", "--devices", "5", "--repeats", "1"]
    out = subprocess.run(
        [sys.executable, str(script), *args], capture_output=True, text=True, check=True
    ).stdout
    assert re.search(r"goal: partition under 5 s: met \(\d+\.\d+ s\)", out)
    assert "stage 0: dev" in out
