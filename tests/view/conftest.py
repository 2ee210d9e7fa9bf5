"""A small run of the built-in scene for the viewer's tests."""

from __future__ import annotations

import socket

import pytest
from small_run import small_config, small_scene

from raynerf.training.loop import train

# The viewed run stops here (of the tests' shared STEPS-step schedule), so that a test
# can resume it and watch the viewer follow.
VIEWED_STEP = 4


@pytest.fixture(scope="module")
def viewed_run(tmp_path_factory):
    """(config, scene folder, workdir, step) of the small scene trained for VIEWED_STEP steps."""
    root = tmp_path_factory.mktemp("viewed")
    scene = small_scene(root)
    config = small_config(root / "cache", "train.checkpoint_every=4")
    train(config, scene, root / "run", show_progress=False, should_stop=lambda step: step >= VIEWED_STEP)
    return config, scene, root / "run", VIEWED_STEP


@pytest.fixture
def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on (at the time of asking)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]
