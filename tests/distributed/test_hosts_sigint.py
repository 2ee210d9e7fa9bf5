"""Ctrl-C on the ``raynerf train`` driver of a 2-host group: every host saves a
checkpoint at one agreed step, the driver says so and exits 130, and no Ray
process is left behind. Slow: the driver runs as its own process with its own Ray."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import psutil
import pytest
from conftest import TINY, checkpoint_steps, restore_state, tiny_config, wait_gone

from raynerf.training.metrics_log import read_metrics

pytestmark = pytest.mark.slow


def _logged_steps(workdir) -> list[int]:
    return [r["step"] for r in read_metrics(workdir) if "loss" in r]


def test_ctrl_c_checkpoints_the_current_step(tiny_scene, tmp_path):
    scene, cache = tiny_scene
    workdir = tmp_path / "run"
    overrides = [
        a for kv in TINY + (f"data.cache_dir={cache}", "train.checkpoint_every=1000") for a in ("--set", kv)
    ]
    command = [
        sys.executable,
        "-c",
        "from raynerf.cli import main; main()",
        "train",
        "--scene",
        scene.name,
        "--data-dir",
        str(scene.parent),
        "--config",
        "tiny",
        "--workdir",
        str(workdir),
        "--hosts",
        "2",
        "--steps",
        "400",
        *overrides,
    ]
    driver = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.time() + 400
        while len(_logged_steps(workdir)) < 3:
            assert driver.poll() is None, driver.communicate()[0]
            assert time.time() < deadline, "training did not start"
            time.sleep(0.5)
        spawned = psutil.Process(driver.pid).children(recursive=True)
        driver.send_signal(signal.SIGINT)
        output, _ = driver.communicate(timeout=300)
    finally:
        if driver.poll() is None:
            driver.kill()
    assert driver.returncode == 130, output
    logged = _logged_steps(workdir)
    saved = checkpoint_steps(workdir)
    assert saved == [logged[-1]] and 3 <= saved[0] < 400, (saved, logged[-5:])
    assert f"stopped at step {saved[0]}" in output
    assert int(restore_state(workdir, tiny_config(cache), saved[0]).step) == saved[0]
    assert wait_gone(spawned, 60) == []  # Ray's workers take seconds to exit, longer on a loaded host
