"""Seeded synthetic bandwidth traces: test shapes for policies, and look-alikes of real traces.

Every generator samples its rate once per ``step_s`` (and at its own events, such as the moment of
a drop), rounds rates to 1 kbit/s so that written files are short and identical on every machine,
and returns a `Trace` with the default floor (outages become 0.01 Mbit/s). The same arguments and
seed always give the same trace.
"""

from __future__ import annotations

import math

import numpy as np
from scipy.signal import lfilter
from scipy.special import ndtr, ndtri

from quantpipe_core.trace import Trace, check_size

RATE_DECIMALS = 3  # 1 kbit/s


def step_drop(
    *,
    high_mbps: float = 40.0,
    low_mbps: float = 8.0,
    at_s: float = 30.0,
    duration_s: float = 60.0,
    step_s: float = 1.0,
    noise: float = 0.0,
    seed: int = 0,
) -> Trace:
    """``high_mbps`` until ``at_s``, then ``low_mbps``: how fast does a policy react to a drop?"""
    _check_timing(duration_s, step_s)
    _check_rates(high=high_mbps, low=low_mbps)
    if not 0 < at_s < duration_s:
        raise ValueError(f"the drop must be inside the trace: 0 < at_s < {duration_s}, got {at_s}")
    starts = _grid(duration_s, step_s, [at_s])
    rates = np.where(starts < round(at_s, 9), high_mbps, low_mbps)
    return _trace(starts, rates, duration_s, noise, seed)


def ramp(
    *,
    high_mbps: float = 40.0,
    low_mbps: float = 4.0,
    duration_s: float = 120.0,
    step_s: float = 1.0,
    noise: float = 0.0,
    seed: int = 0,
) -> Trace:
    """A slow linear slide from ``high_mbps`` down to ``low_mbps`` at mid-trace, and back up.

    Each step carries the ramp's value at the step's middle, so its mean is the ramp's mean.
    """
    _check_timing(duration_s, step_s)
    _check_rates(high=high_mbps, low=low_mbps)
    starts = _grid(duration_s, step_s, [])
    middles = (starts + np.append(starts[1:], duration_s)) / 2
    depth = 1 - np.abs(2 * middles / duration_s - 1)  # 0 at both ends, 1 in the middle
    return _trace(starts, high_mbps - (high_mbps - low_mbps) * depth, duration_s, noise, seed)


def random_walk(
    *,
    start_mbps: float = 20.0,
    low_mbps: float = 3.0,
    high_mbps: float = 40.0,
    sigma: float = 0.15,
    duration_s: float = 300.0,
    step_s: float = 1.0,
    seed: int = 0,
) -> Trace:
    """A multiplicative random walk: the log-rate moves by ``sigma`` * N(0, 1) each step,
    reflected at ``low_mbps`` and ``high_mbps`` (reflection, unlike clipping, does not stick)."""
    _check_timing(duration_s, step_s)
    if not 0 < low_mbps < high_mbps:
        raise ValueError(f"need 0 < low_mbps < high_mbps, got {low_mbps} and {high_mbps}")
    if not low_mbps <= start_mbps <= high_mbps:
        raise ValueError(f"start_mbps must be within [{low_mbps}, {high_mbps}], got {start_mbps}")
    _check_spread("sigma", sigma)
    starts = _grid(duration_s, step_s, [])
    steps = sigma * np.random.default_rng(seed).standard_normal(starts.size - 1)
    walk = math.log(start_mbps) + np.concatenate([[0.0], np.cumsum(steps)])
    lo, width = math.log(low_mbps), math.log(high_mbps / low_mbps)
    folded = np.abs((walk - lo + width) % (2 * width) - width)  # reflect into [0, width]
    return _trace(starts, np.exp(lo + folded), duration_s, 0.0, seed)


