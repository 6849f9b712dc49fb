"""Bandwidth traces: a link's capacity as a piecewise-constant function of time.

The simulator, the Mininet replayer and the runtime all read traces through this module, so that
they agree on what a trace means. Three file formats are read (detected from the content):

- ``csv``: a ``time_s,mbps`` header, then rows; a row's rate holds from its time until the next
  row's time. The last row's time ends the trace; its rate is the rate after the end under
  ``end="hold"``.
- ``mahimahi``: one integer millisecond per line, each line one chance to deliver a 1500-byte
  packet. Kept exact at 1 ms: the packets at millisecond ``m`` are delivered at a constant rate
  during ``(m-1, m]``. The last timestamp is the duration (Mahimahi's loop period).
- ``mbps-log``: two whitespace-separated columns ``time mbps``, the adaptive-bitrate logs. A row's
  rate was measured over the interval that ends at its time; times are shifted to start at 0.

Transfer times come from integrating capacity forward (`Trace.finish_time`), never from the rate
at the moment a transfer starts. See docs/traces.md.
"""

from __future__ import annotations

import math
import re
from array import array
from bisect import bisect_left, bisect_right
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np

from quantpipe_core.cli import echo

if TYPE_CHECKING:  # config imports names, which imports this module
    from quantpipe_core.config import LinkConfig

ENDS = ("loop", "hold")
CSV_HEADER = "time_s,mbps"
PACKET_BITS = 1500 * 8  # one Mahimahi delivery opportunity
MAHIMAHI_HOLD_S = 1.0  # after a Mahimahi trace's end, "hold" keeps the mean of its last second
DEFAULT_FLOOR_MBPS = 0.01
# Budget of an allocation proportional to an option (bins, steps, milliseconds), checked before
# it is made: a few bytes of input (bin_s = 1e-9, a Mahimahi stamp of 3e9) must not ask for TiBs.
MAX_ELEMENTS = 50_000_000
BYTES_PER_ELEMENT = 40  # the few float64 arrays such a computation holds per element
LINE_BREAK = re.compile("\r\n|[\n\r\v\f\x1c\x1d\x1e\x85\u2028\u2029]")  # str.splitlines'

End = Literal["loop", "hold"]


class TraceError(ValueError):
    """A trace file or trace option that cannot be used; the message says where and why."""


