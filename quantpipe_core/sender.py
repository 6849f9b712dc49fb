"""The sending side of a link: when to ask the policy, and what the stage tells it.

The simulator and the real runtime both use this, so a policy sees the same `Observation` built
the same way in both: only transfers already delivered count.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from quantpipe_core.names import FLOAT_BITS
from quantpipe_core.plan import LinkSpec, SourceSpec
from quantpipe_core.policy import Observation, check_decision
from quantpipe_core.results import Records, WindowRecord

SLOW_DECISION_S = 1.0  # of wall time for one decision: a run of many windows will take long


class SlowPolicyWarning(UserWarning):
    """A policy's decisions take long enough of wall time to make the run long."""


class PolicyFailed(ValueError):
    """The policy's `decide` raised or gave an answer `check_decision` refuses; says where.

    ``args`` are ``(message, link, window, now_s)`` so that a copy made from them (SimPy
    re-raises a process's error that way) keeps the link, window and time."""

    def __init__(self, message: str, link: int, window: int, now_s: float) -> None:
        super().__init__(message, link, window, now_s)
        self.link, self.window, self.now_s = link, window, now_s

    def __str__(self) -> str:
        return self.args[0]


def check_revision(bits: Any, obs: Observation) -> list[int] | None:
    """A ``revise`` answer: ``None`` keeps the window, else a decision for the rest of it."""
    return None if bits is None else check_decision(bits, obs)


def check_coding(answer: Any, obs: Observation) -> bool:
    """A ``code`` answer: a bool (numpy's too)."""
    if not isinstance(answer, bool | np.bool_):
        raise TypeError(f"code must return a bool, got {type(answer).__name__} {answer!r}")
    return bool(answer)


class PacketSizes:
    """The bytes a packet is expected to take at each bitwidth on one link.

    The link's prior (`LinkSpec.packet_bytes`: exact for bit-planes, a lossless profile's mean
    with a coder) times a running ratio of the sizes sent to the prior's, never above the exact
    worst case. One ratio per link, not per bitwidth: the data moves every bitwidth's coded size
    together, so a bitwidth not sent for a while still follows it. float32 is never coded. With
    bit-planes every size sent equals the prior, so the ratio stays 1 exactly.
    """

    SMOOTHING = 0.25  # weight of each packet sent in the running ratio

    def __init__(self, prior: Mapping[int, int], worst: Mapping[int, int]) -> None:
        self.prior, self.worst = dict(prior), dict(worst) or dict(prior)
        self.ratio = 1.0

    def sent(self, bits: int, nbytes: int) -> None:
        """A packet of `nbytes` was encoded at `bits`."""
        if bits != FLOAT_BITS and self.prior.get(bits):
            self.ratio += self.SMOOTHING * (nbytes / self.prior[bits] - self.ratio)

    def expected(self) -> dict[int, int]:
        """Expected bytes of the next packet at each bitwidth."""
        if self.ratio == 1.0:
            return self.prior
        return {b: n if b == FLOAT_BITS else min(round(n * self.ratio), self.worst[b])
                for b, n in self.prior.items()}


