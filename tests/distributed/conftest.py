"""Fixtures for the multi-host tests: a local Ray instance, a tiny scene, a tiny config.

Every host group here is real: Ray Train worker processes joined by
``jax.distributed`` over gloo on this machine's CPU.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path

import psutil
import pytest

TINY = (
    "train.batch_size=64",
    "model.nerf_net_width=16",
    "model.prop_net_width=8",
    "model.num_prop_samples=16",
    "model.num_nerf_samples=8",
    "train.log_every=1",
    "data.factor=1",
    "train.render_every=0",
)


@pytest.fixture(scope="module")
def ray_local():
    """A local Ray instance for this test module, shut down (with its processes) after it."""
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


@pytest.fixture
def ray_tmpdir(monkeypatch):
    """A private Ray temp dir (short: Ray's socket paths must fit in 107 bytes), so that
    no other Ray on this machine sees the clusters a test starts (``ray start`` and
    ``ray.cluster_utils.Cluster`` record theirs for a bare ``ray.init()`` to attach to),
    nor the test theirs."""
    path = tempfile.mkdtemp(prefix="rn", dir="/tmp")
    monkeypatch.setenv("RAY_TMPDIR", path)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="session")
def tiny_scene(tmp_path_factory) -> tuple[Path, Path]:
    """(scene folder, pixel cache folder): 8 synthetic 64x48 images, cache already built
    so that worker processes only read it."""
    from raynerf.data.cache import load_pixels
    from raynerf.data.scene import load_scene
    from raynerf.data.synthetic import make_scene

    root = tmp_path_factory.mktemp("tiny_scene")
    scene = make_scene(root / "scene", num_images=8, width=64, height=48)
    config = tiny_config(root / "cache")
    load_pixels(
        load_scene(scene, config.data.factor, config.data.llffhold, config.data.downsample_missing),
        root / "cache",
    )
    return scene, root / "cache"


def tiny_config(cache: Path, *overrides: str):
    from raynerf.config import load_config

    return load_config("tiny", TINY + (f"data.cache_dir={cache}",) + overrides)


def restore_state(workdir: Path, config, step: int):
    """The train state saved at ``step`` in ``workdir``, restored on this process's devices."""
    from raynerf.mesh import make_mesh
    from raynerf.model.mipnerf360 import MipNerf360
    from raynerf.training import checkpoints
    from raynerf.training.optim import make_optimizer
    from raynerf.training.step import create_train_state

    model = MipNerf360(config.model)
    tx = make_optimizer(config.train)
    like = create_train_state(config, model, tx, make_mesh())
    manager = checkpoints.checkpoint_manager(workdir / "checkpoints", 100, async_save=False)
    try:
        _, state = checkpoints.restore(manager, like, None, step=step)
    finally:
        manager.close()
    return state


def checkpoint_steps(workdir: Path) -> list[int]:
    """The finished checkpoints on disk (orbax renames a save into a number when done)."""
    return sorted(int(p.name) for p in (workdir / "checkpoints").iterdir() if p.name.isdigit())


def alive(procs: list[psutil.Process]) -> list[str]:
    """``pid name`` of those of ``procs`` still running (zombies count as gone)."""
    out = []
    for p in procs:
        try:
            if p.is_running() and p.status() != psutil.STATUS_ZOMBIE:
                out.append(f"{p.pid} {p.name()}")
        except psutil.NoSuchProcess:
            pass
    return out


def wait_gone(procs: list[psutil.Process], seconds: float) -> list[str]:
    """Waits up to ``seconds`` for ``procs`` to end; returns those still running."""
    deadline = time.time() + seconds
    while alive(procs) and time.time() < deadline:
        time.sleep(0.5)
    return alive(procs)
