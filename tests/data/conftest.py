"""Fixtures of the data tests: a small generated scene and a private pixel cache."""

from pathlib import Path

import pytest

from raynerf.data.synthetic import make_scene

SMALL = {"num_images": 16, "width": 160, "height": 120, "num_points": 600}


@pytest.fixture(scope="session")
def small_scene(tmp_path_factory) -> Path:
    """A 16-view, 160 x 120 generated scene (read-only: copy it before breaking it)."""
    return make_scene(tmp_path_factory.mktemp("synthetic") / "small", **SMALL)


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch) -> Path:
    """Every test writes its pixel cache under its own tmp_path, never in ~/.cache."""
    cache = tmp_path / "cache"
    monkeypatch.setenv("RAYNERF_CACHE", str(cache))
    return cache
