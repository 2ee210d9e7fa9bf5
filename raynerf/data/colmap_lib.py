"""pycolmap, imported without taking over SIGTERM.

Importing pycolmap installs glog's failure-signal handler, SIGTERM included: it prints a
native stack trace and aborts the process. That would replace whatever the process had
set up for SIGTERM before (the CLI's Ctrl-C handling; JAX's preemption notifier on a
multi-host worker, see :mod:`raynerf.distributed.hosts`), so the process's SIGTERM
disposition is read before the import and put back after it. Its other handlers
(SIGSEGV, SIGABRT, ...) stay: a crash still gets glog's trace.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import signal
from collections.abc import Iterator
from contextlib import contextmanager

SIGACTION_BYTES = 512  # larger than any platform's struct sigaction (152 on x86-64 Linux)


@contextmanager
def kept_signal_disposition(signum: int) -> Iterator[None]:
    """Restores ``signum``'s native disposition (``sigaction``) on exit, whatever the
    body installed. Where libc's ``sigaction`` cannot be called, does nothing."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
        saved = ctypes.create_string_buffer(SIGACTION_BYTES)
        readable = libc.sigaction(signum, None, saved) == 0
    except (OSError, AttributeError):
        readable = False
    try:
        yield
    finally:
        if readable:
            libc.sigaction(signum, saved, None)


with kept_signal_disposition(signal.SIGTERM):
    import pycolmap  # noqa: E402

__all__ = ["kept_signal_disposition", "pycolmap"]
