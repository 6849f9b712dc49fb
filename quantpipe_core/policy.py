"""Bitwidth policies: what a sending stage uses to pick the bits of its next window.

Every sending stage owns one policy instance. At the end of each window of W microbatches it
hands the policy an `Observation` built only from what that stage measured itself, and the policy
returns the bitwidth of each microbatch of the next window. A policy may also have a
``revise(observation)`` method: the stage then offers it, before each later microbatch of the
window, what it measured over the window so far, and the policy may replace the window's
remaining bits (a window is long on a slow pipeline: 8 microbatches of ViT-Base are 9.5 s). On a
link whose codec names a lossless coder, a ``code(observation, bits)`` method turns the coder on
or off for the window just decided (`coding_pays`; without it the coder is always on). The
simulator, the emulator and real devices call policies the same way, so a policy chosen in
simulation runs as it is.

Built in (`make_policy(name, **params)`; ``"module:Class"`` loads a user's class):

- ``fixed``: one bitwidth, always (32 sends float32).
- ``quantpipe``: the paper's rule: the largest bitwidth whose packet, at the bandwidth measured
  over the last window, fits the time budget per microbatch of the target rate.
- ``controller``: integral control of the packet size on the link's measured utilization, with
  a Kalman-filtered estimate of its capacity; splits a window between two neighbouring
  bitwidths so the average packet hits the target.
- ``mpc``: robust model-predictive control: forecasts bandwidth (harmonic mean of recent windows,
  discounted by the largest recent forecast error) and plans a few windows ahead, maximizing the
  accuracy profile's value while keeping the send queue from growing, with a penalty per switch.
- ``planner``: stochastic MPC on the run's own utility (`quantpipe_core.utility`): dynamic
  programming over bitwidth plans on the link's backlog, under several forecast-error scenarios;
  it plans the rest of a window again when the rate measured during it departs from its forecast.
- ``fugu``: the planner with a learned forecast (`LearnedForecast`) as its scenario generator.
- ``bola``: BOLA's buffer-based Lyapunov rule on the sender's backlog alone, no rate forecast.

Policies that know the future trace (``oracle``, ``optimal``) live in the simulator only.
"""

from __future__ import annotations

import importlib
import itertools
import json
import math
import numbers
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from functools import cache
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from quantpipe_core.cli import echo
from quantpipe_core.names import FLOAT_BITS, bits_rule, is_bits
from quantpipe_core.utility import Utility, log_value

TIE = 1e-6  # planner scores closer than this per microbatch are a tie (profiles often have them)
LEARNED_FORECAST = Path(__file__).with_name("forecast.json")  # scripts/train_forecast.py


@dataclass(frozen=True)
class Observation:
    """What a sending stage measured over its last window; nothing from the future.

    ``packet_bytes`` gives the bytes of one microbatch's packet on this link at each allowed
    bitwidth (`quantpipe_core.models.carry.carry_wire_size`): a ``.gelu`` cut also carries the
    residual and text models a padding mask, so ``tensor_shape`` (the main activation) alone does
    not size the packet. They are exact for bit-planes; with a lossless coder they are expected
    sizes (`quantpipe_core.sender.PacketSizes`) and ``worst_packet_bytes`` the exact bound (the
    same as ``packet_bytes`` without a coder, or where a test leaves it empty).
    ``accuracy_by_bits`` is the accuracy profile's value for this cut and
    clipping method at each allowed bitwidth, or ``None`` where the model has no profile.
    ``measured_mbps`` is the last window's delivered rate (bytes sent over the time the link
    spent delivering them), ``None`` before anything was sent; ``history_mbps`` holds the windows
    before it, oldest first. ``queued_microbatches`` waited to be sent when the window ended, and
    ``queued_bytes`` were handed to the link and not delivered yet (the packet in flight too).
    ``utility`` is how the run is scored (`quantpipe_core.utility`), for policies that plan with
    it, and ``compute_path_s`` a microbatch's latency with no queue and infinite links.
    ``coder_s`` is the time a lossless coder adds to one microbatch, encode and decode, at each
    bitwidth (empty without a coder, or where no lossless profile measured it).
    ``upstream_delay_s`` is how much longer than its path without queues the microbatch this
    stage is starting took to get here from the source: the queues and transfers of the links
    before this one (0 on the first link, and where the source runs a closed loop). Its
    latency, and that of the microbatches behind it, is that much longer than this link alone
    makes it (`latency_floor_s`).
    """

    now_s: float
    window_index: int
    window_len: int
    items_per_microbatch: int
    bytes_sent: int
    send_s: float
    measured_mbps: float | None
    history_mbps: tuple[float, ...]
    target_rate_items_per_s: float
    tensor_shape: tuple[int, ...]
    allowed_bits: tuple[int, ...]
    bits_last_window: tuple[int, ...]
    packet_bytes: Mapping[int, int]
    accuracy_by_bits: Mapping[int, float | None] | None = None
    queued_microbatches: int = 0
    queued_bytes: int = 0
    utility: Utility | None = None
    compute_path_s: float = 0.0
    worst_packet_bytes: Mapping[int, int] = field(default_factory=dict)
    coder_s: Mapping[int, float] = field(default_factory=dict)
    upstream_delay_s: float = 0.0

    @property
    def budget_s(self) -> float:
        """Seconds per microbatch the target rate allows."""
        return self.items_per_microbatch / self.target_rate_items_per_s

    @property
    def latency_floor_s(self) -> float:
        """A microbatch's latency if this link had no queue and took no time: the compute path
        and the delay already gathered before this link."""
        return self.compute_path_s + self.upstream_delay_s

    def send_time_s(self, bits: int, mbps: float) -> float:
        """Seconds to send one microbatch's packet at `bits` over `mbps`."""
        return self.packet_bytes[bits] * 8 / (mbps * 1e6)


