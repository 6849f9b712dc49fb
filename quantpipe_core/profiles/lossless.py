"""Lossless profiles: how much a lossless coder shortens a link's frames, and what it costs.

With a coder (``+zstd`` in a codec label) a frame's size depends on the data, so the simulator
cannot take it from the shapes as it does for bit-planes. It takes it from a profile measured on
real microbatches (schema ``quantpipe.lossless/1``, written by ``python -m
quantpipe_core.lossless_profile``)::

    {
      "schema": "quantpipe.lossless/1",
      "model": "minilm", "coder": "zstd",
      "microbatch": 8, "tokens": 32,          # of each measured microbatch
      "samples": 128, "skip": 0,              # the inputs measured (after the first `skip`)
      "machine": {...},
      "cuts": {CUT: {CODEC: {BITS: {"ratio": r, "ratio_max": r, "encode_s": s, "decode_s": s}}}},
      "created": "...", "command": "..."
    }

CODEC is a values label (`quantpipe_core.names.values_label`, no coder). ``ratio`` is the mean
over the microbatches of the coded frame's bytes over the frame's exact worst case (its
bit-planes, `carry_wire_size`), ``ratio_max`` the largest; ``encode_s`` and ``decode_s`` are
the median seconds the coder adds to one microbatch's encode and decode (coded path minus the
bit-planes', at least 0) on the profiling machine.

Rules: a frame at 32 bits is float32, which no coder touches (ratio 1, no time); an unmeasured
bitwidth takes the nearest measured one (the higher on a tie); times scale with the microbatch
size and divide by the device's ``speed``; ratios do not depend on either.
"""

from __future__ import annotations

from dataclasses import dataclass

from quantpipe_core.names import FLOAT_BITS, codec_parts, values_label
from quantpipe_core.profiles.files import DeviceProfile, shipped_path

SCHEMA = "quantpipe.lossless/1"


@dataclass(frozen=True)
class LosslessProfile(DeviceProfile):
    """A measured lossless profile; see the module docstring for the file format."""

    SCHEMA = SCHEMA
    KIND = "lossless"

    def measures(self, codec: str) -> bool:
        """Whether this profile measured `codec`'s coder and values label at every cut."""
        coder = codec_parts(codec).get("lossless", "none")
        cuts = self.data["cuts"].values()
        return coder == self.data["coder"] and all(values_label(codec) in c for c in cuts)

    def ratio(self, cut: str, codec: str, bits: int) -> float:
        """Mean bytes of a coded frame at `cut` over its exact worst case."""
        return 1.0 if bits == FLOAT_BITS else self._entry(cut, codec, bits)["ratio"]

    def encode_s(self, cut: str, codec: str, bits: int, microbatch: int) -> float:
        """Seconds the coder adds to encoding one microbatch's frame at `cut`."""
        return self._seconds(cut, codec, bits, microbatch, "encode_s")

    def decode_s(self, cut: str, codec: str, bits: int, microbatch: int) -> float:
        """Seconds the coder adds to decoding one microbatch's frame at `cut`."""
        return self._seconds(cut, codec, bits, microbatch, "decode_s")

    def _seconds(self, cut: str, codec: str, bits: int, microbatch: int, key: str) -> float:
        if bits == FLOAT_BITS:
            return 0.0
        per_input = self._entry(cut, codec, bits)[key] / self.data["microbatch"]
        return per_input * microbatch / self.speed

    def _entry(self, cut: str, codec: str, bits: int) -> dict[str, float]:
        coder = codec_parts(codec).get("lossless", "none")
        if coder != self.data["coder"]:
            raise ValueError(f"the lossless profile of {self.model} measured coder "
                             f"{self.data['coder']!r}, not {coder!r}")
        by_bits = self.data["cuts"].get(cut, {}).get(values_label(codec))
        if not by_bits:
            raise ValueError(
                f"the lossless profile of {self.model} has no cut {cut!r} with codec "
                f"{values_label(codec)!r}; measure it with python -m "
                f"quantpipe_core.lossless_profile --model {self.model} --codecs "
                f"{values_label(codec)}"
            )
        nearest = min(by_bits, key=lambda measured: (abs(int(measured) - bits), -int(measured)))
        return by_bits[nearest]


def shipped_lossless_profile(model: str) -> LosslessProfile | None:
    """The profile shipped for a built-in model, or ``None``."""
    path = shipped_path("lossless", model)
    return None if path is None else LosslessProfile.from_file(path)
