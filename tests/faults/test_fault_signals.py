"""Ctrl-C and SIGTERM (what a preempted VM, Ray or a job scheduler sends).

Promises: SIGINT or SIGTERM stops `raynerf train` between two steps with a checkpoint
at the step it reached, exit code 130 and no traceback, and running again resumes;
SIGTERM stops `raynerf eval` cleanly, without pycolmap's native "*** Aborted at"
stack trace and without writing a partial metrics.json.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import pytest
from small_run import cli_args, popen_cli, small_config

from raynerf.mesh import make_mesh
from raynerf.training.checkpoints import load_trained_params
from raynerf.training.metrics_log import read_metrics


def _wait_for(condition, proc, timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while not condition() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.1)
    assert proc.poll() is None, proc.stdout.read()


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_train_stops_with_a_checkpoint_at_the_current_step(fault_scene, fault_cache, tmp_path, signum):
    workdir = tmp_path / "run"
    steps = 400  # far more than run before the signal
    proc = popen_cli("train", *cli_args(fault_scene, workdir, fault_cache, "train.log_every=1", steps=steps))
    _wait_for(lambda: read_metrics(workdir), proc)
    proc.send_signal(signum)
    output, _ = proc.communicate(timeout=120)
    assert proc.returncode == 130, output
    assert "Traceback" not in output and "Aborted at" not in output
    stopped = max(r["step"] for r in read_metrics(workdir) if "event" not in r)
    assert f"stopped at step {stopped}" in output
    config = small_config(fault_cache, steps=steps)
    step, _ = load_trained_params(config, fault_scene, workdir, make_mesh())
    assert step == stopped < steps


def test_sigterm_stops_eval_without_a_native_trace(run_copy, fault_scene, fault_cache):
    # Small chunks: the render of the two test views takes seconds, not a fraction of one,
    # so that the signal arrives while eval still has work to stop.
    proc = popen_cli("eval", *cli_args(fault_scene, run_copy, fault_cache, "eval.chunk_size=32", steps=0))
    _wait_for(lambda: (run_copy / "eval").is_dir(), proc)  # checkpoint loaded, rendering begins
    proc.send_signal(signal.SIGTERM)
    output, _ = proc.communicate(timeout=120)
    assert proc.returncode != 0, output
    assert "Aborted at" not in output and "SIGTERM received" not in output, output
    assert "Traceback" not in output, output
    assert not (run_copy / "eval" / "metrics.json").exists()


SWALLOWING_FINALISER = """
import gc, os, signal, sys, time
from raynerf.cli import treat_sigterm_as_ctrl_c

treat_sigterm_as_ctrl_c()

class Finalised:
    def __del__(self):
        os.kill(os.getpid(), signal.SIGTERM)
        for _ in range(100_000):  # the handler runs in here: its KeyboardInterrupt is swallowed
            pass

try:
    Finalised()
    gc.collect()
    print("finaliser done", flush=True)
    time.sleep(20)
    print("never interrupted", flush=True)
except KeyboardInterrupt:
    print("interrupted", flush=True)
"""


def test_an_interrupt_raised_inside_a_finaliser_is_not_lost():
    """A SIGTERM (or Ctrl-C) whose KeyboardInterrupt lands in a finaliser or a
    garbage-collector callback (seen with JAX's, during eval) still stops the command,
    and Python's "Exception ignored" traceback is not printed."""
    proc = subprocess.run(
        [sys.executable, "-c", SWALLOWING_FINALISER], capture_output=True, text=True, timeout=60
    )
    assert proc.stdout.split() == ["finaliser", "done", "interrupted"], proc.stdout + proc.stderr
    assert "Exception ignored" not in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
