"""Host memory: the allocator settings a raynerf process starts with, and handing
memory the process has freed back to the system."""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import os
import sys

# XLA on the CPU allocates its large buffers afresh for every step. With glibc's
# defaults each one is a new mmap whose pages all fault in again (about 200k faults
# per `tiny` step); keeping freed memory in the heap and backing it with huge pages
# removes nearly all of them (about 20% less CPU time per step).
MALLOC_TUNABLES = (
    "glibc.malloc.hugetlb=1:glibc.malloc.mmap_threshold=4294967296:glibc.malloc.trim_threshold=4294967296"
)


def reexec_with_malloc_tunables(python_args: list[str]) -> None:
    """Re-executes this process as ``python *python_args`` with :data:`MALLOC_TUNABLES`
    added to ``GLIBC_TUNABLES`` (glibc reads them only at start-up). Returns, doing
    nothing, off Linux, where malloc tunables are already set, or with
    ``RAYNERF_NO_REEXEC`` set."""
    tunables = os.environ.get("GLIBC_TUNABLES", "")
    if sys.platform != "linux" or "glibc.malloc" in tunables or os.environ.get("RAYNERF_NO_REEXEC"):
        return
    env = dict(os.environ, GLIBC_TUNABLES=":".join(filter(None, [tunables, MALLOC_TUNABLES])))
    os.execve(sys.executable, [sys.executable, *python_args], env)


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