@dataclass(frozen=True, eq=False)
class Trace:
    """Link capacity: ``mbps[i]`` from ``starts_s[i]`` until the next start (or ``duration_s``).

    After ``duration_s`` the trace repeats (``end="loop"``) or keeps ``hold_mbps`` forever
    (``end="hold"``). Build one with `Trace.from_segments` or `load_trace`, which also apply
    scale, binning and the floor. ``starts_s`` and ``mbps`` are read-only float64 arrays: a trace
    of millions of segments is held in 24 bytes per segment, not in Python floats.
    """

    starts_s: np.ndarray
    mbps: np.ndarray
    duration_s: float
    hold_mbps: float
    end: End = "loop"
    name: str = ""
    # lookup tables for the O(log n) queries
    _times: np.ndarray = field(init=False, repr=False)  # starts, then duration
    _cum: np.ndarray = field(init=False, repr=False)  # bits delivered by _times
    # the same tables seen as sequences of Python floats: bisect on them is as fast as on a list
    _times_at: memoryview = field(init=False, repr=False)
    _cum_at: memoryview = field(init=False, repr=False)
    _mbps_at: memoryview = field(init=False, repr=False)

    def __post_init__(self) -> None:
        starts = np.asarray(self.starts_s, dtype=float)
        rates = np.array(self.mbps, dtype=float)
        _check_segments(starts, rates, self.duration_s, self.hold_mbps)
        _check_end(self.end)
        if self.end == "hold" and self.hold_mbps == 0:
            raise TraceError(
                "end='hold' with a rate of 0 after the end would stall transfers forever; "
                "use a floor above 0 or end='loop'"
            )
        times = np.append(starts, float(self.duration_s))
        cum = _cumulative_bits(times, rates)
        if cum[-1] <= 0:
            raise TraceError("every rate is 0: the trace has no capacity at all")
        if not np.isfinite(cum[-1]) or not math.isfinite(self.hold_mbps * 1e6):
            raise TraceError(
                f"the capacity overflows a float: rates up to {rates.max():.3g} Mbit/s over "
                f"{self.duration_s:g} s (hold {self.hold_mbps:.3g} Mbit/s)"
            )
        for table in (times, rates, cum):
            table.flags.writeable = False
        set_ = object.__setattr__
        set_(self, "starts_s", times[:-1])
        set_(self, "mbps", rates)
        set_(self, "duration_s", float(self.duration_s))
        set_(self, "hold_mbps", float(self.hold_mbps))
        set_(self, "_times", times)
        set_(self, "_cum", cum)
        set_(self, "_times_at", memoryview(times))
        set_(self, "_cum_at", memoryview(cum))
        set_(self, "_mbps_at", memoryview(rates))

    def __reduce__(self) -> tuple:
        """Pickled as its segments (memoryviews do not pickle); rebuilt exactly."""
        return (Trace, (self.starts_s, self.mbps, self.duration_s, self.hold_mbps, self.end,
                        self.name))

    @classmethod
    def from_segments(
        cls,
        starts_s: Sequence[float],
        mbps: Sequence[float],
        duration_s: float,
        *,
        hold_mbps: float | None = None,
        end: End = "loop",
        scale: float = 1.0,
        bin_s: float | None = None,
        floor_mbps: float = DEFAULT_FLOOR_MBPS,
        name: str = "",
    ) -> Trace:
        """A trace from its segments; then scale, bin, floor, in that order (see docs/traces.md).

        ``hold_mbps`` (the rate after the end under ``end="hold"``) defaults to the last rate.
        """
        _check_options(scale, bin_s, end, floor_mbps)
        starts = np.asarray(starts_s, dtype=float)
        rates = np.asarray(mbps, dtype=float)
        _check_shapes(starts, rates)
        hold = float(rates[-1] if hold_mbps is None else hold_mbps)
        _check_segments(starts, rates, duration_s, hold)
        if not np.any(rates > 0):
            raise TraceError("every rate is 0: the trace has no capacity at all")
        rates, hold = rates * scale, hold * scale
        starts, rates = _merge(starts, rates)
        if bin_s is not None:
            starts, rates = _merge(*_bin(starts, rates, duration_s, bin_s))
        rates, hold = np.maximum(rates, floor_mbps), max(hold, floor_mbps)
        _check_overflow(rates, hold, duration_s, scale, floor_mbps)
        starts, rates = _merge(starts, rates)
        return cls(starts, rates, duration_s, hold, end, name)

    def __eq__(self, other: object) -> bool:
        """The same capacity function (names aside): equal segments, duration, hold and end."""
        if not isinstance(other, Trace):
            return NotImplemented
        return ((self.duration_s, self.hold_mbps, self.end)
                == (other.duration_s, other.hold_mbps, other.end)
                and np.array_equal(self.starts_s, other.starts_s)
                and np.array_equal(self.mbps, other.mbps))

    def __hash__(self) -> int:
        return hash((self.duration_s, self.hold_mbps, self.end, self.mbps.size))

    def __repr__(self) -> str:
        return (
            f"Trace({self.name or 'unnamed'}: {self.duration_s:g} s, {len(self.mbps)} segments, "
            f"mean {self.mean_mbps():.3f} Mbit/s, end={self.end})"
        )

    def segments(self) -> list[tuple[float, float]]:
        """``(start_s, mbps)`` for each piece of one period, in order: what a replayer sets."""
        return list(zip(self.starts_s.tolist(), self.mbps.tolist(), strict=True))

    def rate_mbps(self, t: float) -> float:
        """The capacity at time ``t`` (a rate holds from its start, inclusive)."""
        _check_time("t", t)
        if t >= self.duration_s:
            if self.end == "hold":
                return self.hold_mbps
            t = math.fmod(t, self.duration_s)
        return self._mbps_at[self._segment(t)]

    def delivered_bits(self, t0: float, t1: float) -> float:
        """Bits the link can deliver between ``t0`` and ``t1``: the integral of capacity."""
        _check_interval(t0, t1)
        return self._bits_by(t1) - self._bits_by(t0)

    def mean_mbps(self, t0: float = 0.0, t1: float | None = None) -> float:
        """Mean capacity over ``[t0, t1)`` (default: one period), exact."""
        t1 = self.duration_s if t1 is None else t1
        if not t1 > t0:
            raise ValueError(f"mean_mbps needs t1 > t0, got t0={t0}, t1={t1}")
        return self.delivered_bits(t0, t1) / (t1 - t0) / 1e6

    def finish_time(self, start_s: float, bits: float) -> float:
        """When a transfer of ``bits`` that starts at ``start_s`` has been delivered.

        Capacity is integrated forward from the start, across segments and loops: O(log n).
        """
        if not start_s >= 0 or not bits >= 0 or math.isinf(start_s):
            raise ValueError(f"finish_time needs start_s >= 0 and bits >= 0, got {start_s}, {bits}")
        if bits == 0:
            return start_s
        duration, period_bits = self.duration_s, self._cum_at[-1]
        if self.end == "hold":
            if start_s >= duration:
                return start_s + bits / (self.hold_mbps * 1e6)
            target = self._bits_within(start_s) + bits
            if target > period_bits:
                return duration + (target - period_bits) / (self.hold_mbps * 1e6)
            return max(start_s, self._time_within(target))
        loops, offset = divmod(start_s, duration)
        target = self._bits_within(offset) + bits
        wraps = math.ceil(target / period_bits) - 1  # whole periods crossed; remainder in (0, P]
        remainder = target - wraps * period_bits
        return max(start_s, (loops + wraps) * duration + self._time_within(remainder))

    def finish_times(self, starts_s: np.ndarray, bits: np.ndarray) -> np.ndarray:
        """`finish_time` of many transfers at once (arrays of equal shape), for the simulator's
        offline optimum, which advances thousands of candidate states per step."""
        starts = np.asarray(starts_s, dtype=float)
        bits = np.broadcast_to(np.asarray(bits, dtype=float), starts.shape)
        if not (np.all(starts >= 0) and np.all(np.isfinite(starts)) and np.all(bits >= 0)):
            raise ValueError("finish_times needs finite starts_s >= 0 and bits >= 0")
        times, cum, bps = self._times, self._cum, self.mbps * 1e6
        duration, period_bits = self.duration_s, cum[-1]

        def bits_within(t: np.ndarray) -> np.ndarray:
            i = np.minimum(np.searchsorted(times, t, side="right"), len(bps)) - 1
            return cum[i] + (t - times[i]) * bps[i]

        def time_within(target: np.ndarray) -> np.ndarray:
            target = np.clip(target, 0.0, period_bits)
            j = np.searchsorted(cum, target, side="left")
            exact = cum[j] == target
            k = np.maximum(j - 1, 0)
            inside = times[k] + (target - cum[k]) / np.where(exact, 1.0, bps[k])
            return np.where(exact, times[j], inside)

        if self.end == "hold":
            hold_bps = self.hold_mbps * 1e6
            within = np.minimum(starts, duration)
            target = bits_within(within) + bits
            after = np.where(starts >= duration, starts + bits / hold_bps,
                             duration + (target - period_bits) / hold_bps)
            inside = np.maximum(starts, time_within(target))
            finish = np.where((starts < duration) & (target <= period_bits), inside, after)
        else:
            loops, offset = np.divmod(starts, duration)
            target = bits_within(offset) + bits
            wraps = np.ceil(target / period_bits) - 1
            remainder = target - wraps * period_bits
            finish = np.maximum(starts, (loops + wraps) * duration + time_within(remainder))
        return np.where(bits == 0, starts, finish)

    def bin_means(self, bin_s: float) -> np.ndarray:
        """Mean capacity (Mbit/s) of each ``bin_s`` bin of one period; the last may be shorter."""
        _check_bin(bin_s)
        return _bin(self.starts_s, self.mbps, self.duration_s, bin_s)[1]

    def _bits_by(self, t: float) -> float:
        """Bits deliverable in ``[0, t)``."""
        period_bits = self._cum_at[-1]
        if t < self.duration_s:
            return self._bits_within(t)
        if self.end == "hold":
            return period_bits + (t - self.duration_s) * self.hold_mbps * 1e6
        loops, offset = divmod(t, self.duration_s)
        return loops * period_bits + self._bits_within(offset)

    def _segment(self, t: float) -> int:
        """The segment holding time ``t`` of one period (the last one from its start on)."""
        return min(bisect_right(self._times_at, t), len(self.mbps)) - 1

    def _bits_within(self, t: float) -> float:
        """Bits deliverable in ``[0, t)`` for ``0 <= t <= duration_s``."""
        i = self._segment(t)
        return self._cum_at[i] + (t - self._times_at[i]) * (self._mbps_at[i] * 1e6)

    def _time_within(self, bits: float) -> float:
        """Earliest time in one period by which ``bits`` (clamped to [0, P]) are delivered."""
        cum, times = self._cum_at, self._times_at
        bits = min(max(bits, 0.0), cum[-1])
        j = bisect_left(cum, bits)
        if cum[j] == bits:
            return times[j]
        return times[j - 1] + (bits - cum[j - 1]) / (self._mbps_at[j - 1] * 1e6)


