"""Measured profiles shipped with QuantPipe, and their loaders.

- `accuracy`: output quality per cut, clipping method and bitwidth (``accuracy/MODEL.json``);
- `compute`: seconds per microbatch of each unit and of the codec (``compute/MODEL.json``).
"""

from quantpipe_core.profiles.accuracy import AccuracyProfile, shipped_accuracy_profile
from quantpipe_core.profiles.compute import ComputeProfile, shipped_compute_profile

__all__ = [
    "AccuracyProfile",
    "ComputeProfile",
    "shipped_accuracy_profile",
    "shipped_compute_profile",
]