@runtime_checkable
class Policy(Protocol):
    """``decide`` is required. ``revise(obs) -> list[int] | None`` is optional: before each
    microbatch of a window but its first, once the link delivered something in that window, the
    stage calls it with ``measured_mbps``, ``bytes_sent`` and ``send_s`` over this window's
    deliveries so far (the last window's rate last in ``history_mbps``), ``window_len`` the
    microbatches left in the window and ``bits_last_window`` this window's bits so far; it returns
    the bits of the microbatches left, or ``None`` to keep them. ``code(obs, bits) -> bool`` is
    optional too: on a link with a lossless coder, after each ``decide``, whether the window of
    `bits` goes through the coder (without it, always)."""

    def decide(self, obs: Observation) -> list[int]:
        """The bitwidth of each microbatch of the next window (``obs.window_len`` of them)."""
        ...


def coding_pays(obs: Observation, bits: Sequence[int], mbps: float | None = None) -> bool:
    """Whether coding a window of `bits` saves more time on the link, at `mbps` (default: the
    measured rate), than the coder adds to the two stages (``obs.coder_s``).

    Each microbatch's latency then shrinks, and so does the link's time: the rule holds for a
    link that is the bottleneck and for one that is not. Without a rate or the coder's time it
    codes: the codec still sends bit-planes for any packet that coding would not shorten.
    """
    mbps = obs.measured_mbps if mbps is None else mbps
    if mbps is None or not obs.coder_s:
        return True
    saved = sum(obs.worst_packet_bytes.get(b, obs.packet_bytes[b]) - obs.packet_bytes[b]
                for b in bits) * 8 / (mbps * 1e6)
    return saved > sum(obs.coder_s.get(b, 0.0) for b in bits)


@dataclass
class FixedPolicy:
    """The same bitwidth for every microbatch."""

    bits: int = 8

    def __post_init__(self) -> None:
        if not is_bits(self.bits, allow_float=True):
            raise ValueError(f"fixed bits must be {bits_rule(allow_float=True)}, got {self.bits}")

    def decide(self, obs: Observation) -> list[int]:
        return [self.bits] * obs.window_len


@dataclass
class QuantPipePolicy:
    """The paper's rule: the largest bitwidth whose packet fits the per-microbatch budget.

    ``initial_bits`` is used until the first measurement (default: the largest allowed).
    ``hysteresis`` (default 0, the paper's rule) damps flapping on a noisy measurement: a higher
    bitwidth is taken only when it fits within ``1 - hysteresis`` of the budget; a lower one
    as soon as the current one no longer fits.
    """

    initial_bits: int | None = None
    hysteresis: float = 0.0

    def __post_init__(self) -> None:
        if not 0 <= self.hysteresis < 1:
            raise ValueError(f"hysteresis must be in [0, 1), got {self.hysteresis}")

    def decide(self, obs: Observation) -> list[int]:
        allowed = sorted(obs.allowed_bits)
        if obs.measured_mbps is None:
            return [self.initial_bits or allowed[-1]] * obs.window_len
        cost = {b: obs.send_time_s(b, obs.measured_mbps) for b in allowed}
        current = obs.bits_last_window[-1] if obs.bits_last_window else None
        bits = hold_or_move(cost, obs.budget_s, current, self.hysteresis)
        return [bits] * obs.window_len


def hold_or_move(
    cost: Mapping[int, float], budget: float, current: int | None, hysteresis: float
) -> int:
    """The largest bitwidth whose cost fits `budget`; with hysteresis, `current` is kept while it
    fits and no higher one fits within ``(1 - hysteresis) * budget``."""
    allowed = sorted(cost)
    fitting = [b for b in allowed if cost[b] <= budget]
    bits = fitting[-1] if fitting else allowed[0]
    if hysteresis and current in cost and bits > current:
        roomy = [b for b in allowed if cost[b] <= budget * (1 - hysteresis)]
        bits = max(roomy[-1] if roomy else allowed[0], current)
    return bits