def load_trace(
    path: str | Path,
    *,
    format: str | None = None,
    scale: float = 1.0,
    bin_s: float | None = None,
    end: End = "loop",
    floor_mbps: float = DEFAULT_FLOOR_MBPS,
) -> Trace:
    """Read a trace file (format detected unless given), then scale, bin and floor it."""
    _check_options(scale, bin_s, end, floor_mbps)
    path = Path(path)
    text = _read_text(path)
    fmt = format or detect_format(_lines(text), str(path))
    if fmt not in FORMATS:
        raise TraceError(f"{path}: unknown format {echo(fmt)}; choose from {', '.join(FORMATS)}")
    if next(_numbered(_lines(text)), None) is None:
        raise TraceError(f"{path}: empty file")
    starts, rates, duration, hold = _PARSERS[fmt](_lines(text), str(path))
    try:
        return Trace.from_segments(
            starts, rates, duration, hold_mbps=hold, end=end, scale=scale, bin_s=bin_s,
            floor_mbps=floor_mbps, name=path.name,
        )
    except TraceError as error:
        raise TraceError(f"{path}: {error}") from None


def load_link_trace(link: LinkConfig, path: str | Path) -> Trace:
    """A link's trace with the link's format, scale, bin, end and floor."""
    return load_trace(
        path, format=None if link.format == "auto" else link.format, scale=link.scale,
        bin_s=link.bin_s or None, end=link.end, floor_mbps=link.floor_mbps,
    )


