"""Tests that need root skip outside CI and fail inside it, so CI never hides them."""

from __future__ import annotations

import os

import pytest
from conftest import require_root


def test_root_runs(monkeypatch):
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    require_root("a namespace test")


def test_non_root_skips_with_a_reason(monkeypatch):
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="needs root"):
        require_root("a namespace test")


def test_non_root_fails_in_ci(monkeypatch):
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="CI=true"):
        require_root("a namespace test")
