"""Meshes this test process lacks: stand-ins for the planning functions, and scripts run
in a subprocess that has several CPU devices."""

import os
import subprocess
import sys
import types
from pathlib import Path

import numpy as np


def fake_mesh(platform: str, count: int):
    """Only what the planning functions read: ``mesh.devices`` and each one's ``platform``."""
    device = types.SimpleNamespace(platform=platform)
    return types.SimpleNamespace(devices=np.array([device] * count, dtype=object))


def run_on_cpu_devices(script: str, test_file: str, count: int = 2) -> None:
    """Runs ``script`` with JAX on ``count`` CPU devices, the test file's folder and the
    tests folder importable; it must exit cleanly and print ``same``."""
    here = Path(test_file).resolve().parent
    env = dict(
        os.environ,
        XLA_FLAGS=f"--xla_force_host_platform_device_count={count}",
        JAX_PLATFORMS="cpu",
        PYTHONPATH=os.pathsep.join([str(here), str(Path(__file__).parent)]),
    )
    result = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0 and "same" in result.stdout, result.stderr[-3000:]
