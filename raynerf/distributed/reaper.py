"""A watchdog that ends the private local Ray instance when its driver dies.

``ray.init()`` ties the GCS server and the raylet to the driver, but not everything
the raylet starts: after a ``SIGKILL`` of the driver Ray's dashboard and runtime-env
agents stay behind (they try to tell the dead GCS that the raylet died, and wait).
:func:`start` runs this module as a small separate process, in its own session so
that a Ctrl-C at the terminal does not reach it. It keeps a list of the driver's
descendants (pid and start time, refreshed every :data:`POLL_SECONDS`), and when its
stdin (a pipe only the driver holds) reaches end of file, because the driver closed
it or died, it ends the processes of that list that are still running (those that
were already there when it started are not on it): ``SIGTERM``,
then ``SIGKILL`` after :data:`GRACE_SECONDS`. A process whose pid was reused since is
left alone (its start time differs).

Usage: ``python -m raynerf.distributed.reaper DRIVER_PID`` (what :func:`start` runs).
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading

import psutil

POLL_SECONDS = 0.25
GRACE_SECONDS = 3.0


def start() -> subprocess.Popen:
    """Starts the watchdog for this process; close its ``stdin`` (:func:`stop`) at the end."""
    return subprocess.Popen(
        [sys.executable, "-m", "raynerf.distributed.reaper", str(os.getpid())],
        stdin=subprocess.PIPE,
        start_new_session=True,
    )


def stop(watchdog: subprocess.Popen, timeout: float = 30.0) -> None:
    """Tells the watchdog that the driver is done (it ends what is left, then exits)."""
    if watchdog.stdin is not None:
        watchdog.stdin.close()
    try:
        watchdog.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        watchdog.kill()


def descendants(pid: int) -> dict[int, float]:
    """``pid -> start time`` of every living descendant of ``pid`` (empty if it is gone)."""
    try:
        children = psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return {}
    found = {}
    for child in children:
        try:
            found[child.pid] = child.create_time()
        except psutil.NoSuchProcess:
            pass
    return found


def end_processes(known: dict[int, float], grace: float = GRACE_SECONDS) -> list[int]:
    """Ends those of ``known`` (pid -> start time) that still run; returns their pids."""
    procs = []
    for pid, created in known.items():
        try:
            proc = psutil.Process(pid)
            if proc.create_time() == created and proc.status() != psutil.STATUS_ZOMBIE:
                procs.append(proc)
        except psutil.NoSuchProcess:
            pass
    for proc in procs:
        try:
            proc.terminate()
        except psutil.NoSuchProcess:
            pass
    _, alive = psutil.wait_procs(procs, timeout=grace)
    for proc in alive:
        try:
            proc.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(alive, timeout=grace)
    return [p.pid for p in procs]


def watch(driver_pid: int) -> None:
    """Tracks ``driver_pid``'s descendants until stdin closes, then ends them."""
    closed = threading.Event()

    def wait_for_eof() -> None:
        while sys.stdin.buffer.read(4096):
            pass
        closed.set()

    threading.Thread(target=wait_for_eof, daemon=True).start()
    before = descendants(driver_pid).items()  # the driver's other children are not Ray's
    known: dict[int, float] = {}

    def look() -> None:
        known.update((pid, t) for pid, t in descendants(driver_pid).items() if (pid, t) not in before)
        known.pop(os.getpid(), None)

    while not closed.wait(POLL_SECONDS):
        look()
    look()  # a driver that closed stdin itself is still there
    end_processes(known)


if __name__ == "__main__":
    watch(int(sys.argv[1]))
