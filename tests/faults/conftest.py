"""The fault suite's shared run: one small scene, one pixel cache and one workdir trained
once per session (STEPS steps, a checkpoint every 4), which each test copies before
damaging it, so that no test trains from scratch unless its promise needs it."""

from __future__ import annotations

import shutil
from pathlib import Path

import jax
import numpy as np
import pytest
from click.testing import CliRunner
from small_run import STEPS, cli_args, small_config, small_scene

from raynerf.cli import main
from raynerf.mesh import make_mesh
from raynerf.training.checkpoints import load_trained_params

EXTRA = ("train.checkpoint_every=4",)


@pytest.fixture(scope="session")
def fault_scene(tmp_path_factory) -> Path:
    return small_scene(tmp_path_factory.mktemp("fault-scenes"))


@pytest.fixture(scope="session")
def fault_cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("fault-cache")


@pytest.fixture(scope="session")
def trained(fault_scene, fault_cache, tmp_path_factory) -> Path:
    """A workdir trained straight through to step STEPS (checkpoints 4 and 8). Read-only:
    use ``run_copy``."""
    workdir = tmp_path_factory.mktemp("fault-runs") / "straight"
    result = CliRunner().invoke(main, ["train", *cli_args(fault_scene, workdir, fault_cache, *EXTRA)])
    assert result.exit_code == 0, result.output
    return workdir


@pytest.fixture
def run_copy(trained, tmp_path) -> Path:
    """A private copy of the trained workdir, free to damage."""
    return Path(shutil.copytree(trained, tmp_path / "run"))


@pytest.fixture(scope="session")
def config(fault_cache):
    return small_config(fault_cache, *EXTRA)


@pytest.fixture(scope="session")
def straight_params(trained, fault_scene, config):
    """The parameters of the uninterrupted run at step STEPS, as numpy arrays."""
    step, params = load_trained_params(config, fault_scene, trained, make_mesh())
    assert step == STEPS
    return [np.asarray(x) for x in jax.tree.leaves(params)]
