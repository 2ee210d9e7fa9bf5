"""Host memory: handing memory the process has freed back to the system."""

from __future__ import annotations

import ctypes
import ctypes.util
import functools


@functools.cache
def _malloc_trim():
    """glibc's ``malloc_trim``, or None where the C library has none (macOS, musl)."""
    path = ctypes.util.find_library("c")
    trim = getattr(ctypes.CDLL(path), "malloc_trim", None) if path else None
    if trim is not None:
        trim.argtypes, trim.restype = [ctypes.c_size_t], ctypes.c_int
    return trim


def release_free_memory() -> bool:
    """Returns the heap's free pages to the system (``malloc_trim(0)``); True if it did.

    The ``raynerf`` command keeps freed memory in the heap (its allocator tunables), so
    that XLA's per-step buffers do not fault in again every step; but what the XLA
    compiler freed stays there too, and would add to the training step's peak (about
    0.36 GiB for the `360` step on a CPU). Call it once after compiling.
    """
    trim = _malloc_trim()
    return bool(trim(0)) if trim is not None else False