class LinkSender:
    """The sending side of a link: the policy's schedule and what the stage measured."""

    def __init__(self, index: int, spec: LinkSpec, source: SourceSpec, allowed: Sequence[int],
                 window: int, records: Records) -> None:
        self.index, self.spec, self.source = index, spec, source
        self.allowed, self.window, self.records = tuple(allowed), window, records
        self.schedule: list[int] = []
        self.coding = spec.coded  # this window goes through the link's lossless coder
        self.window_index = -1
        self.delivered_bytes = 0
        self.delivered_s = 0.0
        self.history: list[float] = []
        self.measured: float | None = None
        self.queued = 0  # packets waiting for the link
        self.queued_bytes = 0  # bytes handed to the link and not delivered yet (in flight too)
        self.upstream_delay_s = 0.0  # what the last microbatch took to get here, past its path
        self.sizes = PacketSizes(spec.packet_bytes, spec.worst_packet_bytes)
        self.coder_s = {b: s + spec.coder_decode_s.get(b, 0.0)  # encode and decode, per bitwidth
                        for b, s in spec.coder_encode_s.items()}
        self.last_window: WindowRecord | None = None  # records.windows holds every link's
        self.expected_windows: int | None = None  # decisions this run will ask for, if known
        self.warned_slow = False

    def bits_for_next(self, now: float, microbatch: int | None = None) -> int:
        """The bitwidth of `microbatch`, which this stage starts at `now`; asks the policy at
        each window's start, and a policy with ``revise`` before each later microbatch once this
        window delivered something (`quantpipe_core.policy.Policy`).

        An open-loop source offers microbatch m at m periods, on a clock every stage shares
        (the runtime's starts at rank 0's start), so the delay it gathered before this stage
        needs no message: its age now, less the path to here without queues."""
        if microbatch is not None and self.source.mode == "open":
            self.upstream_delay_s = max(
                now - microbatch * self.source.period_s - self.spec.upstream_path_s, 0.0)
        if not self.schedule:
            self._decide(now)
        elif self.delivered_s > 0 and hasattr(self.spec.policy, "revise"):
            self._revise(now)
        assert self.last_window is not None and self.last_window.used is not None
        self.last_window.used += 1
        return self.schedule.pop(0)

    def enqueue(self, nbytes: int, bits: int, coded: bool) -> None:
        """A packet of `nbytes`, encoded at `bits` (through the coder if `coded`), now waits
        for the link. One encoded as the link's prior sizes it (through its coder, if it has
        one) teaches the expected sizes; a window sent without the coder does not."""
        self.queued += 1
        self.queued_bytes += nbytes
        if coded == self.spec.coded:
            self.sizes.sent(bits, nbytes)

    def dequeue(self) -> None:
        """A waiting packet went onto the link."""
        self.queued -= 1

    def delivered(self, nbytes: int, send_s: float) -> None:
        self.queued_bytes -= nbytes
        self.delivered_bytes += nbytes
        self.delivered_s += send_s

    def _window_mbps(self) -> float:
        """The rate the link delivered this window's packets at so far (something delivered)."""
        return self.delivered_bytes * 8 / self.delivered_s / 1e6

    def _decide(self, now: float) -> None:
        if self.delivered_s > 0:
            if self.measured is not None:
                self.history.append(self.measured)
            self.measured = self._window_mbps()
        last = self.last_window
        obs = self._observation(now, self.window_index + 1, self.window, self.measured,
                                self.history, tuple(last.bits) if last else ())
        schedule = self._ask(self.spec.policy.decide, obs, check_decision)
        assert schedule is not None  # check_decision refuses None from decide
        self.schedule = schedule
        if self.spec.coded and hasattr(self.spec.policy, "code"):
            self.coding = self._ask(lambda o: self.spec.policy.code(o, schedule), obs,
                                    check_coding)
        if last is not None:
            last.t_end_s = now
        self.window_index += 1
        self.last_window = WindowRecord(self.index, self.window_index, now, None,
                                        list(self.schedule), self.measured, used=0,
                                        coded=self.coding if self.spec.coded else None)
        self.records.window(self.last_window)
        self.delivered_bytes, self.delivered_s = 0, 0.0

    def _revise(self, now: float) -> None:
        """Offer the policy this window so far; its answer replaces the rest of the window."""
        window = self.last_window
        assert window is not None and window.used is not None
        history = [*self.history, self.measured] if self.measured is not None else self.history
        obs = self._observation(now, self.window_index, len(self.schedule), self._window_mbps(),
                                history, tuple(window.bits[: window.used]))
        answer = self._ask(self.spec.policy.revise, obs, check_revision)
        if answer is not None:
            self.schedule = answer
            window.bits[window.used :] = answer

    def _observation(self, now: float, window_index: int, window_len: int,
                     measured: float | None, history: Sequence[float],
                     bits_last: tuple[int, ...]) -> Observation:
        return Observation(
            now_s=now,
            window_index=window_index,
            window_len=window_len,
            items_per_microbatch=self.source.items_per_microbatch,
            bytes_sent=self.delivered_bytes,
            send_s=self.delivered_s,
            measured_mbps=measured,
            history_mbps=tuple(history[-16:]),
            target_rate_items_per_s=self.source.target_rate_items_per_s,
            tensor_shape=self.spec.tensor_shape,
            allowed_bits=self.allowed,
            bits_last_window=bits_last,
            packet_bytes=self.sizes.expected(),
            worst_packet_bytes=self.sizes.worst,
            coder_s=self.coder_s,
            accuracy_by_bits=self.spec.accuracy_by_bits,
            queued_microbatches=self.queued,
            queued_bytes=self.queued_bytes,
            upstream_delay_s=self.upstream_delay_s,
            utility=self.spec.utility,
            compute_path_s=self.spec.compute_path_s,
        )

    def _ask(self, method: Callable[[Observation], Any], obs: Observation,
             check: Callable[[Any, Observation], Any]) -> Any:
        """The policy's answer to `obs`, as `check` accepts it; its failures say where they
        happened."""
        started = time.perf_counter()
        try:
            answer = check(method(obs), obs)
        except Exception as error:
            raise PolicyFailed(
                f"policy {type(self.spec.policy).__name__} failed on link {self.index}, window "
                f"{obs.window_index} (t = {obs.now_s:.3f} s): {type(error).__name__}: {error}",
                self.index, obs.window_index, obs.now_s,
            ) from error
        self._warn_if_slow(time.perf_counter() - started)
        return answer

    def _warn_if_slow(self, seconds: float) -> None:
        """Warn once when one decision took `SLOW_DECISION_S` or more of wall time, with what
        the run's decisions will take at that pace (a 10 s policy turns 180 simulated seconds
        into an hour)."""
        if seconds < SLOW_DECISION_S or self.warned_slow:
            return
        self.warned_slow = True
        total = ""
        if self.expected_windows is not None:
            minutes = seconds * self.expected_windows / 60
            total = (f"; this run asks it about {self.expected_windows} times on this link: "
                     f"about {minutes:.3g} min of decisions")
        warnings.warn(
            f"link {self.index}: the policy took {seconds:.3g} s of wall time for one "
            f"decision{total}", SlowPolicyWarning, stacklevel=2,
        )