def detect_format(lines: Iterable[str], name: str = "trace") -> str:
    """The format of a trace from its first non-blank line (see the module docstring)."""
    first_line = next(_numbered(lines), None)
    if first_line is None:
        raise TraceError(f"{name}: empty file")
    number, first = first_line
    fields = first.split()
    if first.replace(" ", "") == CSV_HEADER:
        return "csv"
    if len(fields) == 1 and _is_millisecond(fields[0]):
        return "mahimahi"
    if len(fields) == 2 and all(_is_float(f) for f in fields):
        return "mbps-log"
    raise TraceError(
        f"{name}, line {number}: unknown format: expected a '{CSV_HEADER}' header (csv), one "
        f"integer millisecond per line (mahimahi) or two numbers per line (mbps-log), "
        f"got {echo(first)}"
    )


def file_format(path: str | Path) -> str:
    """The format of the trace file at `path` (`detect_format` on its first non-blank line)."""
    return detect_format(_lines(_read_text(Path(path))), str(path))


def write_trace(trace: Trace, path: str | Path, format: str) -> None:
    """Write ``trace`` in ``format``; csv and mbps-log are exact, mahimahi rounds to packets."""
    if format not in FORMATS:
        raise TraceError(f"unknown format {echo(format)}; choose from {', '.join(FORMATS)}")
    Path(path).write_text(_WRITERS[format](trace))


