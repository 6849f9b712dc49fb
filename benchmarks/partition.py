"""Partitioner speed on a ViT-Base-like model split over a random edge cluster.

The model: an embedding, then per block the three units QuantPipe's models have (`blockN.attn`,
the attention half; `blockN.gelu`, fc1 + GeLU; `blockN.out`, fc2), then the head; a block takes
about 10 ms on a reference device (attention 40%, fc1 + GeLU 30%, fc2 30%).
A cut after the attention half or fc2 sends the 8 x 197 x 768 hidden state; a cut after fc1 +
GeLU sends the hidden state (for the residual) and the 8 x 197 x 3072 post-GeLU tensor. Devices
are 1x to 4x slower than the reference, hold 256 MB to 1 GB of weights, and are joined by a
random connected graph with 5 to 200 Mbps and 1 to 5 ms latency per link (all seeded).

Prints the median time of `partition` over --repeats runs, the goal (under 5 s), and the plan.

    python benchmarks/partition.py [--blocks 48] [--devices 16] [--bits 4] [--repeats 5]
"""

from __future__ import annotations

import argparse
import itertools
import random
import statistics
import time

import networkx as nx

from quantpipe_core.names import bits_rule, is_bits
from quantpipe_core.partition import Placement, partition, tensor_link_bytes

GOAL_S = 5.0
HIDDEN = (8, 197, 768)
POST_GELU = (8, 197, 3072)
# (unit, share of a block's time, weight bytes, tensors crossing a cut after it)
BLOCK_UNITS = (
    ("attn", 0.4, 4 * 768 * 768 * 4, [HIDDEN]),
    ("gelu", 0.3, 768 * 3072 * 4, [HIDDEN, POST_GELU]),
    ("out", 0.3, 3072 * 768 * 4, [HIDDEN]),
)
EMBED_MS, EMBED_BYTES = 0.5, (768 * 768 + 197 * 768) * 4
HEAD_MS, HEAD_BYTES = 0.05, 768 * 1000 * 4


def model(blocks: int, block_ms: float) -> tuple[list[str], list[float], list[int], list[list]]:
    """Unit names, reference seconds and weight bytes per unit; shapes crossing each cut."""
    names, seconds, weights, shapes = ["embed"], [EMBED_MS / 1e3], [EMBED_BYTES], [[HIDDEN]]
    for block in range(blocks):
        for unit, share, size, crossing in BLOCK_UNITS:
            names.append(f"block{block}.{unit}")
            seconds.append(share * block_ms / 1e3)
            weights.append(size)
            shapes.append(crossing)
    names.append("head")
    seconds.append(HEAD_MS / 1e3)
    weights.append(HEAD_BYTES)
    return names, seconds, weights, shapes


def cluster(devices: int, seed: int, extra_edge_p: float) -> tuple[nx.Graph, dict[str, float]]:
    """A random connected graph (random tree plus extra edges) and each device's slowdown."""
    rng = random.Random(seed)
    names = [f"dev{i:02d}" for i in range(devices)]
    graph = nx.Graph()
    for name in names:
        graph.add_node(name, memory_bytes=rng.randint(256, 1024) * 2**20)

    def link(u: str, v: str) -> None:
        graph.add_edge(u, v, mbps=rng.uniform(5, 200), latency_s=rng.uniform(1e-3, 5e-3))

    order = rng.sample(names, devices)
    for i in range(1, devices):
        link(order[i], rng.choice(order[:i]))
    for u, v in itertools.combinations(names, 2):
        if not graph.has_edge(u, v) and rng.random() < extra_edge_p:
            link(u, v)
    return graph, {name: rng.uniform(1.0, 4.0) for name in names}


def describe(plan: Placement) -> str:
    lines = [
        f"bottleneck {plan.bottleneck_s * 1e3:.2f} ms, {plan.throughput_per_s:.2f} microbatches/s,"
        f" {len(plan.devices)} stages"
    ]
    cut_ids = plan.cut_ids or ()
    for i, (device, units, seconds) in enumerate(
        zip(plan.devices, plan.stages(), plan.stage_s, strict=True)
    ):
        lines.append(
            f"  stage {i}: {device} units {units.start}..{units.stop - 1} ({seconds * 1e3:.2f} ms)"
        )
        if i < len(cut_ids):
            lines.append(f"    link after {cut_ids[i]}: {plan.link_s[i] * 1e3:.2f} ms")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--blocks", type=int, default=48, help="transformer blocks (default 48)")
    parser.add_argument("--devices", type=int, default=16, help="devices (default 16)")
    parser.add_argument("--bits", type=int, default=4, help="bitwidth of every link (default 4)")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs (default 5)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the cluster (default 0)")
    parser.add_argument(
        "--edge-p", type=float, default=0.3, help="chance of each extra edge (default 0.3)"
    )
    args = parser.parse_args()
    if args.blocks < 1 or args.devices < 1 or args.repeats < 1:
        parser.error("--blocks, --devices and --repeats must be at least 1")
    if not is_bits(args.bits, allow_float=True):
        parser.error(f"--bits must be in {bits_rule(allow_float=True)}, got {args.bits}")

    names, reference_s, weights, shapes = model(args.blocks, block_ms=10.0)
    graph, slowdown = cluster(args.devices, args.seed, args.edge_p)
    unit_s = {device: [s * factor for s in reference_s] for device, factor in slowdown.items()}

    def run() -> Placement:
        return partition(
            unit_s,
            tensor_link_bytes(shapes),
            graph,
            args.bits,
            unit_names=names,
            unit_memory=weights,
        )

    times = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        try:
            plan = run()
        except ValueError as err:  # e.g. too few devices to hold the weights
            parser.exit(1, f"no plan: {err}\n")
        times.append(time.perf_counter() - start)
    median = statistics.median(times)
    print(
        f"{len(names)} units ({args.blocks} blocks), {args.devices} devices, "
        f"{graph.number_of_edges()} links, {args.bits}-bit links"
    )
    print(f"partition median {median:.3f} s over {args.repeats} runs")
    verdict = "met" if median < GOAL_S else "MISSED"
    print(f"goal: partition under {GOAL_S:.0f} s: {verdict} ({median:.3f} s)")
    print(describe(plan))


if __name__ == "__main__":
    main()
