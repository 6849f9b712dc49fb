"""Numbers as the commands print them and the report pages write them, in one place so that a
share or a missing value reads the same everywhere."""

from __future__ import annotations

from typing import Any

MISSING = "n/a"  # a figure a run did not measure (no accuracy profile, no latency sample)


def cell(value: Any, digits: int) -> str:
    """`value` with `digits` decimals (``str(value)`` for 0: counts), or n/a if it is None."""
    if value is None:
        return MISSING
    return f"{value:.{digits}f}" if digits else str(value)


def percent(share: float | None, digits: int | None = None) -> str:
    """A share as a percentage: 0.9 -> ``90 %`` (shortest form), or with `digits` decimals
    (``90.0 %``); n/a if it is None."""
    if share is None:
        return MISSING
    return f"{100 * share:g} %" if digits is None else f"{100 * share:.{digits}f} %"


def count(n: int, noun: str) -> str:
    """``1 trace``, ``2 traces``."""
    return f"{n} {noun}" + ("" if n == 1 else "s")