# ---- reading ---------------------------------------------------------------------------------

Parsed = tuple[np.ndarray, np.ndarray, float, float]  # starts, rates, duration, hold rate
MAX_STAMP_DIGITS = 15  # a Mahimahi millisecond beyond 1e15 (31,000 years) is not a trace


def _read_text(path: Path) -> str:
    """The file's text; a file that is not UTF-8 is refused naming it and the line."""
    data = path.read_bytes()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as error:
        line = data.count(b"\n", 0, error.start) + 1
        raise TraceError(
            f"{path}, line {line}: not UTF-8 text (byte 0x{data[error.start]:02x} at offset "
            f"{error.start}): a trace is a text file"
        ) from None


def _lines(text: str) -> Iterator[str]:
    """``text.splitlines()``, one line at a time: a 50 MB trace is not copied into a list."""
    start = 0
    for match in LINE_BREAK.finditer(text):
        yield text[start : match.start()]
        start = match.end()
    if start < len(text):
        yield text[start:]


def _parse_csv(lines: Iterable[str], name: str) -> Parsed:
    """Each row's rate holds from its time to the next row's; the last row ends the trace."""
    numbered = _numbered(lines)
    number, header = next(numbered)
    if header.replace(" ", "") != CSV_HEADER:
        raise TraceError(f"{name}, line {number}: expected the header {CSV_HEADER!r}")
    rows = ((n, _fields(line.split(","), 2, n, name)) for n, line in numbered)
    times, rates, first = _read_rows(rows, name)
    if times[0] != 0:
        raise TraceError(f"{name}, line {first}: the first row must be at time 0, got {times[0]}")
    return times[:-1], rates[:-1], float(times[-1]), float(rates[-1])


def _parse_mbps_log(lines: Iterable[str], name: str) -> Parsed:
    """Each row's rate was measured over the interval that ends at its time (as ABR simulators
    read these logs), so the first row's rate lies before the trace; times start at 0."""
    rows = ((n, _fields(line.split(), 2, n, name)) for n, line in _numbered(lines))
    times, rates, _ = _read_rows(rows, name)
    times -= times[0]
    return times[:-1], rates[1:], float(times[-1]), float(rates[-1])


def _read_rows(
    rows: Iterable[tuple[int, list[str]]], name: str
) -> tuple[np.ndarray, np.ndarray, int]:
    """Times and rates of (time, rate) rows: numbers, not negative, times increasing; and the
    first row's line number. Held as packed doubles while reading, never Python lists."""
    times, rates = array("d"), array("d")
    first = 0
    for number, (time_text, rate_text) in rows:
        time = _number(time_text, "time", number, name)
        rate = _number(rate_text, "rate", number, name)
        if time < 0:
            raise TraceError(f"{name}, line {number}: negative time {time}")
        if rate < 0:
            raise TraceError(f"{name}, line {number}: negative rate {rate}")
        if times and time <= times[-1]:
            raise TraceError(
                f"{name}, line {number}: time {time} is not after the previous row's "
                f"{times[-1]} (times must increase)"
            )
        times.append(time)
        rates.append(rate)
        first = first or number
    if len(times) < 2:
        raise TraceError(
            f"{name}: needs at least two rows (the last row's time ends the trace), "
            f"got {len(times)}"
        )
    return np.frombuffer(times, dtype=float), np.frombuffer(rates, dtype=float), first


