"""Folders that cannot be written.

Promise: an unwritable workdir, checkpoint folder, eval/ or render/ folder, or a
read-only file system, is one ``Error:`` line naming the folder, given before any
compiling, never a traceback. CI runs as root, whose capabilities override file
permissions, so the commands run under ``setpriv`` with every capability dropped
(root then obeys the permission bits of the files it owns).
"""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from fault_helpers import one_error_line
from small_run import cli_args, cli_env

from raynerf.cli import options
from raynerf.errors import RaynerfError

DROP_CAPS = ["setpriv", "--bounding-set=-all", "--inh-caps=-all", "--"]


def _without_override() -> list[str]:
    """The command prefix that makes file permissions apply; skips where none can."""
    if os.geteuid() != 0:
        return []
    if shutil.which("setpriv") is None:
        pytest.skip("setpriv is missing: cannot drop root's permission override")
    with tempfile.TemporaryDirectory() as folder:
        os.chmod(folder, 0o555)
        probe = [sys.executable, "-c", f"open({os.path.join(folder, 'x')!r}, 'w')"]
        if subprocess.run(DROP_CAPS + probe, capture_output=True).returncode == 0:
            pytest.skip("setpriv did not drop root's permission override here")
    return DROP_CAPS


def _raynerf(prefix: list[str], *args: str) -> subprocess.CompletedProcess:
    command = [*prefix, sys.executable, "-c", "from raynerf.cli import main; main()", *args]
    return subprocess.run(command, capture_output=True, text=True, env=cli_env(), timeout=240)


def _read_only(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    path.chmod(0o555)
    return path


def test_unwritable_folders_are_one_error_line(run_copy, fault_scene, fault_cache, tmp_path):
    prefix = _without_override()
    fresh = _read_only(tmp_path / "locked") / "run"
    cases = [  # (command, workdir, folder to lock, what the error names)
        ("train", tmp_path / "ro-workdir", tmp_path / "ro-workdir", "workdir"),
        ("train", fresh, None, "workdir"),
        ("train", run_copy, run_copy / "checkpoints", "checkpoint folder"),
        ("eval", run_copy, run_copy / "eval", "eval folder"),
        ("render", run_copy, run_copy / "render", "render folder"),
    ]
    try:
        for command, workdir, lock, what in cases:
            if lock is not None:
                _read_only(lock)
            steps = 8 if command == "train" else 0
            result = _raynerf(prefix, command, *cli_args(fault_scene, workdir, fault_cache, steps=steps))
            assert result.returncode == 1, (command, result.stdout, result.stderr)
            line = one_error_line(result.stdout + result.stderr)
            named = lock if lock is not None else workdir
            assert f"{what} {named}" in line and "permission denied" in line, line
            if lock is not None:
                lock.chmod(0o755)
    finally:
        for path in tmp_path.rglob("*"):
            if path.is_dir():
                path.chmod(0o755)


def test_a_read_only_file_system_is_named(tmp_path, monkeypatch):
    def read_only(*args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(options.tempfile, "mkstemp", read_only)
    with pytest.raises(RaynerfError, match=f"workdir {tmp_path / 'run'} .*read-only"):
        options.writable_dir(tmp_path / "run", "workdir")
    assert not (tmp_path / "run").exists()  # the check creates nothing
