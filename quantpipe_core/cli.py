"""Small argument parsers shared by QuantPipe's command-line tools."""

from __future__ import annotations

import argparse
from collections.abc import Callable


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


def bits_list(*, allow_float: bool) -> Callable[[str], list[int]]:
    """An argparse type for ``"2,3,4"``: bitwidths 1..16, and 32 (float32) if `allow_float`."""
    allowed = "1..16 or 32" if allow_float else "1..16"

    def parse(text: str) -> list[int]:
        bits = int_list(text)
        if bad := [b for b in bits if not (1 <= b <= 16 or (allow_float and b == 32))]:
            raise argparse.ArgumentTypeError(f"bitwidths must be {allowed}, got {bad}")
        return bits

    return parse


def codec_list(text: str) -> list[str]:
    """An argparse type for ``"minmax/none/tensor,ds-aciq"``: codec labels, checked, as full
    labels (a left-out part takes the default)."""
    from quantpipe_core.quant import Codec

    try:
        return [Codec.parse(label).label for label in name_list(text)]
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None
