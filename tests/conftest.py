"""Shared test set-up: JAX on the CPU, small thread pools, the shared real capture."""

import os
from pathlib import Path

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import pytest
from trained_run import trained_small_run  # noqa: F401 - the session's trained run, a fixture

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture(scope="session")
def bonsai_dir() -> Path:
    """The real bonsai capture in ../shared/data (skips where it is absent)."""
    path = SHARED_DATA / "bonsai"
    if not (path / "sparse" / "0").is_dir():
        pytest.skip(f"real capture not found at {path}")
    return path


@pytest.fixture
def decodes(monkeypatch) -> list:
    """The image paths the pixel cache decodes during the test, in order."""
    from raynerf.data import cache, images  # after conftest has set JAX_PLATFORMS

    calls = []
    original = images.read_image

    def counting(path):
        calls.append(path)
        return original(path)

    monkeypatch.setattr(cache, "read_image", counting)
    return calls
