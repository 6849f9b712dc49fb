"""Compute profiles: measured seconds per microbatch of each unit and of the codec at each cut.

A profile file (JSON, schema ``quantpipe.compute/1``, written by ``python -m
quantpipe_core.profile``)::

    {
      "schema": "quantpipe.compute/1",
      "model": "vit-base",
      "tokens": 197,                       # sequence length measured with
      "machine": {...},                    # CPU model, cores, torch version
      "units": {THREADS: {MICROBATCH: {UNIT: median seconds}}},
      "codec": {THREADS: {MICROBATCH: {KIND: {CODEC: {BITS: {"encode_s": s, "decode_s": s}}}}}},
      "codec_measured_at": {KIND: CUT_ID},
      "repeats": 5, "created": "...", "command": "..."
    }

CODEC is a full codec label (``ds-aciq/hadamard/auto``; `quantpipe_core.quant.Codec`). KIND is
the kind of cut (``embed``, ``attn``, ``gelu``, ``out``): every cut of a kind carries
tensors of the same shapes, so the codec is timed once per kind, on the real activation at the
cut named in ``codec_measured_at``, and applies to every cut of that kind.

Rules: a microbatch size between or beyond measured ones is interpolated or extrapolated
linearly (time ~ fixed cost + cost per input); an unmeasured bitwidth takes the codec time of the
nearest measured one (the higher on a tie: codec time depends little on the bitwidth); the
thread count must be one that was measured;
``speed`` divides every time (a device twice as fast as the profiling machine has speed 2).
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from quantpipe_core.names import values_label
from quantpipe_core.profiles.files import DeviceProfile, shipped_path

SCHEMA = "quantpipe.compute/1"


def cut_kind(cut: str) -> str:
    """``blockN.attn`` -> ``attn``; ``embed`` -> ``embed``."""
    return cut.rpartition(".")[2]


@dataclass(frozen=True)
class ComputeProfile(DeviceProfile):
    """A measured compute profile; see the module docstring for the file format."""

    SCHEMA = SCHEMA
    KIND = "compute"

    @property
    def unit_names(self) -> list[str]:
        threads = next(iter(self.data["units"].values()))
        return list(next(iter(threads.values())))

    def unit_s(self, unit: str, microbatch: int, threads: int = 1) -> float:
        """Seconds one microbatch of `microbatch` inputs spends in `unit`."""
        table = self._threads(self.data["units"], threads)
        if unit not in next(iter(table.values())):
            raise ValueError(f"compute profile of {self.model} has no unit {unit!r}")
        return self._per_microbatch(table, microbatch, lambda row: row[unit])

    def stage_s(self, units: Sequence[str], microbatch: int, threads: int = 1) -> float:
        """Seconds one microbatch spends in a stage made of `units`."""
        return sum(self.unit_s(u, microbatch, threads) for u in units)

    def encode_s(
        self, cut: str, method: str, bits: int, microbatch: int, threads: int = 1
    ) -> float:
        """Seconds to clip, quantize and pack the carry at `cut` (32 bits: framing and CRC); a
        lossless coder in `method`'s label is left out (its time: `profiles.lossless`)."""
        return self._codec(cut, method, bits, microbatch, threads, "encode_s")

    def decode_s(
        self, cut: str, method: str, bits: int, microbatch: int, threads: int = 1
    ) -> float:
        """Seconds to check and unpack the carry at `cut`."""
        return self._codec(cut, method, bits, microbatch, threads, "decode_s")

    def _codec(
        self, cut: str, method: str, bits: int, microbatch: int, threads: int, key: str
    ) -> float:
        table = self._threads(self.data["codec"], threads)
        kind, method = cut_kind(cut), values_label(method)

        def pick(row: dict[str, Any]) -> float:
            try:
                by_bits = row[kind][method]
            except KeyError:
                raise ValueError(
                    f"compute profile of {self.model} has no codec time for cut kind {kind!r}, "
                    f"method {method!r}"
                ) from None
            nearest = min(by_bits, key=lambda measured: (abs(int(measured) - bits), -int(measured)))
            return by_bits[nearest][key]

        return self._per_microbatch(table, microbatch, pick)

    def _threads(self, table: dict[str, Any], threads: int) -> dict[str, Any]:
        if str(threads) not in table:
            raise ValueError(
                f"compute profile of {self.model} was measured with {', '.join(table)} torch "
                f"threads, not {threads}"
            )
        return table[str(threads)]

    def _per_microbatch(self, table: dict[str, Any], microbatch: int, pick: Any) -> float:
        sizes = sorted(int(size) for size in table)
        times = [pick(table[str(size)]) for size in sizes]
        if len(sizes) == 1:
            seconds = times[0] * microbatch / sizes[0]
        elif microbatch in sizes:
            seconds = times[sizes.index(microbatch)]
        else:
            # in Python's floats: a BLAS fit's last bits depend on the CPU's kernels, and
            # simulated times must not (the fingerprints are byte-exact)
            slope, intercept = statistics.linear_regression(sizes, times)
            seconds = max(intercept + slope * microbatch, 0.0)
        return float(seconds) / self.speed


def shipped_compute_profile(model: str) -> ComputeProfile | None:
    """The profile shipped for a built-in model, or ``None``."""
    path = shipped_path("compute", model)
    return None if path is None else ComputeProfile.from_file(path)
