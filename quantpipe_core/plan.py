"""From a configuration to what a run needs: the model's cuts, each stage's times, each link's
packet sizes, trace and policy, and the source's rate. The simulator and the real runtime both
resolve a configuration here, so that a run and its simulation are the same pipeline.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.metadata
import platform
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import accumulate, pairwise
from pathlib import Path
from typing import Any, Protocol

import networkx as nx

from quantpipe_core.config import SIM_ONLY_POLICIES, Config
from quantpipe_core.models import StagedModel, load_model
from quantpipe_core.models.carry import carry_wire_size, link_bytes
from quantpipe_core.names import FLOAT_BITS, values_label
from quantpipe_core.partition import partition
from quantpipe_core.policy import Policy, make_policy
from quantpipe_core.profiles import (
    AccuracyProfile,
    ComputeProfile,
    LosslessProfile,
    shipped_accuracy_profile,
    shipped_compute_profile,
    shipped_lossless_profile,
)
from quantpipe_core.results import RunInfo
from quantpipe_core.trace import Trace, load_link_trace
from quantpipe_core.utility import Utility, auto_latency_slo

TARGET_SHARE_OF_COMPUTE_BOUND = 0.9  # a target at 100 % is unreachable under any jitter

class CapacityTrace(Protocol):
    def finish_time(self, start_s: float, bits: float) -> float: ...

    def mean_mbps(self, t0: float, t1: float) -> float: ...


@dataclass(frozen=True)
class StageSpec:
    """One device's work per microbatch: compute, and codec time by bitwidth."""

    compute_s: float
    encode_s: Mapping[int, float] = field(default_factory=dict)  # for the link it sends on
    decode_s: Mapping[int, float] = field(default_factory=dict)  # for the link it receives from


@dataclass
class LinkSpec:
    """One link: its capacity trace (``None`` on a real link), packet sizes, and the sending
    stage's policy.

    With a lossless coder (``coded``) a packet's size depends on the data: ``packet_bytes`` is
    then the lossless profile's mean (the worst case where the model has none) and
    ``worst_packet_bytes`` the exact bound, the size of a packet sent without the coder; without
    one both are the exact size. ``coder_encode_s`` and ``coder_decode_s`` are the seconds the
    coder adds per microbatch to the sending and the receiving stage at each bitwidth (included
    in their `StageSpec` times; empty where no lossless profile measures them): a window its
    policy sends without the coder (`quantpipe_core.policy.Policy`) saves them.
    ``upstream_path_s`` is the part of ``compute_path_s`` before the sending stage starts a
    microbatch (the stages and link latencies ahead of it): what its microbatches took beyond
    it is the delay they gathered upstream (`quantpipe_core.sender.LinkSender`)."""

    trace: CapacityTrace | None
    packet_bytes: Mapping[int, int]  # expected (exact without a lossless coder)
    policy: Policy
    tensor_shape: tuple[int, ...]
    worst_packet_bytes: Mapping[int, int] = field(default_factory=dict)  # empty: packet_bytes
    latency_s: float = 0.0
    accuracy_by_bits: Mapping[int, float | None] | None = None
    payload_share: float = 1.0  # of the trace's rate; protocol headers take the rest
    utility: Utility | None = None  # the run's, for policies that plan with it
    compute_path_s: float = 0.0  # every stage's compute and codec time, and link latencies
    coded: bool = False  # the link's codec names a lossless coder
    coder_encode_s: Mapping[int, float] = field(default_factory=dict)
    coder_decode_s: Mapping[int, float] = field(default_factory=dict)
    upstream_path_s: float = 0.0  # from the source to this link's sending stage, with no queue


@dataclass(frozen=True)
class SourceSpec:
    """Open loop: one microbatch every `period_s`, microbatch m at m periods; closed loop: a new
    one whenever fewer than `max_in_flight` are in the pipeline."""

    target_rate_items_per_s: float
    items_per_microbatch: int
    mode: str = "open"
    max_in_flight: int = 4

    @property
    def period_s(self) -> float:
        """Seconds between two microbatches of the open loop (the target rate's budget)."""
        return self.items_per_microbatch / self.target_rate_items_per_s


