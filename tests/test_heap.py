"""The stage processes' heap setting."""

from __future__ import annotations

import subprocess
import sys


def test_keeping_large_allocations_is_accepted_by_glibc():
    code = "from quantpipe_core.heap import keep_large_allocations as k; print(k())"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "True"