def on_off(
    *,
    high_mbps: float = 30.0,
    period_s: float = 20.0,
    off_s: float = 4.0,
    duration_s: float = 120.0,
    step_s: float = 1.0,
    noise: float = 0.0,
    seed: int = 0,
) -> Trace:
    """``high_mbps``, with an outage (the floor) during the last ``off_s`` of every period."""
    _check_timing(duration_s, step_s)
    _check_rates(high=high_mbps)
    if not 0 < off_s < period_s:
        raise ValueError(f"need 0 < off_s < period_s, got off_s={off_s}, period_s={period_s}")
    check_size(duration_s / period_s, f"period_s = {period_s:g} over duration_s = {duration_s:g}",
               "use a longer period_s or a shorter duration_s")
    periods = np.arange(0.0, duration_s, period_s)
    starts = _grid(duration_s, step_s, [*periods, *(periods + period_s - off_s)])
    phase = starts - np.floor(starts / period_s + 1e-9) * period_s
    off = phase >= period_s - off_s - 1e-9
    return _trace(starts, np.where(off, 0.0, high_mbps), duration_s, noise, seed)


def like(
    trace: Trace, *, seed: int = 0, duration_s: float | None = None, step_s: float = 1.0
) -> Trace:
    """A new trace with the statistics of ``trace`` at ``step_s`` resolution.

    A Gaussian-copula AR(1): a standard-normal AR(1) series whose coefficient is the lag-1
    autocorrelation of the real per-step rates' normal scores, mapped through the real per-step
    rates' quantile function. So the rate distribution is the real one and the lag-1
    autocorrelation close to it. ``duration_s`` defaults to the real trace's.
    """
    duration_s = trace.duration_s if duration_s is None else duration_s
    _check_timing(duration_s, step_s)
    check_size(trace.duration_s / step_s, f"step_s = {step_s:g} over the real trace's "
               f"{trace.duration_s:g} s", "use a larger step_s")
    real = trace.bin_means(step_s)[: int(trace.duration_s / step_s + 1e-6)]
    if real.size < 3:
        raise ValueError(
            f"the real trace needs at least 3 steps of {step_s} s to estimate its statistics"
        )
    ranks = np.argsort(np.argsort(real, kind="stable"), kind="stable")
    scores = ndtri((ranks + 0.5) / real.size)
    phi = float(np.clip(np.corrcoef(scores[:-1], scores[1:])[0, 1], -0.99, 0.99))
    starts = _grid(duration_s, step_s, [])
    shocks = np.random.default_rng(seed).standard_normal(starts.size)
    shocks[1:] *= math.sqrt(1 - phi**2)  # z[0] ~ N(0, 1), and so is every later z
    z = lfilter([1.0], [1.0, -phi], shocks)  # z[i] = phi * z[i-1] + shocks[i]
    return _trace(starts, np.quantile(real, ndtr(z)), duration_s, 0.0, seed)


def _grid(duration_s: float, step_s: float, events: list[float]) -> np.ndarray:
    """Segment starts: every ``step_s``, plus the events inside the trace (ns-rounded, sorted)."""
    ticks = np.arange(math.ceil(duration_s / step_s - 1e-6)) * step_s
    starts = np.round(np.concatenate([ticks, events]), 9)
    return np.unique(starts[starts < duration_s])


def _trace(
    starts: np.ndarray, rates: np.ndarray, duration_s: float, noise: float, seed: int
) -> Trace:
    """Multiply by exp(``noise`` * N(0, 1)) per segment, round to 1 kbit/s, make the Trace."""
    _check_spread("noise", noise)
    if noise:
        rates = rates * np.exp(noise * np.random.default_rng(seed).standard_normal(rates.size))
    return Trace.from_segments(starts, np.round(rates, RATE_DECIMALS), duration_s)


def _check_timing(duration_s: float, step_s: float) -> None:
    if not (duration_s > 0 and math.isfinite(duration_s)):
        raise ValueError(f"duration_s must be a positive number of seconds, got {duration_s}")
    if not (0 < step_s <= duration_s):
        raise ValueError(f"step_s must be within (0, duration_s={duration_s}], got {step_s}")
    check_size(duration_s / step_s, f"step_s = {step_s:g} over duration_s = {duration_s:g}",
               "use a larger step_s or a shorter duration_s")


def _check_rates(**rates: float) -> None:
    for what, rate in rates.items():
        if not (rate > 0 and math.isfinite(rate)):
            raise ValueError(f"{what}_mbps must be a positive rate, got {rate}")


def _check_spread(what: str, value: float) -> None:
    if not (value >= 0 and math.isfinite(value)):
        raise ValueError(f"{what} must be >= 0, got {value}")