@dataclass
class Plan:
    """What a configuration resolves to before the run."""

    model: StagedModel
    profiles: list[ComputeProfile]
    traces: list[Trace]
    trace_paths: list[Path]
    cuts: list[str]
    accuracy: AccuracyProfile | None
    lossless: LosslessProfile | None = None


def resolve(
    config: Config, trace: str | Path | None = None, *, traces_needed: bool = True
) -> Plan:
    """Load the model, profiles and traces; choose the cuts.

    `trace` goes on every link whose config names none. With ``traces_needed=False`` (a real
    run: links have no trace) traces are read only where ``partition = "auto"`` plans on them.
    """
    model = structure(config.model.name)
    profiles = [device_profile(model, config, d.profile, d.speed) for d in config.devices]
    traces, paths = [], []
    if traces_needed or config.model.partition == "auto":
        for k, link in enumerate(config.links):
            path = link.trace or trace
            if not path:
                why = "give one on the command line or in the config"
                if not traces_needed:
                    why = 'model.partition = "auto" plans on each link\'s mean rate; or give cuts'
                raise ValueError(f"links[{k}] has no trace: {why}")
            traces.append(load_link_trace(link, path))
            paths.append(Path(path))
    cuts = choose_cuts(model, config, profiles, traces)
    accuracy = shipped_accuracy_profile(model.name)
    coded = [config.link_codec(k) for k in range(len(cuts)) if has_coder(config.link_codec(k))]
    lossless = shipped_lossless_profile(model.name) if coded else None
    unmeasured = [c for c in coded if lossless is None or not lossless.measures(c)]
    if unmeasured and traces_needed:
        raise ValueError(
            f"a link codes losslessly with {unmeasured[0]} but the lossless profile shipped for "
            f"{model.name!r} does not measure it, so the simulator cannot size its packets: "
            "measure it with `python -m quantpipe_core.lossless_profile --model "
            f"{config.model.name} --codecs {values_label(unmeasured[0])}`, or send bit-planes"
        )
    return Plan(model, profiles, traces, paths, cuts, accuracy, lossless)


def has_coder(label: str) -> bool:
    """Whether a codec label names a lossless coder (``...+zstd``)."""
    return values_label(label) != label


@functools.lru_cache(maxsize=4)
def structure(name: str) -> StagedModel:
    """The model, loaded once per process, so that sweeps over many simulations do not rebuild
    ViT-Base's weights each time."""
    return load_model(name)


def device_profile(model: StagedModel, config: Config, path: str, speed: float) -> ComputeProfile:
    if path:
        profile = ComputeProfile.from_file(path)
    else:
        shipped = shipped_compute_profile(model.name)
        if shipped is None:
            raise ValueError(
                f"no compute profile is shipped for {model.name!r}: measure one with "
                f"`python -m quantpipe_core.profile --model {config.model.name}` and set "
                "devices[].profile to the file"
            )
        profile = shipped
    return profile.scaled(speed)


def choose_cuts(
    model: StagedModel, config: Config, profiles: list[ComputeProfile], traces: list[Trace]
) -> list[str]:
    """The configured cuts; the compute-balanced block outputs; or the partitioner's choice."""
    stages = len(config.devices)
    if stages == 1:
        return []
    if config.model.partition == "auto":
        return auto_cuts(model, config, profiles, traces)
    if config.model.cuts:
        check_cut_order(model, config.model.cuts)
        return list(config.model.cuts)
    return balanced_block_cuts(model, config, profiles[0], stages)


def check_cut_order(model: StagedModel, cuts: Sequence[str]) -> None:
    """Refuse cuts that are unknown, repeated or out of model order: stage k runs the units
    between cut k-1 and cut k, so the simulator must refuse what the runtime cannot split."""
    indices = [model.cut_index(cut) for cut in cuts]
    for (before, after), (i, j) in zip(pairwise(cuts), pairwise(indices), strict=True):
        if j <= i:
            raise ValueError(
                f"model.cuts must be distinct and in model order: {after!r} does not come after "
                f"{before!r} in {model.name}"
            )


