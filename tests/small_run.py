"""Helpers of the training, eval and demo tests: a tiny scene and a model small enough
to train a few steps in seconds on a shared 2-core CPU."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import jax
import pytest

from raynerf.config import Config, load_config
from raynerf.data.synthetic import make_scene

# 12 views of 160 x 128; at factor 4 the images are 40 x 32 (big enough for SSIM's
# 11-pixel window and LPIPS-alex), and views 0 and 8 are the test views.
SCENE = {"num_images": 12, "width": 160, "height": 128, "num_points": 300}

# The model of the unit tests that compile whole steps: two-layer MLPs, 16 + 16 + 8 samples.
TWO_LAYER_MODEL = (
    "model.nerf_net_depth=2",
    "model.nerf_net_width=16",
    "model.prop_net_width=8",
    "model.prop_net_depth=2",
    "model.bottleneck_width=8",
    "model.viewdir_net_width=8",
    "model.num_prop_samples=16",
    "model.num_nerf_samples=8",
)

# The tiny config shrunk further: a few thousand parameters, 16 + 16 + 8 samples.
SMALL = (
    "model.nerf_net_width=16",
    "model.prop_net_width=16",
    "model.bottleneck_width=16",
    "model.viewdir_net_width=16",
    "model.num_prop_samples=16",
    "model.num_nerf_samples=8",
    "data.factor=4",
    "train.batch_size=64",
    "train.log_every=2",
    "train.render_every=0",
    'eval.lpips_net="none"',
    "eval.chunk_size=512",
    "render.chunk_size=512",
)


# Compiling the train step takes most of a small run's time (minutes on a busy 2-core
# machine), so every test process and subprocess shares a persistent compilation cache,
# and the tests use one model, batch and schedule length (STEPS) wherever they can.
JAX_CACHE = Path(tempfile.gettempdir()) / "raynerf-tests-jax-cache"
CACHE_ENV = {
    "JAX_COMPILATION_CACHE_DIR": str(JAX_CACHE),
    "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
    "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "0",
}
os.environ.update(CACHE_ENV)  # for processes started from the tests (Ray workers too)
jax.config.update("jax_compilation_cache_dir", str(JAX_CACHE))
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)

STEPS = 8


def small_scene(root: Path, name: str = "small") -> Path:
    return make_scene(Path(root) / name, **SCENE)


def small_config(cache_dir: Path, *extra: str, steps: int = STEPS) -> Config:
    return load_config("tiny", SMALL + (f'data.cache_dir="{cache_dir}"', f"train.max_steps={steps}") + extra)


def cli_args(scene: Path, workdir: Path, cache_dir: Path, *extra: str, steps: int = STEPS) -> list[str]:
    """Arguments of ``raynerf train``/``eval`` for the small run."""
    sets = SMALL + (f'data.cache_dir="{cache_dir}"',) + extra
    args = [
        "--scene",
        scene.name,
        "--data-dir",
        str(scene.parent),
        "--config",
        "tiny",
        "--workdir",
        str(workdir),
    ]
    for item in sets:
        args += ["--set", item]
    return args + (["--steps", str(steps)] if steps else [])


def cli_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ, JAX_PLATFORMS="cpu", OMP_NUM_THREADS="1", **CACHE_ENV)
    env.update(extra)
    return env


def run_cli(*args: str, env: dict | None = None, timeout: float = 240) -> subprocess.CompletedProcess:
    """``raynerf ARGS`` in a fresh Python process."""
    return subprocess.run(
        [sys.executable, "-c", "from raynerf.cli import main; main()", *args],
        capture_output=True,
        text=True,
        env=env or cli_env(),
        timeout=timeout,
    )


def popen_cli(*args: str, env: dict | None = None) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", "from raynerf.cli import main; main()", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env or cli_env(),
    )


@pytest.fixture(scope="module")
def scene(tmp_path_factory) -> Path:
    """The small scene, once per test module (import this fixture to use it)."""
    return small_scene(tmp_path_factory.mktemp("scenes"))


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    """A pixel cache folder, once per test module."""
    return tmp_path_factory.mktemp("cache")
