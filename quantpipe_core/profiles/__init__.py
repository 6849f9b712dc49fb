"""Measured profiles shipped with QuantPipe, and their loaders.

- `accuracy`: output quality per cut, clipping method and bitwidth (``accuracy/MODEL.json``);
- `compute`: seconds per microbatch of each unit and of the codec (``compute/MODEL.json``);
- `lossless`: bytes a lossless coder saves per cut, and its time (``lossless/MODEL.json``).
"""

from quantpipe_core.profiles.accuracy import AccuracyProfile, shipped_accuracy_profile
from quantpipe_core.profiles.compute import ComputeProfile, shipped_compute_profile
from quantpipe_core.profiles.lossless import LosslessProfile, shipped_lossless_profile

__all__ = [
    "AccuracyProfile",
    "ComputeProfile",
    "LosslessProfile",
    "shipped_accuracy_profile",
    "shipped_compute_profile",
    "shipped_lossless_profile",
]
