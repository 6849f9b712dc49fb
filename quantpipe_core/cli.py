"""Small argument parsers shared by QuantPipe's command-line tools."""

from __future__ import annotations

import argparse


def int_list(text: str) -> list[int]:
    """``"2,3,4"`` -> ``[2, 3, 4]``, or an argparse error naming the text."""
    try:
        return [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        message = f"expected comma-separated integers, got {text!r}"
        raise argparse.ArgumentTypeError(message) from None


def name_list(text: str) -> list[str]:
    """``"a, b"`` -> ``["a", "b"]``."""
    return [part.strip() for part in text.split(",") if part.strip()]
