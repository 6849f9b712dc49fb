"""Argument types, one-line errors and the --out check shared by QuantPipe's command-line tools."""

from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import NoReturn


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
    from quantpipe_core.names import bits_rule, is_bits  # cli is a leaf: names imports trace

    def parse(text: str) -> list[int]:
        bits = int_list(text)
        if bad := [b for b in bits if not is_bits(b, allow_float=allow_float)]:
            rule = bits_rule(allow_float=allow_float)
            raise argparse.ArgumentTypeError(f"bitwidths must be {rule}, got {bad}")
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


# ----- one-line errors ------------------------------------------------------------------------

MESSAGE_CHARS = 500  # longest error message printed; bad input quoted in it may be megabytes
ECHO_CHARS = 80  # of bad input quoted in an error message
DEBUG_ENV = "QUANTPIPE_DEBUG"
DEBUG_HINT = f"--debug or {DEBUG_ENV}=1 prints the traceback"


class ArgumentParser(argparse.ArgumentParser):
    """argparse's parser, but a bad argument gets one line (``prog: error: ...``, exit 2)
    instead of the usage block: every command answers bad input the same way."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {one_line(message)} (see --help)\n")


def one_line(text: str, limit: int = MESSAGE_CHARS) -> str:
    """`text` on one line (newlines folded), cut to `limit` characters."""
    return cut(" ".join(text.split()), limit)


def cut(text: str, limit: int) -> str:
    """`text`, or its first characters and "..." if it is longer than `limit`."""
    return text if len(text) <= limit else f"{text[: limit - 3]}..."


def echo(value: object, limit: int = ECHO_CHARS) -> str:
    """``repr(value)`` cut to `limit` characters: an error message quotes bad input, it does
    not flood the terminal with a 5 MB line."""
    return cut(repr(value), limit)


def fail(prog: str, message: str, *, user_error: BaseException | None = None,
         debug: bool = False) -> int:
    """Print ``prog: message`` on one line to stderr; the exit status of refused input (2).
    `user_error`, raised by the user's code, has its traceback printed first under `debug`,
    else the line says how to see it."""
    if user_error is not None and debug:
        traceback.print_exception(user_error)
    hint = f" ({DEBUG_HINT})" if user_error is not None and not debug else ""
    print(f"{prog}: {one_line(message)}{hint}", file=sys.stderr)
    return 2


def add_debug_option(parser: argparse.ArgumentParser) -> None:
    """``--debug``, for commands that run the user's code (a policy class)."""
    parser.add_argument("--debug", action="store_true",
                        help="on an error in your code, print its full traceback "
                        f"(also {DEBUG_ENV}=1)")


def debugging(args: argparse.Namespace) -> bool:
    """True if `--debug` was given or ``QUANTPIPE_DEBUG=1``."""
    return getattr(args, "debug", False) or os.environ.get(DEBUG_ENV) == "1"


# ----- numbers --------------------------------------------------------------------------------


def int_at_least(minimum: int) -> Callable[[str], int]:
    """An argparse type: an integer >= `minimum`."""

    def parse(text: str) -> int:
        try:
            number = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if number < minimum:
            raise argparse.ArgumentTypeError(f"must be >= {minimum}, got {number}")
        return number

    return parse


positive_int = int_at_least(1)
nonnegative_int = int_at_least(0)


def positive_float(text: str) -> float:
    """An argparse type: a finite number > 0 (nan, inf, 0 and below are refused)."""
    try:
        number = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not (math.isfinite(number) and number > 0):
        raise argparse.ArgumentTypeError(f"must be a finite number > 0, got {text}")
    return number


# ----- output folders -------------------------------------------------------------------------


class OutError(ValueError):
    """An output folder that cannot be written; the message names it."""


def check_out_dir(path: Path) -> Path:
    """`path` if it is a folder this process can write into, or can create; else `OutError`.
    Commands call it before any long work, so a bad ``--out`` costs nothing. Writability is
    tried, not read from permission bits (root passes those, yet cannot write in /proc)."""
    try:
        if path.exists() and not path.is_dir():
            raise OutError(f"{path} exists and is not a folder")
        existing = next(p for p in (path, *path.parents) if p.exists())
        if not existing.is_dir():
            raise OutError(f"cannot create {path}: {existing} is a file, not a folder")
        tempfile.TemporaryFile(dir=existing).close()
    except OSError as error:
        raise OutError(f"cannot write into {path}: {error.strerror or error}") from None
    return path


def writable_file(text: str) -> Path:
    """An argparse type for a file to write (a plot): not a folder, in a folder that
    `check_out_dir` accepts, so that the command fails before its work, not after."""
    path = Path(text)
    if path.is_dir():
        raise argparse.ArgumentTypeError(f"{path} is a folder, not a file")
    writable_out_dir(str(path.parent))
    return path


def writable_out_dir(text: str) -> Path:
    """An argparse type for ``--out``: `check_out_dir` on the path."""
    try:
        return check_out_dir(Path(text))
    except OutError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def add_run_options(p: argparse.ArgumentParser) -> None:
    """The options of a real run that a stage and the launcher both take."""
    p.add_argument("--out", type=writable_out_dir, default=None,
                   help="folder for the results (rank 0 writes the four files, every rank its "
                   "rankR.json)")
    p.add_argument("--timeout-s", type=positive_float, default=30.0,
                   help="longest wait for any receive before the run ends with an error "
                   "(default 30)")
    p.add_argument("--duration", type=positive_float, default=None,
                   help="seconds of input (default run.duration_s; 0 there = one pass of the "
                   "data set)")
    p.add_argument("--microbatches", type=positive_int, default=None,
                   help="at most this many microbatches (loops over the data set if needed)")
