"""Keep large freed buffers in the process's heap instead of returning them to the system.

glibc serves allocations above its mmap threshold with fresh pages from the kernel and returns
them on free, so every microbatch-sized tensor the codec makes (the rotated copy, the grid
indices, the decoded values) is page-faulted in anew. On an 8 x 197 x 768 float32 tensor the
default scheme decoded at 818 MB/s without and 1,642 MB/s with the buffers kept
(`benchmarks/codec.py --system-heap`, docs/quantization.md).
A stage process that encodes and decodes the same shapes every microbatch gains by keeping them;
the cost is that the heap does not shrink below its largest working set.
"""

from __future__ import annotations

import ctypes
import ctypes.util

M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
KEEP_BYTES = 1 << 30  # allocations up to 1 GiB come from the heap, and the heap keeps 1 GiB free


def keep_large_allocations() -> bool:
    """Raise glibc's mmap and trim thresholds for this process; False where there is no glibc."""
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    try:
        mallopt = ctypes.CDLL(name).mallopt
    except (OSError, AttributeError):
        return False
    return bool(mallopt(M_MMAP_THRESHOLD, KEEP_BYTES)) and bool(
        mallopt(M_TRIM_THRESHOLD, KEEP_BYTES))