def _parse_mahimahi(lines: Iterable[str], name: str) -> Parsed:
    """Packets at millisecond m are delivered at a constant rate during (m-1, m]; exact at 1 ms.

    Only the milliseconds that have packets are held (and the gaps between them as segments
    of rate 0), so a three-line file ending at 3,000,000,000 ms makes a few segments."""
    stamps = array("q")
    previous = 0
    for number, line in _numbered(lines):
        text = line.strip()
        if not _is_millisecond(text):
            raise TraceError(
                f"{name}, line {number}: expected a non-negative integer millisecond, "
                f"got {echo(text)}"
            )
        if len(text) > MAX_STAMP_DIGITS:
            raise TraceError(f"{name}, line {number}: timestamp {echo(text)} ms is too large")
        stamp = int(text)
        if stamp < previous:
            raise TraceError(
                f"{name}, line {number}: timestamp {stamp} is before the previous {previous} "
                "(timestamps must not decrease)"
            )
        stamps.append(stamp)
        previous = stamp
    period_ms = previous
    if period_ms == 0:
        raise TraceError(f"{name}: the last timestamp (the duration) is 0 ms")
    stamped = np.frombuffer(stamps, dtype=np.int64).copy()
    # Mahimahi repeats the file every period: a packet at 0 is the one at the period's end
    stamped[stamped == 0] = period_ms
    ms, packets = np.unique(stamped, return_counts=True)
    rates = packets * (PACKET_BITS / 1e3)  # packets per ms -> Mbit/s
    idle = ms[:-1][ms[:-1] + 1 < ms[1:]]  # a millisecond with packets, then one without
    lead = [0] if ms[0] > 1 else []
    starts_ms = np.concatenate([lead, ms - 1, idle]).astype(np.int64)
    segment_rates = np.concatenate([np.zeros(len(lead)), rates, np.zeros(idle.size)])
    order = np.argsort(starts_ms, kind="stable")
    tail_ms = max(1, min(period_ms, round(MAHIMAHI_HOLD_S * 1e3)))
    tail = np.zeros(tail_ms)  # the last tail_ms milliseconds' rates, as a dense array
    late = ms > period_ms - tail_ms
    tail[ms[late] - (period_ms - tail_ms) - 1] = rates[late]
    return starts_ms[order] / 1e3, segment_rates[order], period_ms / 1e3, float(tail.mean())


_PARSERS = {"csv": _parse_csv, "mahimahi": _parse_mahimahi, "mbps-log": _parse_mbps_log}


def _numbered(lines: Iterable[str]) -> Iterator[tuple[int, str]]:
    """Non-blank lines with their 1-based line numbers."""
    return ((n, line) for n, line in enumerate(lines, start=1) if line.strip())


def _is_millisecond(text: str) -> bool:
    """ASCII digits only: ``str.isdigit`` also takes '٣' and '³'."""
    return text.isascii() and text.isdigit()


def _fields(parts: list[str], count: int, number: int, name: str) -> list[str]:
    parts = [p.strip() for p in parts]
    if len(parts) != count:
        raise TraceError(f"{name}, line {number}: expected {count} fields, got {len(parts)}")
    if "" in parts:
        what = "time" if parts[0] == "" else "rate"
        raise TraceError(f"{name}, line {number}: missing {what}")
    return parts


def _number(text: str, what: str, number: int, name: str) -> float:
    try:
        if not text.isascii():
            raise ValueError(text)
        value = float(text)
    except ValueError:
        raise TraceError(f"{name}, line {number}: {what} {echo(text)} is not a number") from None
    if not math.isfinite(value):
        raise TraceError(f"{name}, line {number}: {what} {echo(text)} is not a finite number")
    return value


