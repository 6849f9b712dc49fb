"""How profile files are named: ``MODEL.json`` for per-tensor ranges, ``MODEL-token.json`` else."""

from __future__ import annotations


def profile_stem(model: str, granularity: str = "tensor") -> str:
    """File name (without ``.json``) of `model`'s profile measured with `granularity`."""
    return model if granularity == "tensor" else f"{model}-{granularity}"
