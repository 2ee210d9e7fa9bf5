"""Real host groups on this machine: Ray Train workers joined by jax.distributed (gloo).

Slow (each group starts worker processes, imports jax and compiles the step).
"""

from __future__ import annotations

import os
import signal

import jax
import numpy as np
import pytest
from click.testing import CliRunner
from conftest import checkpoint_steps, restore_state, tiny_config

from raynerf.distributed.hosts import HostGroupSpec
from raynerf.distributed.launch import launch
from raynerf.training.metrics_log import read_metrics

pytestmark = pytest.mark.slow


def _losses(workdir) -> dict[int, float]:
    return {r["step"]: r["loss"] for r in read_metrics(workdir) if "loss" in r}


@pytest.mark.long
def test_one_host_two_devices_equals_two_hosts_one_device(ray_local, tiny_scene, tmp_path):
    """Same seed, same global batch: the same losses and the same final parameters,
    so the two-host run is one SPMD program, not two trainings."""
    scene, cache = tiny_scene
    config = tiny_config(cache, "train.max_steps=20", "train.checkpoint_every=1000")
    runs = {}
    for hosts, devices in [(1, 2), (2, 1)]:
        workdir = tmp_path / f"{hosts}x{devices}"
        result = launch(
            config, scene, workdir, HostGroupSpec(hosts, devices, max_restarts=0), show_progress=False
        )
        assert result.step == 20 and not result.stopped and result.restarts == []
        runs[hosts] = workdir
    one, two = _losses(runs[1]), _losses(runs[2])
    assert sorted(one) == sorted(two) == list(range(1, 21))
    for step in one:
        assert abs(one[step] - two[step]) <= 1e-5 * abs(one[step]), step
    params = [restore_state(runs[h], config, 20).params for h in (1, 2)]
    flat = [jax.tree.leaves(p) for p in params]
    assert len(flat[0]) == len(flat[1]) > 0
    for a, b in zip(*flat):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-7)
    assert one[20] != one[1]  # training moved: not the equality of two untouched inits


def test_killed_host_restarts_from_checkpoint_and_finishes(ray_local, tiny_scene, tmp_path):
    scene, cache = tiny_scene
    config = tiny_config(cache, "train.max_steps=14", "train.checkpoint_every=4", "train.keep_checkpoints=10")
    workdir = tmp_path / "elastic"
    killed = {}

    def kill_host_1(state):
        if not killed and state["attempt"] == 1 and (state["step"] or 0) >= 6 and 1 in state["pids"]:
            killed["pid"], killed["step"] = state["pids"][1], state["step"]
            os.kill(state["pids"][1], signal.SIGKILL)

    result = launch(
        config, scene, workdir, HostGroupSpec(2, 1, max_restarts=2), show_progress=False, on_state=kill_host_1
    )
    assert killed, "the run ended before host 1 could be killed"
    assert result.step == 14 and not result.stopped
    records = read_metrics(workdir)
    restarts = [r for r in records if r.get("event") == "restart"]
    assert len(restarts) == 1 and "host" in restarts[0]["cause"]
    assert restarts[0]["step"] >= killed["step"]
    steps = [r["step"] for r in records if "loss" in r]
    assert steps == list(range(1, 15))  # replayed steps replaced, none missing
    saved = checkpoint_steps(workdir)
    assert saved[-1] == 14 and {4, 8, 12} <= set(saved)
    for step in saved:
        state = restore_state(workdir, config, step)
        assert int(state.step) == step
        assert all(np.isfinite(np.asarray(x)).all() for x in jax.tree.leaves(state.params))


def test_user_error_on_a_host_is_one_error_line(ray_local, tiny_scene, tmp_path):
    """A scene folder without a reconstruction fails inside the workers; the driver
    prints that worker's message as one Error: line, exits 1, and does not restart."""
    from raynerf.cli import main

    _, cache = tiny_scene
    (tmp_path / "data" / "broken").mkdir(parents=True)
    result = CliRunner().invoke(
        main,
        [
            "train",
            "--scene",
            "broken",
            "--data-dir",
            str(tmp_path / "data"),
            "--config",
            "tiny",
            "--workdir",
            str(tmp_path / "run"),
            "--hosts",
            "2",
            "--max-restarts",
            "3",
            "--set",
            f"data.cache_dir={cache}",
            "--set",
            "data.factor=1",
            "--steps",
            "5",
        ],
    )
    assert result.exit_code == 1, result.output
    errors = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and "broken" in errors[0], result.output
    assert "Traceback" not in result.output
    assert "restart 1/" not in result.output  # a user error is not retried