def balanced_block_cuts(
    model: StagedModel, config: Config, profile: ComputeProfile, stages: int
) -> list[str]:
    """Block-output cuts that split the first device's compute time most evenly."""
    mb, threads = config.model.microbatch, config.devices[0].threads
    times = [profile.unit_s(u, mb, threads) for u in model.unit_names]
    total = sum(times)
    outs = [i for i, name in enumerate(model.unit_names) if name.endswith(".out")]
    if len(outs) < stages - 1:
        raise ValueError(f"{model.name} has {len(outs)} blocks: too few for {stages} stages")
    cumulative = list(accumulate(times))
    cuts: list[int] = []
    for s in range(1, stages):
        goal = total * s / stages
        later = [i for i in outs if not cuts or i > cuts[-1]]
        candidates = later[: len(later) - (stages - 1 - s)]  # leave a block for every later cut
        cuts.append(min(candidates, key=lambda i: abs(cumulative[i] - goal)))
    return [model.unit_names[i] for i in cuts]


def auto_cuts(
    model: StagedModel, config: Config, profiles: list[ComputeProfile], traces: list[Trace]
) -> list[str]:
    """The partitioner's cuts for the configured device chain, links at their mean rate."""
    mb = config.model.microbatch
    names = [d.name for d in config.devices]
    unit_s = {
        d.name: [p.unit_s(u, mb, d.threads) for u in model.unit_names]
        for d, p in zip(config.devices, profiles, strict=True)
    }
    graph = nx.DiGraph()
    for k, (a, b) in enumerate(pairwise(names)):
        mbps = traces[k].mean_mbps(0.0, traces[k].duration_s) * config.links[k].payload_share
        graph.add_edge(a, b, mbps=mbps, latency_s=config.links[k].latency_s)
    placement = partition(
        unit_s, link_bytes(model, mb, tokens=config.model.tokens,
                           codec=config.quant.codec),
        graph, bits=max(config.quant.allowed_bits), unit_names=model.unit_names,
        source=names[0], sink=names[-1],
    )
    return list(placement.cut_ids or ())


def build_specs(
    config: Config,
    plan: Plan,
    make_policy_for: Callable[[Config, Trace | None], Policy] | None = None,
) -> tuple[list[StageSpec], list[LinkSpec], SourceSpec]:
    """Each stage's times, each link's packets and policy, and the source, for `plan`.

    `make_policy_for(config, trace)` builds a link's policy (default `link_policy`; the
    simulator passes one that also knows the oracle).
    """
    make_policy_for = make_policy_for or link_policy
    model, mb = plan.model, config.model.microbatch
    indices = [model.cut_index(c) for c in plan.cuts]
    bounds = [0, *(i + 1 for i in indices), len(model.unit_names)]
    bits = sorted({*config.quant.allowed_bits, FLOAT_BITS})
    stages = []
    for k, device in enumerate(config.devices):
        units = model.unit_names[bounds[k] : bounds[k + 1]]
        out_cut = plan.cuts[k] if k < len(plan.cuts) else None
        in_cut = plan.cuts[k - 1] if k > 0 else None
        stages.append(StageSpec(
            compute_s=plan.profiles[k].stage_s(units, mb, device.threads),
            encode_s={b: codec_s(config, plan, k, out_cut, k, b, "encode_s")
                      for b in bits} if out_cut else {},
            decode_s={b: codec_s(config, plan, k, in_cut, k - 1, b, "decode_s")
                      for b in bits} if in_cut else {},
        ))
    links = []
    for k, cut in enumerate(plan.cuts):
        specs, codec = model.carry_specs(cut, mb, config.model.tokens), config.link_codec(k)
        worst = {b: carry_wire_size(specs, b, codec) for b in bits}
        coder = lossless_at(plan, codec, 1.0)
        links.append(LinkSpec(
            trace=plan.traces[k] if plan.traces else None,
            packet_bytes={b: round(n * coder.ratio(cut, codec, b)) for b, n in worst.items()}
            if coder else worst,
            worst_packet_bytes=worst,
            policy=make_policy_for(config, plan.traces[k] if plan.traces else None),
            tensor_shape=specs[0].shape,
            latency_s=config.links[k].latency_s,
            payload_share=config.links[k].payload_share,
            accuracy_by_bits=(
                {b: plan.accuracy.value(cut, codec, b) for b in bits}
                if plan.accuracy is not None else None
            ),
            coded=has_coder(codec),
            coder_encode_s=coder_s(config, plan, k, cut, k, bits, "encode_s"),
            coder_decode_s=coder_s(config, plan, k + 1, cut, k, bits, "decode_s"),
        ))
    source = SourceSpec(
        target_rate_items_per_s=target_rate(config, stages),
        items_per_microbatch=mb,
        mode=config.source.mode,
        max_in_flight=config.source.max_in_flight,
    )
    utility, path = run_utility(config, stages, links, source), compute_path(config, stages, links)
    for k, link in enumerate(links):
        link.utility, link.compute_path_s = utility, path
        link.upstream_path_s = compute_path(config, stages[:k], links[:k])
    return stages, links, source


