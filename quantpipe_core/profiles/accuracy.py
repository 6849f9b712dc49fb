"""Accuracy profiles: how a model's output quality falls when the activation at a cut is quantized.

A profile file (JSON, schema ``quantpipe.accuracy/1``, written by ``python -m
quantpipe_core.evaluate``)::

    {
      "schema": "quantpipe.accuracy/1",
      "model": "digits-vit",
      "metric": "top1",                  # the metric policies and the simulator use
      "float32": {"top1": 0.9694},       # every metric's value with no quantization
      "microbatch": 8,                   # inputs per microbatch (clip ranges are per microbatch)
      "samples": 719,                    # inputs scored
      "data": "...",                     # what they were
      "values": {METRIC: {CUT_ID: {CODEC: {BITS: value}}}},
      "stderr": {METRIC: {CUT_ID: {CODEC: {BITS: bootstrap standard error}}}},
      "combined": [...],                 # measured multi-cut cases (see `evaluate`)
      "created": "...", "versions": {...}, "command": "..."
    }

CODEC is a full codec label (``ds-aciq/hadamard/auto``: clipping method, transform, granularity,
and ``/oK`` for K outlier channels; `quantpipe_core.quant.Codec`). BITS keys are strings ("2",
"3", ...) because JSON keys are. Rules (tested):

- between measured bitwidths the value is interpolated linearly, after making the measured
  values non-decreasing in bits (pooling adjacent violators: noise can make 8 bits look a hair
  better than 16), so more bits never predict less accuracy;
- 32 bits is the float32 value; below the lowest measured bitwidth, or at an unmeasured cut or
  method, the answer is ``None``: unknown, never invented;
- with several quantized cuts the drops from float32 add up (an approximation: the errors of two
  links interact; `evaluate --combine` measures how good it is on one case).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from quantpipe_core.names import FLOAT_BITS, values_label
from quantpipe_core.profiles.files import read_profile, shipped_path

SCHEMA = "quantpipe.accuracy/1"


@dataclass(frozen=True)
class AccuracyProfile:
    """A measured accuracy profile; see the module docstring for the file format."""

    data: dict[str, Any]

    @classmethod
    def from_file(cls, path: str | Path) -> AccuracyProfile:
        return cls(read_profile(path, SCHEMA, "accuracy"))

    @property
    def model(self) -> str:
        return self.data["model"]

    @property
    def metric(self) -> str:
        return self.data["metric"]

    def float32(self, metric: str | None = None) -> float:
        return self.data["float32"][metric or self.metric]

    def cuts(self) -> list[str]:
        return list(self.data["values"][self.metric])

    def measured(self, cut: str, method: str, metric: str | None = None) -> dict[int, float]:
        """Measured bitwidth -> value at `cut` with `method` (empty if not measured); a lossless
        coder in the label changes no value."""
        table = self.data["values"][metric or self.metric].get(cut, {}).get(values_label(method),
                                                                            {})
        return {int(bits): table[bits] for bits in sorted(table, key=int)}

    def value(self, cut: str, method: str, bits: int, metric: str | None = None) -> float | None:
        """The metric with the activation at `cut` quantized to `bits` by `method`, or ``None``."""
        if bits == FLOAT_BITS:
            return self.float32(metric)
        points = self.measured(cut, method, metric)
        if not points or bits < min(points):
            return None
        measured_bits = np.array(list(points), dtype=float)
        values = monotone(np.array(list(points.values()), dtype=float))
        if bits > measured_bits[-1]:
            return float(np.interp(bits, [measured_bits[-1], FLOAT_BITS],
                                   [values[-1], max(values[-1], self.float32(metric))]))
        return float(np.interp(bits, measured_bits, values))

    def combined(
        self, bits_at_cut: Mapping[str, int], method: str | Mapping[str, str],
        metric: str | None = None,
    ) -> float | None:
        """The metric with every cut in `bits_at_cut` quantized with `method` (a codec label, or
        one per cut): float32 minus the summed drops."""
        reference = self.float32(metric)
        total = reference
        for cut, bits in bits_at_cut.items():
            value = self.value(cut, method if isinstance(method, str) else method[cut], bits,
                               metric)
            if value is None:
                return None
            total -= reference - value
        return max(total, 0.0)


def monotone(values: np.ndarray) -> np.ndarray:
    """The closest non-decreasing sequence (pool adjacent violators, equal weights)."""
    blocks: list[list[float]] = []  # [mean, count]
    for v in values:
        blocks.append([float(v), 1.0])
        while len(blocks) > 1 and blocks[-2][0] > blocks[-1][0]:
            mean, count = blocks.pop()
            previous = blocks[-1]
            previous[0] = (previous[0] * previous[1] + mean * count) / (previous[1] + count)
            previous[1] += count
    return np.concatenate([np.full(int(count), mean) for mean, count in blocks])


def shipped_accuracy_profile(model: str) -> AccuracyProfile | None:
    """The profile shipped for a built-in model, or ``None`` (e.g. ``vit-base``: unknown)."""
    path = shipped_path("accuracy", model)
    return None if path is None else AccuracyProfile.from_file(path)