@dataclass
class ScalarKalman:
    """Kalman filter of a slowly drifting positive quantity, noise relative to its size."""

    process: float  # relative standard deviation of the drift per step
    measurement: float  # relative standard deviation of one measurement
    estimate: float | None = None
    variance: float = 0.0

    def update(self, measured: float) -> float:
        if self.estimate is None:
            self.estimate, self.variance = measured, (self.measurement * measured) ** 2
            return measured
        prior = self.variance + (self.process * self.estimate) ** 2
        gain = prior / (prior + (self.measurement * measured) ** 2)
        self.estimate += gain * (measured - self.estimate)
        self.variance = (1 - gain) * prior
        return self.estimate


@dataclass
class ControllerPolicy:
    """Integral control of bytes per microbatch, on a Kalman estimate of link capacity.

    The packet budget is ``capacity_estimate * budget_s * (1 - margin)``. The margin integrates
    the link's utilization error: the share of the last window's time the link spent delivering
    (``send_s`` over the time between decisions) minus ``utilization`` (the set point, below 1
    so that jitter does not build a queue). A busy link raises the margin and smaller packets
    follow; an idle one lowers it, down to 0, so it never winds up. A budget between two allowed
    bitwidths' packets is met, with ``split = True``, on average by sending a share of the
    window at the higher one (a switch every window); by default the window takes the largest
    bitwidth within budget, with ``band`` of hysteresis before going up (`hold_or_move`).
    """

    gain: float = 0.5
    split: bool = False
    band: float = 0.1
    utilization: float = 0.9
    max_margin: float = 0.5
    process_noise: float = 0.2
    measurement_noise: float = 0.1
    capacity: ScalarKalman = field(init=False)
    margin: float = field(default=0.0, init=False)
    last_now_s: float | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        if not 0 < self.utilization <= 1:
            raise ValueError(f"utilization set point must be in (0, 1], got {self.utilization}")
        if not 0 <= self.band < 1:
            raise ValueError(f"band must be in [0, 1), got {self.band}")
        self.capacity = ScalarKalman(self.process_noise, self.measurement_noise)

    def decide(self, obs: Observation) -> list[int]:
        allowed = sorted(obs.allowed_bits)
        elapsed = None if self.last_now_s is None else obs.now_s - self.last_now_s
        self.last_now_s = obs.now_s
        if obs.measured_mbps is None:
            return [allowed[-1]] * obs.window_len
        if elapsed:
            error = obs.send_s / elapsed - self.utilization
            self.margin = min(max(self.margin + self.gain * error, 0.0), self.max_margin)
        mbps = self.capacity.update(obs.measured_mbps)
        budget_bytes = mbps * 1e6 / 8 * obs.budget_s * (1 - self.margin)
        if self.split:
            return split_window(budget_bytes, allowed, obs.packet_bytes, obs.window_len)
        current = obs.bits_last_window[-1] if obs.bits_last_window else None
        size = {b: float(obs.packet_bytes[b]) for b in allowed}
        return [hold_or_move(size, budget_bytes, current, self.band)] * obs.window_len