def codec_s(config: Config, plan: Plan, stage: int, cut: str, link: int, bits: int,
            key: str) -> float:
    """Seconds stage `stage` spends per microbatch on the codec's `key` ("encode_s" or
    "decode_s") for link `link` at `cut`: the compute profile's, plus a lossless coder's from
    its profile."""
    device, mb, codec = config.devices[stage], config.model.microbatch, config.link_codec(link)
    seconds = getattr(plan.profiles[stage], key)(cut, codec, bits, mb, device.threads)
    return seconds + coder_s(config, plan, stage, cut, link, [bits], key).get(bits, 0.0)


def coder_s(config: Config, plan: Plan, stage: int, cut: str, link: int, bits: Sequence[int],
            key: str) -> dict[int, float]:
    """Seconds a lossless coder adds per microbatch to stage `stage`'s `key` ("encode_s" or
    "decode_s") for link `link` at `cut`, at each of `bits`; empty where the link sends
    bit-planes or no lossless profile measures its codec."""
    codec = config.link_codec(link)
    coder = lossless_at(plan, codec, config.devices[stage].speed)
    if coder is None:
        return {}
    return {b: getattr(coder, key)(cut, codec, b, config.model.microbatch) for b in bits}


def lossless_at(plan: Plan, codec: str, speed: float) -> LosslessProfile | None:
    """The lossless profile for a link sending with `codec` from a device of `speed`, or
    ``None`` where the link sends bit-planes or no profile measures its codec (a real run: its
    sender learns the sizes from the packets, `quantpipe_core.sender.PacketSizes`)."""
    if not has_coder(codec) or plan.lossless is None or not plan.lossless.measures(codec):
        return None
    return plan.lossless.scaled(speed)


def link_policy(config: Config, trace: Trace | None) -> Policy:
    """The configured policy for one link (a fresh instance per link), outside the simulator."""
    check_real_link_policy(config.policy.name)
    return make_policy(config.policy.name, **dict(config.policy.params))


def check_real_link_policy(name: str) -> None:
    """A `ValueError` for a policy of `SIM_ONLY_POLICIES`: it reads the trace's future, which a
    real link does not have. The one wording of that rule, for every command that refuses it."""
    if name in SIM_ONLY_POLICIES:
        raise ValueError(f"the {name} policy reads the trace's future: it runs in the simulator "
                         "only")


def target_rate(config: Config, stages: Sequence[StageSpec]) -> float:
    """The configured target, or 90 % of the rate the slowest stage's compute allows."""
    if config.source.target_rate != "auto":
        return float(config.source.target_rate)
    top = max(config.quant.allowed_bits)
    slowest = max(
        s.compute_s + s.encode_s.get(top, 0.0) + s.decode_s.get(top, 0.0) for s in stages
    )
    return TARGET_SHARE_OF_COMPUTE_BOUND * config.model.microbatch / slowest


