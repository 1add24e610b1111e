"""Keep freed CPU memory in the process for reuse (glibc ``mallopt``).

A search step allocates and frees thousands of activation tensors of the same few sizes. glibc
serves blocks above its (dynamic) mmap threshold with fresh ``mmap`` pages and gives freed heap
tops back to the kernel, so the next step faults the same memory in again — and the 1 MiB maps
of the first DARTS/NB201 stage straddle that threshold. Raising the mmap and trim thresholds
keeps those blocks on the heap: ~5 % off a NAS-Bench-201 search step on the 2-core CPU machine,
with the same peak RSS (``benchmarks/README.md``). It is what PyTorch's CPU tuning guide gets by
preloading jemalloc or tcmalloc, without the preload.

The setting is per process and only ever raises thresholds. It is skipped where glibc is not
the allocator, where the user already tunes it (``MALLOC_MMAP_THRESHOLD_``,
``MALLOC_TRIM_THRESHOLD_``, a preloaded allocator), and when ``RAYDNAS_MALLOPT=0``.
"""

from __future__ import annotations

import ctypes
import os
import sys

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 256 << 20
TRIM_THRESHOLD = 1 << 30

_done: bool | None = None


def tune() -> bool:
    """Raise glibc's mmap and trim thresholds once per process; True if they were set."""
    global _done
    if _done is not None:
        return _done
    _done = False
    if not sys.platform.startswith("linux") or os.environ.get("RAYDNAS_MALLOPT", "1") == "0":
        return False
    if any(k in os.environ for k in ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_")) \
            or any(a in os.environ.get("LD_PRELOAD", "") for a in ("jemalloc", "tcmalloc",
                                                                 "mimalloc")):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc (musl, ...)
        return False
    _done = bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and \
        bool(mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD))
    return _done
