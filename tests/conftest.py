"""Shared test set-up: JAX on the CPU, small thread pools, the shared real capture."""

import os
from pathlib import Path

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import pytest

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture(scope="session")
def bonsai_dir() -> Path:
    """The real bonsai capture in ../shared/data (skips where it is absent)."""
    path = SHARED_DATA / "bonsai"
    if not (path / "sparse" / "0").is_dir():
        pytest.skip(f"real capture not found at {path}")
    return path