def run_utility(
    config: Config, stages: Sequence[StageSpec], links: Sequence[LinkSpec], source: SourceSpec
) -> Utility:
    """The configured utility, with ``latency_slo_s = "auto"`` worked out for this pipeline."""
    settings = config.utility
    slo = settings.latency_slo_s
    if slo == "auto":
        slo = auto_latency_slo(compute_path(config, stages, links), config.policy.window,
                               source.period_s)
    return Utility(float(slo), settings.late_weight, settings.switch_weight)


def compute_path(config: Config, stages: Sequence[StageSpec], links: Sequence[LinkSpec]) -> float:
    """Seconds a microbatch spends in compute, codec (at the largest allowed bitwidth) and link
    latency from source to sink: its latency on links with no queue and infinite capacity."""
    top = max(config.quant.allowed_bits)
    return sum(
        s.compute_s + s.encode_s.get(top, 0.0) + s.decode_s.get(top, 0.0) for s in stages
    ) + sum(link.latency_s for link in links)


def accuracy_function(plan: Plan, config: Config) -> Callable[[Sequence[int]], float | None] | None:
    if plan.accuracy is None:
        return None
    profile, cuts = plan.accuracy, plan.cuts
    codecs = {cut: config.link_codec(k) for k, cut in enumerate(cuts)}

    def accuracy_of(bits: Sequence[int]) -> float | None:
        return profile.combined(dict(zip(cuts, bits, strict=True)), codecs)

    return accuracy_of


def run_record(config: Config, plan: Plan) -> dict[str, Any]:
    """What makes the run reproducible: config, cuts, versions, traces' sha256, seed."""
    traces = {
        f"link{k}": {"path": str(path), "sha256": hashlib.sha256(path.read_bytes()).hexdigest()}
        for k, path in enumerate(plan.trace_paths)
    }
    versions = {"python": platform.python_version()}
    for package in ("quantpipe", "simpy", "torch", "numpy"):
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            versions[package] = None
    return {
        "config": config.to_dict(),
        "cuts": plan.cuts,
        "versions": versions,
        "traces": traces,
        "seed": config.run.seed,
    }


def run_duration(config: Config, traces: Sequence[Trace]) -> float:
    """``run.duration_s``, or one pass of the longest trace: the simulator's and the emulator's
    run length (0 if neither says)."""
    return config.run.duration_s or max((t.duration_s for t in traces), default=0.0)


def run_info(
    config: Config,
    plan: Plan,
    stages: Sequence[StageSpec],
    links: Sequence[LinkSpec],
    source: SourceSpec,
    duration_s: float,
    *,
    trace_mbps: Sequence[Callable[[float, float], float]] | None = None,
    record: Mapping[str, Any] | None = None,
) -> RunInfo:
    """What the summary needs besides the records, for the simulator, the runtime and the
    emulator alike; `record` is added to the run record (e.g. which runtime ran it)."""
    return RunInfo(
        stages=len(stages),
        items_per_microbatch=config.model.microbatch,
        target_rate_items_per_s=source.target_rate_items_per_s,
        duration_s=duration_s,
        metrics_interval_s=config.run.metrics_interval_s,
        accuracy_of=accuracy_function(plan, config),
        trace_mbps=trace_mbps,
        record={**run_record(config, plan), **(record or {})},
        utility=run_utility(config, stages, links, source),
    )


def notes(config: Config, plan: Plan) -> list[str]:
    """What a reader of the summary must know about how it was computed."""
    said = []
    if plan.accuracy is None:
        said.append(f"{plan.model.name} has no accuracy profile: expected_accuracy is null")
        if config.policy.name == "mpc":
            said.append("mpc has no accuracy to maximize: it maximizes bitwidth within the rate")
    return said
