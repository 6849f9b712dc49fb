"""Shared test helpers: data shaped like real activations, and the rule for tests that need root.

Markers (pyproject.toml): ``slow`` for tests that run whole pipelines, emulations, benchmarks or
clusters (``pytest -m "not slow"`` runs the rest in under a minute); ``root("what")`` for tests
that need root, which `require_root` skips outside CI and fails in CI.
"""

from __future__ import annotations

import os

import pytest
import torch

ACTIVATION_SHAPE = (4, 33, 96)


def require_root(what: str) -> None:
    """Skip a test that needs root (network namespaces, Mininet), except in CI where it fails."""
    if os.geteuid() == 0:
        return
    if os.environ.get("CI") == "true":
        pytest.fail(f"{what} needs root, and CI=true runs every test")
    pytest.skip(f"{what} needs root; run as root (CI does)")


def pytest_runtest_setup(item: pytest.Item) -> None:
    """A ``root`` test skips (or fails, in CI) before its fixtures build anything."""
    if (mark := item.get_closest_marker("root")) is not None:
        require_root(mark.args[0] if mark.args else item.name)


def laplace_activation(seed: int, shape=ACTIVATION_SHAPE) -> torch.Tensor:
    """A block-output-like tensor: Laplace body."""
    gen = torch.Generator().manual_seed(seed)
    uniform = torch.rand(shape, generator=gen) - 0.5
    return -torch.sign(uniform) * torch.log1p(-2 * uniform.abs())


def gelu_activation(seed: int, shape=ACTIVATION_SHAPE) -> torch.Tensor:
    """A post-GeLU tensor: floor at -0.17, heavy right tail."""
    gen = torch.Generator().manual_seed(seed)
    return torch.nn.functional.gelu(2.0 * torch.randn(shape, generator=gen))


def gauss_activation(seed: int, shape=ACTIVATION_SHAPE) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=gen)