def split_window(
    budget_bytes: float, allowed: Sequence[int], packet_bytes: Mapping[int, int], count: int
) -> list[int]:
    """`count` bitwidths from two neighbours whose mean packet is at most `budget_bytes`.

    The higher bitwidth's microbatches are spread evenly through the window.
    """
    fitting = [b for b in allowed if packet_bytes[b] <= budget_bytes]
    if not fitting:
        return [allowed[0]] * count
    low = fitting[-1]
    higher = [b for b in allowed if b > low]
    if not higher:
        return [low] * count
    high = higher[0]
    share = (budget_bytes - packet_bytes[low]) / (packet_bytes[high] - packet_bytes[low])
    n_high = math.floor(share * count)
    return [high if (i + 1) * n_high // count > i * n_high // count else low for i in range(count)]


@dataclass
class MpcPolicy:
    """Robust MPC over a short horizon of windows.

    Forecast: the harmonic mean of the last ``history`` measured rates, divided by one plus the
    largest relative forecast error seen over those windows (robust MPC for video bitrate, Yin et
    al. 2015). Plan: every sequence of ``horizon`` window bitwidths with at most one change after
    the first window (|allowed|**2 plans, so a decision stays cheap) is scored by the accuracy it
    delivers, minus ``queue_penalty`` per window's worth of microbatches left queued at each
    step (the send queue evolves with the forecast), minus ``switch_penalty`` per change. Plans
    whose queue grows at any step are taken only when no plan keeps up. The first step
    of the best plan is applied. Without an accuracy profile the value of a bitwidth is its
    rank among the allowed ones: the policy then maximizes bitwidth subject to the rate.
    """

    horizon: int = 3
    history: int = 5
    switch_penalty: float = 0.002
    queue_penalty: float = 1.0
    forecasts: list[tuple[float, float]] = field(default_factory=list, init=False)
    uses_accuracy: bool | None = field(default=None, init=False)

    def decide(self, obs: Observation) -> list[int]:
        allowed = sorted(obs.allowed_bits)
        if obs.measured_mbps is None:
            return [allowed[-1]] * obs.window_len
        forecast = self._forecast(obs)
        value = self._values(obs, allowed)
        current = obs.bits_last_window[-1] if obs.bits_last_window else allowed[-1]
        plans = [(first, *[then] * (self.horizon - 1))
                 for first, then in itertools.product(allowed, repeat=2)]
        best = max(plans, key=lambda plan: self._rank(plan, obs, forecast, value, current))
        return [best[0]] * obs.window_len

    def _forecast(self, obs: Observation) -> float:
        """Robust forecast; also scores the previous forecast against what was measured."""
        assert obs.measured_mbps is not None
        if self.forecasts:
            predicted, _ = self.forecasts[-1]
            self.forecasts[-1] = (predicted, obs.measured_mbps)
        errors = [abs(p - a) / a for p, a in self.forecasts[-self.history :] if a > 0]
        recent = [*obs.history_mbps, obs.measured_mbps][-self.history :]
        harmonic = len(recent) / sum(1 / max(r, 1e-9) for r in recent)
        self.forecasts.append((harmonic, 0.0))
        del self.forecasts[: -self.history - 1]
        return harmonic / (1 + max(errors, default=0.0))

    def _values(self, obs: Observation, allowed: Sequence[int]) -> dict[int, float]:
        profile = obs.accuracy_by_bits
        self.uses_accuracy = profile is not None and all(profile.get(b) is not None
                                                         for b in allowed)
        if self.uses_accuracy:
            return {b: float(profile[b]) for b in allowed}
        return {b: rank / len(allowed) for rank, b in enumerate(allowed, start=1)}

    def _rank(
        self, plan: Sequence[int], obs: Observation, mbps: float, value: Mapping[int, float],
        current: int,
    ) -> tuple[bool, float, float]:
        """Plans whose send queue never grows come first (the rate is a constraint, not a
        cost); among those the best score, among the others the shortest longest queue."""
        window_s = obs.window_len * obs.budget_s  # arrivals of one window at the target rate
        queue = longest = float(obs.queued_microbatches)
        score, previous = 0.0, current
        for bits in plan:
            served = window_s / obs.send_time_s(bits, mbps)
            queue = max(queue + obs.window_len - served, 0.0)
            longest = max(longest, queue)
            score += value[bits] - self.queue_penalty * queue / obs.window_len
            score -= self.switch_penalty * (bits != previous)
            previous = bits
        keeps_up = longest <= obs.queued_microbatches + 1e-9
        return keeps_up, 0.0 if keeps_up else -longest, score


@dataclass
class PlannerPolicy:
    """Plans the next windows with the run's own utility, under the forecast's own errors, and
    applies the first window of the best plan (stochastic MPC).

    Forecast: the harmonic mean of the last ``history`` measured rates. Its errors: the ratios of
    what was measured to what was forecast over the last ``errors`` windows, with the ``prior``
    ratios always among them (a link may halve without warning). Each of ``scenarios`` quantiles
    of those ratios gives a rate.
    Model, per scenario: the bytes handed to the link and not delivered yet become a backlog in
    seconds at that rate; each microbatch of a window arrives one budget after the previous,
    waits for the backlog ahead of it, and adds its own send time; its latency is the compute
    path and the delay gathered on the links before this one (``latency_floor_s``, which the
    plan takes to last) plus that wait and send time: a later link of a slow pipeline then
    does not add bytes to microbatches that are late already. Plan: dynamic programming over
    ``horizon`` windows on a grid of backlogs and the last bitwidth, scoring each window as the
    utility does (`quantpipe_core.utility`: value, lateness past the SLO, switching); the
    bitwidth chosen has the best score averaged over the worst ``risk`` share of scenarios (1:
    all of them), so a plan that is good on the median forecast but costly when the link
    disappoints is avoided.
    A higher bitwidth than the last is taken only if its expected gain is at least ``hold`` of
    its value gain (the rest may go to expected lateness and switching): a noisy rate measurement
    then does not flap the choice on a marginal case; going down is never held.
    Scores within ``TIE`` per microbatch of the best are a tie (accuracy profiles are often
    flat over several bitwidths): the last bitwidth is kept if it is among them, else the
    smallest is taken. Without an accuracy profile bits are valued by the utility's log2 rule;
    without a utility (a bare observation) the SLO is the compute path plus one window, with
    weights 1.
    ``predictor = "learned"`` (or the path of a JSON file that scripts/train_forecast.py
    wrote) replaces the forecast and its error ratios by a `LearnedForecast`: its quantiles of
    the next window's rate are the scenarios, and ``history``, ``errors`` and ``prior`` are unused.
    Within a window (`revise`): when the rate the link delivered so far in it falls below
    ``replan`` of the median scenario the window was planned on, the rest of the window is
    planned again, forecasting from that rate with the same error ratios, and lowered if the new
    plan says so. A window commits its bits for all its microbatches at its start, and on a
    slow pipeline a window lasts long (ViT-Base's 8 microbatches: 9.5 s): large packets
    committed just before a drop would otherwise fill the queue for tens of seconds. Only a
    fall revises: fewer bits can only shorten the queue, while a rise measured over one or two
    packets is too uncertain to bet more bytes on. The threshold keeps small wobbles from
    switching; 0 never revises.
    On a link with a lossless coder the window is coded when the link time it saves at the
    median scenario's rate exceeds the coder's time (`coding_pays`).
    """

    horizon: int = 5
    history: int = 1
    errors: int = 8
    scenarios: int = 5
    grid: int = 32
    prior: tuple[float, ...] = (0.5, 1.0)
    risk: float = 1.0  # share of scenarios, the worst ones, whose mean score decides
    hold: float = 0.5  # share of its value gain a higher bitwidth must keep, after risk
    initial_bits: int | None = None  # before any measurement; default: the smallest allowed
    predictor: str = "harmonic"  # or "learned" (the shipped LearnedForecast), or its JSON's path
    replan: float = 0.8  # within a window, a rate below this share of the plan's replans
    forecast: float | None = field(default=None, init=False)
    planned_mbps: float | None = field(default=None, init=False)  # this window's median scenario
    ratios: list[float] = field(default_factory=list, init=False)
    learned: LearnedForecast | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        if min(self.horizon, self.history, self.errors, self.scenarios) < 1 or self.grid < 2:
            raise ValueError("planner needs horizon, history, errors, scenarios >= 1, grid >= 2")
        if self.hold < 0:
            raise ValueError(f"planner hold must be >= 0, got {self.hold}")
        if not 0 < self.risk <= 1:
            raise ValueError(f"planner risk must be in (0, 1], got {self.risk}")
        if not 0 <= self.replan < 1:
            raise ValueError(f"planner replan must be in [0, 1), got {self.replan}")
        if not self.prior or min(self.prior) <= 0:
            raise ValueError(f"planner prior ratios must be > 0, got {self.prior}")
        if self.predictor != "harmonic":
            path = LEARNED_FORECAST if self.predictor == "learned" else Path(self.predictor)
            self.learned = LearnedForecast.load(path)

    def decide(self, obs: Observation) -> list[int]:
        if obs.measured_mbps is None:
            return [self.initial_bits or min(obs.allowed_bits)] * obs.window_len
        mbps = self._rates(obs, learn=True)  # one per scenario
        self.planned_mbps = float(np.median(mbps))
        return [self._plan(obs, mbps, obs.window_len)] * obs.window_len

    def code(self, obs: Observation, bits: Sequence[int]) -> bool:
        """Code the window when that saves time at the median rate planned on (`coding_pays`)."""
        return coding_pays(obs, bits, self.planned_mbps)

    def revise(self, obs: Observation) -> list[int] | None:
        """Fewer bits for the rest of the window, if the rate measured over it so far fell
        below ``replan`` of the median scenario it was planned on and a new plan says so."""
        if (self.planned_mbps is None or obs.measured_mbps is None
                or obs.measured_mbps >= self.replan * self.planned_mbps):
            return None
        left = obs.window_len
        obs = replace(obs, window_len=len(obs.bits_last_window) + left)  # later windows: whole
        bits = self._plan(obs, self._rates(obs, learn=False), left)
        return [bits] * left if bits < obs.bits_last_window[-1] else None

    def _plan(self, obs: Observation, mbps: np.ndarray, first: int,
              later: Sequence[np.ndarray] | None = None) -> int:
        """The bitwidth of the next `first` microbatches, the scenarios' rates being `mbps`;
        the windows after them are ``obs.window_len`` long, at `later[k]` in the k-th of them
        (one rate per scenario; default: `mbps` throughout)."""
        allowed = sorted(obs.allowed_bits)
        utility = obs.utility or Utility(obs.compute_path_s + obs.window_len * obs.budget_s)
        values = _bit_values(obs, allowed)

        def send_times(rates: np.ndarray) -> np.ndarray:  # [s, b]
            return np.array([[obs.send_time_s(b, r) for b in allowed] for r in rates])

        send = send_times(mbps)
        backlog = obs.queued_bytes * 8 / (mbps * 1e6)  # [s]
        top = max(2 * utility.latency_slo_s, float(backlog.max()), 1e-6)
        grid = np.broadcast_to(np.linspace(0.0, top, self.grid), (len(mbps), self.grid))
        plan = _WindowModel(obs, utility, values)
        switch = utility.switch_weight * np.abs(values[:, None] - values[None, :])  # [b, last]
        future = -utility.late_weight * obs.window_len * np.maximum(
            obs.latency_floor_s + grid - utility.latency_slo_s, 0.0)
        future = np.broadcast_to(future[..., None], (*grid.shape, len(allowed)))  # [s, q, last]
        rates = [mbps] * (self.horizon - 1) if later is None else list(later[: self.horizon - 1])
        model = None  # one window's model, kept while the rate does not change
        for k in reversed(range(len(rates))):  # backlogs in seconds at each window's own rate
            changes = k + 1 < len(rates) and rates[k] is not rates[k + 1]
            if model is None or changes:
                model = plan.step(grid, send if rates[k] is mbps else send_times(rates[k]),
                                  obs.window_len)
            reward, after = model
            if changes:  # the backlog handed on, in seconds at the next window's rate
                after = after * (rates[k] / rates[k + 1])[:, None, None]
            ahead = _interpolate(future, after, top)  # [s, q, b]
            future = np.max((reward + ahead)[..., None] - switch, axis=2)
        now_reward, now_after = plan.step(backlog[:, None], send, first)  # [s, 1, b]
        if rates and rates[0] is not mbps:
            now_after = now_after * (mbps / rates[0])[:, None, None]
        ahead = _interpolate(future, now_after, top)[:, 0, :]
        last = obs.bits_last_window[-1] if obs.bits_last_window else allowed[-1]
        last_value = values[allowed.index(last)] if last in allowed else values[-1]
        by_scenario = np.sort(now_reward[:, 0, :] + ahead, axis=0)  # worst scenario first
        worst = max(1, round(self.risk * len(mbps)))
        score = by_scenario[:worst].mean(axis=0)
        score -= utility.switch_weight * np.abs(values - last_value)
        near_best = [b for b, x in zip(allowed, score, strict=True)
                     if x >= score.max() - TIE * first]
        bits = last if last in near_best else near_best[0]  # ties: hold, else the fewest bytes
        if last in allowed and bits > last:
            up, now = allowed.index(bits), allowed.index(last)
            nominal = (values[up] - values[now]) * first
            if score[up] - score[now] < self.hold * nominal:
                bits = last
        return bits

    def _rates(self, obs: Observation, learn: bool) -> np.ndarray:
        """One forecast rate per scenario: the point forecast times quantiles of past ratios, or
        the learned forecast's quantiles. With `learn`, at a window's start, the last window's
        ratio of measured to forecast joins the errors and the point forecast is kept for the
        next; within a window (`revise`) neither changes."""
        assert obs.measured_mbps is not None
        levels = (np.arange(self.scenarios) + 0.5) / self.scenarios
        recent = [*obs.history_mbps, obs.measured_mbps]
        if self.learned is not None:
            return self.learned.rates(recent, obs.window_len * obs.budget_s, levels)
        kept = recent[-self.history :]
        forecast = len(kept) / sum(1 / max(r, 1e-9) for r in kept)
        if learn:
            if self.forecast is not None:
                self.ratios.append(obs.measured_mbps / self.forecast)
                del self.ratios[: -self.errors]
            self.forecast = forecast
        ratios = [*self.ratios, *self.prior]
        return np.maximum(forecast * np.quantile(ratios, levels), 1e-9)


@dataclass
class FuguPolicy(PlannerPolicy):
    """The planner with a learned forecast, in the spirit of Fugu (Yan et al., *Learning in
    situ*, NSDI 2020): a small model trained on recorded traces predicts the distribution of the
    next window's rate from the last few measured ones, and MPC plans over that distribution. Here
    the model is `LearnedForecast` (linear quantile regression, trained on the training traces
    only); every other parameter is the planner's."""

    predictor: str = "learned"


def forecast_features(recent: Sequence[float], lags: int) -> np.ndarray:
    """What `LearnedForecast` predicts from: 1, the log ratios of the last rate to each of the
    `lags` before it, and the mean absolute log change between consecutive ones (how jumpy the
    link has been). Fewer rates than ``lags + 1`` are padded with the oldest (no change seen)."""
    rates = np.log(np.maximum(np.asarray(recent[-lags - 1 :], dtype=float), 1e-9))
    rates = np.concatenate([np.full(lags + 1 - len(rates), rates[0]), rates])
    changes = np.abs(np.diff(rates)).mean()
    return np.array([1.0, *(rates[-1] - rates[-2::-1]), changes])


@dataclass(frozen=True)
class LearnedForecast:
    """Quantiles of the next window's rate from the last ``lags + 1`` measured ones.

    Per quantile level, a linear model of ``log(next / last)`` on `forecast_features`, fitted by
    quantile regression on the training traces' window means (scripts/train_forecast.py),
    one model per window length in ``windows_s``; the one nearest the run's window (in log
    seconds) is used. Quantiles at other levels are interpolated between the fitted ones (and
    held beyond them), after sorting, so they never cross.
    """

    lags: int
    levels: tuple[float, ...]
    windows_s: tuple[float, ...]
    coef: np.ndarray  # [window, level, feature]

    @classmethod
    def load(cls, path: Path) -> LearnedForecast:
        """The model `scripts/train_forecast.py` wrote to `path` (read once per path)."""
        return _load_forecast(Path(path).resolve())

    def rates(self, recent: Sequence[float], window_s: float, levels: np.ndarray) -> np.ndarray:
        """The next window's rate (Mbit/s) at each of `levels`, from `recent` rates, oldest
        first, measured over windows of `window_s`."""
        nearest = int(np.argmin(np.abs(np.log(np.array(self.windows_s) / window_s))))
        quantiles = np.sort(self.coef[nearest] @ forecast_features(recent, self.lags))
        return max(recent[-1], 1e-9) * np.exp(np.interp(levels, self.levels, quantiles))


@cache
def _load_forecast(path: Path) -> LearnedForecast:
    try:
        data = json.loads(path.read_text())
        model = LearnedForecast(int(data["lags"]), tuple(data["levels"]),
                                tuple(data["windows_s"]), np.array(data["coef"], dtype=float))
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise ValueError(f"learned forecast {path}: {error}") from None
    expected = (len(model.windows_s), len(model.levels), model.lags + 2)
    if model.coef.shape != expected:
        raise ValueError(f"learned forecast {path}: coef has shape {model.coef.shape}, "
                         f"expected {expected}")
    return model


@dataclass
class BolaPolicy:
    """BOLA's rule (Spiteri et al., *BOLA: near-optimal bitrate adaptation for online videos*,
    INFOCOM 2016) on the sender's backlog alone: no rate measurement or forecast.

    BOLA picks the bitrate maximizing ``(V (v + gamma) - Q) / S`` (v: its utility, S: its size)
    from the playback buffer Q, a Lyapunov drift-plus-penalty rule. A sending stage's buffer is
    its slack: the microbatch slots (``budget_s`` each) the latency SLO leaves after the compute
    path, minus its backlog, the microbatches handed to the link and not delivered
    (``queued_bytes`` over the last window's mean packet, at least ``queued_microbatches``). An
    empty send queue is a full buffer and gets many bits; a long one gets few. v is a
    bitwidth's value (accuracy profile, else the utility's log2 rule) above the smallest's, S its
    packet. V and gamma follow from two backlogs, as dash.js's BOLA sets them from its buffer
    thresholds: the largest bitwidth is taken at a backlog below ``highest_up_to`` microbatches
    (default 1: the packet in flight, a link that keeps up), the smallest above
    ``lowest_from`` (default half the slack: a decision holds a whole window, so the
    fewest bits must come while half the slack is left); in between, the rule's own curve.
    Before the first measurement nothing is queued, yet nothing is known of the link either, so
    it starts at ``initial_bits`` (default the smallest), as the planner does.
    """

    highest_up_to: float = 1.0
    lowest_from: float | None = None
    initial_bits: int | None = None

    def __post_init__(self) -> None:
        if self.highest_up_to < 0:
            raise ValueError(f"bola highest_up_to must be >= 0, got {self.highest_up_to}")
        if self.lowest_from is not None and self.lowest_from <= self.highest_up_to:
            raise ValueError(f"bola lowest_from ({self.lowest_from}) must be above "
                             f"highest_up_to ({self.highest_up_to})")

    def decide(self, obs: Observation) -> list[int]:
        allowed = sorted(obs.allowed_bits)
        if obs.measured_mbps is None or len(allowed) == 1:
            return [self.initial_bits or allowed[0]] * obs.window_len
        utility = obs.utility or Utility(obs.compute_path_s + obs.window_len * obs.budget_s)
        slack = max((utility.latency_slo_s - obs.compute_path_s) / obs.budget_s, 2.0)
        last = obs.bits_last_window or (allowed[0],)
        packet = np.mean([obs.packet_bytes[b] for b in last])
        backlog = max(obs.queued_bytes / packet, float(obs.queued_microbatches))
        lowest_from = self.lowest_from or max(slack / 2, self.highest_up_to + 1)
        values = _bit_values(obs, allowed)
        value = values - values[0]
        size = np.array([float(obs.packet_bytes[b]) for b in allowed])
        v_weight, gamma = _bola_weights(value, size, slack - lowest_from,
                                        slack - self.highest_up_to)
        score = (v_weight * (value + gamma) - (slack - backlog)) / size
        return [allowed[int(np.argmax(score))]] * obs.window_len


def _bola_weights(value: np.ndarray, size: np.ndarray, low: float, high: float
                  ) -> tuple[float, float]:
    """BOLA's V and gamma such that the smallest of the bitwidths (`value`, `size` ascending) is
    chosen at a buffer below `low` and the largest above `high`.

    The largest beats bitwidth i from a buffer of ``V (a_i + gamma)`` on, a_i being where the
    chord from i to the largest in (size, value) meets size 0; the smallest beats j up to
    ``V (a_j + gamma)`` with the chord from the smallest to j. So the lowest of the latter
    intercepts is put at `low`, the highest of the former at `high`."""
    def intercept(i: int, j: int) -> float:
        return (size[j] * value[i] - size[i] * value[j]) / (size[j] - size[i])

    top = len(size) - 1
    a_low = min(intercept(0, j) for j in range(1, top + 1))
    a_high = max(intercept(i, top) for i in range(top))
    v_weight = (high - low) / max(a_high - a_low, 1e-12)
    return v_weight, low / v_weight - a_low


def _bit_values(obs: Observation, allowed: Sequence[int]) -> np.ndarray:
    profile = obs.accuracy_by_bits
    if profile is not None and all(profile.get(b) is not None for b in allowed):
        return np.array([float(profile[b]) for b in allowed])
    return np.array([log_value([b]) for b in allowed])


@dataclass(frozen=True)
class _WindowModel:
    """One window of the planner's model: its utility (without the switch) and the backlog it
    leaves, from each backlog (seconds) at each bitwidth, per scenario."""

    obs: Observation
    utility: Utility
    values: np.ndarray

    def step(self, backlog: np.ndarray, send: np.ndarray, count: int
             ) -> tuple[np.ndarray, np.ndarray]:
        """`backlog` [scenario, q] and `send` [scenario, bitwidth] -> [scenario, q, bitwidth],
        for a window of `count` microbatches."""
        obs, utility = self.obs, self.utility
        q = np.repeat(backlog[:, :, None], send.shape[1], axis=2)
        per_send = send[:, None, :]
        late = np.zeros_like(q)
        for _ in range(count):
            late += np.maximum(obs.latency_floor_s + q + per_send - utility.latency_slo_s, 0.0)
            q = np.maximum(q + per_send - obs.budget_s, 0.0)
        return count * self.values - utility.late_weight * late, q


def _interpolate(table: np.ndarray, at: np.ndarray, top: float) -> np.ndarray:
    """``table[s, :, b]`` (values on a uniform grid of backlogs from 0 to `top`) at backlogs
    ``at[s, q, b]``, linearly; beyond the grid, extended along its last slope."""
    points = table.shape[1]
    position = at / top * (points - 1)
    low = np.clip(np.floor(position).astype(int), 0, points - 2)
    weight = position - low
    s = np.arange(table.shape[0])[:, None, None]
    b = np.arange(table.shape[2])[None, None, :]
    return table[s, low, b] * (1 - weight) + table[s, low + 1, b] * weight


BUILT_IN: dict[str, type] = {
    "fixed": FixedPolicy,
    "quantpipe": QuantPipePolicy,
    "controller": ControllerPolicy,
    "mpc": MpcPolicy,
    "planner": PlannerPolicy,
    "fugu": FuguPolicy,
    "bola": BolaPolicy,
}


def make_policy(name: str, **params: Any) -> Policy:
    """A policy by built-in name, or a user's class as ``"module:Class"``, built with `params`.

    ``"fixed:4"`` is short for ``make_policy("fixed", bits=4)``.
    """
    if name.startswith("fixed:"):
        try:
            params = {**params, "bits": int(name.split(":", 1)[1])}
        except ValueError:
            raise ValueError(f"policy {name!r}: 'fixed:' takes a bitwidth, e.g. fixed:4") from None
        name = "fixed"
    if name in BUILT_IN:
        cls = BUILT_IN[name]
    elif ":" in name:
        cls = _user_class(name)
    else:
        raise ValueError(
            f"unknown policy {name!r}; choose one of {', '.join(BUILT_IN)} or 'module:Class'"
        )
    try:
        policy = cls(**params)
    except TypeError as error:
        raise ValueError(f"policy {name!r}: bad parameters {params}: {error}") from None
    if not isinstance(policy, Policy):
        raise ValueError(f"policy {name!r} has no decide(observation) method")
    return policy


def _user_class(spec: str) -> type:
    module_name, _, class_name = spec.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        raise ValueError(f"policy {spec!r}: cannot import {module_name}: {error}") from None
    try:
        return getattr(module, class_name)
    except AttributeError:
        raise ValueError(f"policy {spec!r}: {module_name} has no {class_name}") from None


def check_decision(bits: Any, obs: Observation) -> list[int]:
    """A policy's answer as a list of plain ints, refused clearly if it is not one int per
    microbatch among the allowed bits: the simulator and the runtime both check here, so a policy
    that one refuses the other refuses too. Integers of any kind (numpy's too) become ``int``;
    floats (``8.0``) and booleans (``True``) are refused, not taken for the bitwidth they equal."""
    try:
        answer = list(bits)
    except TypeError:
        raise ValueError(
            f"policy returned {echo(bits)}, not a list of {obs.window_len} bitwidths"
        ) from None
    if len(answer) != obs.window_len:
        raise ValueError(
            f"policy returned {len(answer)} bitwidths for a window of {obs.window_len}"
        )
    if bad := [b for b in answer if isinstance(b, bool) or not isinstance(b, numbers.Integral)]:
        raise ValueError(
            f"policy returned {echo(bad[0])} ({type(bad[0]).__name__}): a bitwidth must be "
            f"an int, one of {sorted(obs.allowed_bits)}"
        )
    answer = [int(b) for b in answer]
    allowed = {*obs.allowed_bits, FLOAT_BITS}
    if bad := sorted({b for b in answer if b not in allowed}):
        raise ValueError(f"policy chose bitwidths {bad}, allowed are {sorted(obs.allowed_bits)}")
    return answer