def _is_float(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


# ---- writing ---------------------------------------------------------------------------------


def _write_csv(trace: Trace) -> str:
    """The segments, then a row at the end carrying the rate after the end."""
    rows = [*trace.segments(), (trace.duration_s, trace.hold_mbps)]
    return "".join([f"{CSV_HEADER}\n", *(f"{t!r},{r!r}\n" for t, r in rows)])


def _write_mbps_log(trace: Trace) -> str:
    """A row at 0, then each segment's rate at its end time (the format has no hold rate)."""
    ends = [*trace.starts_s[1:].tolist(), trace.duration_s]
    rates = trace.mbps.tolist()
    rows = [(0.0, rates[0]), *zip(ends, rates, strict=True)]
    return "".join(f"{t!r}\t{r!r}\n" for t, r in rows)


def _write_mahimahi(trace: Trace) -> str:
    """One line per packet; per-ms counts follow the rounded cumulative capacity (no drift)."""
    check_size(trace.duration_s * 1e3, f"a {trace.duration_s:g} s trace in 1 ms Mahimahi steps",
               "write a shorter trace, or another format")
    period_ms = round(trace.duration_s * 1e3)
    if period_ms < 1:
        raise TraceError(f"a Mahimahi trace needs at least 1 ms, got {trace.duration_s} s")
    ends_s = np.minimum(np.arange(1, period_ms + 1) / 1e3, trace.duration_s)
    cum = np.interp(ends_s, trace._times, trace._cum)
    packets = np.diff(np.round(cum / PACKET_BITS).astype(np.int64), prepend=0)
    if packets.sum() == 0:
        raise TraceError("the trace delivers less than half a packet: nothing to write as Mahimahi")
    check_size(float(packets.sum()), "a Mahimahi file of one line per packet",
               "write a shorter or slower trace, or another format")
    if packets[-1] == 0:  # the last timestamp is Mahimahi's period: move the last packet there
        packets[np.flatnonzero(packets)[-1]] -= 1
        packets[-1] = 1
    stamps = np.repeat(np.arange(1, period_ms + 1), packets)
    return "".join(f"{s}\n" for s in stamps.tolist())


_WRITERS = {"csv": _write_csv, "mahimahi": _write_mahimahi, "mbps-log": _write_mbps_log}

# The formats: a new one is a parser, a writer and a line in `detect_format`, all in this file;
# the config, `sim.traces` and the emulator take their names from here (`names.TRACE_FORMATS`).
FORMATS = tuple(_PARSERS)
if tuple(_WRITERS) != FORMATS:
    raise RuntimeError(f"trace formats: parsers for {FORMATS}, writers for {tuple(_WRITERS)}")


# ---- arithmetic on segment arrays ------------------------------------------------------------


def _cumulative_bits(times: np.ndarray, rates: np.ndarray) -> np.ndarray:
    """Bits deliverable by each of ``times`` (segment starts, then the end)."""
    return np.concatenate([[0.0], np.cumsum(np.diff(times) * rates * 1e6)])


def _merge(starts: np.ndarray, rates: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Join neighbouring segments of equal rate (the capacity function does not change)."""
    keep = np.concatenate([[True], rates[1:] != rates[:-1]])
    return starts[keep], rates[keep]


def _bin(
    starts: np.ndarray, rates: np.ndarray, duration_s: float, bin_s: float
) -> tuple[np.ndarray, np.ndarray]:
    """Average capacity over bins ``[k*bin_s, (k+1)*bin_s)``; the last bin ends at the duration.

    Bin edges are rounded to the nanosecond so that written files show ``0.3``, not
    ``0.30000000000000004``. Total bits are kept exactly (up to float rounding).
    """
    steps = duration_s / bin_s - 1e-6
    check_size(steps, f"bin_s = {bin_s:g} over {duration_s:g} s",
               f"use bin_s >= {duration_s / MAX_ELEMENTS:.3g}")
    count = max(1, math.ceil(steps))
    edges = np.append(np.round(np.arange(count) * bin_s, 9), duration_s)
    times = np.append(starts, duration_s)
    cum = np.interp(edges, times, _cumulative_bits(times, rates))
    return edges[:-1], np.diff(cum) / np.diff(edges) / 1e6


# ---- checks ----------------------------------------------------------------------------------


def check_size(count: float, what: str, fix: str) -> None:
    """Refuse an array of `count` elements before it is made when above `MAX_ELEMENTS`,
    saying what asked for it, the memory it would take, and `fix`."""
    if not count <= MAX_ELEMENTS:
        raise TraceError(
            f"{what} makes {count:.3g} steps (~{size_text(count * BYTES_PER_ELEMENT)} of "
            f"memory), above the budget of {MAX_ELEMENTS:.3g}: {fix}"
        )


def size_text(nbytes: float) -> str:
    """Bytes for a reader: ``1.3 TiB``."""
    units = ("B", "KiB", "MiB", "GiB", "TiB", "PiB")
    power = 0
    while nbytes >= 1024 and power < len(units) - 1:
        nbytes /= 1024
        power += 1
    return f"{nbytes:.3g} {units[power]}"


def _check_overflow(
    rates: np.ndarray, hold: float, duration_s: float, scale: float, floor_mbps: float
) -> None:
    """Refuse rates whose bits over the trace do not fit a float (``floor_mbps = 1e308``)."""
    top = max(float(rates.max()), hold)
    if not math.isfinite(top * 1e6 * duration_s):
        raise TraceError(
            f"rates up to {top:.3g} Mbit/s (after scale = {scale:g}, floor_mbps = "
            f"{floor_mbps:g}) over {duration_s:g} s: their bits overflow a float"
        )


def _check_options(scale: float, bin_s: float | None, end: str, floor_mbps: float) -> None:
    if not (scale > 0 and math.isfinite(scale)):
        raise TraceError(f"scale must be a positive number, got {scale}")
    if bin_s is not None:
        _check_bin(bin_s)
    _check_end(end)
    if not (floor_mbps >= 0 and math.isfinite(floor_mbps)):
        raise TraceError(f"floor_mbps must be >= 0, got {floor_mbps}")


def _check_bin(bin_s: float) -> None:
    if not (bin_s > 0 and math.isfinite(bin_s)):
        raise TraceError(f"bin_s must be a positive number of seconds, got {bin_s}")


def _check_end(end: str) -> None:
    if end not in ENDS:
        raise TraceError(f"unknown end mode {end!r}; choose from {', '.join(ENDS)}")


def _check_shapes(starts: np.ndarray, rates: np.ndarray) -> None:
    if starts.ndim != 1 or starts.shape != rates.shape or starts.size == 0:
        raise TraceError(
            f"need as many starts as rates (at least one), got {starts.shape} and {rates.shape}"
        )


def _check_segments(starts: np.ndarray, rates: np.ndarray, duration_s: float, hold: float) -> None:
    """Refuse segment arrays that do not describe a capacity function, naming the index."""
    _check_shapes(starts, rates)
    if bad := _first(~np.isfinite(starts) | (starts < 0)):
        raise TraceError(f"segment {bad[0]}: start {starts[bad[0]]} is not a time >= 0")
    if starts[0] != 0:
        raise TraceError(f"the first segment must start at 0, got {starts[0]}")
    if bad := _first(np.diff(starts) <= 0):
        i = bad[0] + 1
        raise TraceError(f"segment {i}: start {starts[i]} is not after {starts[i - 1]}")
    if not (math.isfinite(duration_s) and duration_s > starts[-1]):
        raise TraceError(
            f"duration_s must be after the last start {starts[-1]}, got {duration_s}"
        )
    if bad := _first(~np.isfinite(rates) | (rates < 0)):
        raise TraceError(f"segment {bad[0]}: rate {rates[bad[0]]} is not a rate >= 0")
    if not (math.isfinite(hold) and hold >= 0):
        raise TraceError(f"hold_mbps must be a rate >= 0, got {hold}")


def _first(mask: np.ndarray) -> list[int]:
    """``[index]`` of the first true element, or ``[]`` (so ``if bad := _first(...)`` reads)."""
    hits = np.flatnonzero(mask)
    return [int(hits[0])] if hits.size else []


def _check_time(what: str, t: float) -> None:
    if not (t >= 0 and math.isfinite(t)):
        raise ValueError(f"{what} must be a time >= 0, got {t}")


def _check_interval(t0: float, t1: float) -> None:
    _check_time("t0", t0)
    _check_time("t1", t1)
    if t1 < t0:
        raise ValueError(f"the interval ends before it starts: t0={t0}, t1={t1}")
