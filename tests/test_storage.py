"""Workdirs and data dirs in a Cloud Storage bucket (``gs://``), against a real emulator.

A ``gcp-storage-emulator`` process on 127.0.0.1 stands in for Cloud Storage; gcsfs
(etils.epath) and tensorstore (orbax's arrays) reach it through their documented
variables. Promises: train, a kill, resume, eval and render behave with a ``gs://``
workdir and data dir as with local folders, and leave the same files in the bucket that
a local run leaves in its workdir; uploads copy only what changed; a bucket that cannot
be written is one Error line before any compiling.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import fsspec
import pytest
from etils import epath
from small_run import SMALL, cli_env, popen_cli, run_cli, small_scene

from raynerf import storage
from raynerf.errors import RaynerfError

BUCKET = "raynerf-test"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def emulator(tmp_path_factory):
    """The emulator's environment (also set in this process while the module runs)."""
    port = _free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "gcp_storage_emulator",
            "start",
            "--host=127.0.0.1",
            f"--port={port}",
            "--in-memory",
            f"--default-bucket={BUCKET}",
            "--quiet",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    env = {
        "STORAGE_EMULATOR_HOST": url,  # gcsfs (etils.epath)
        "TENSORSTORE_GCS_HTTP_URL": url,  # tensorstore (orbax's arrays)
        "GOOGLE_AUTH_TOKEN_FOR_TESTING": "emulator",
        "RAYNERF_CACHE": str(tmp_path_factory.mktemp("gcs-cache")),
    }
    saved = {key: os.environ.get(key) for key in env}
    os.environ.update(env)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert proc.poll() is None and time.monotonic() < deadline, "the emulator did not start"
                time.sleep(0.2)
        yield env
    finally:
        proc.kill()
        proc.wait()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _upload(folder: Path, url: str) -> None:
    for path in folder.rglob("*"):
        if path.is_file():
            target = epath.Path(url) / path.relative_to(folder).as_posix()
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(path.read_bytes())


def test_push_uploads_only_what_changed_and_open_pulls_the_run_files(emulator, tmp_path):
    url = f"gs://{BUCKET}/units/run"
    local = storage.open_workdir(url)
    assert storage.remote_of(local) == epath.Path(url) and storage.shown(local) == url
    assert str(storage.checkpoint_dir(local)) == f"{url}/checkpoints"
    (local / "metrics.jsonl").write_text('{"step": 1}\n')
    (local / "eval").mkdir()
    (local / "eval" / "a.png").write_bytes(b"png")
    storage.push(local, "metrics.jsonl", "eval", "absent.txt")
    remote = epath.Path(url)
    assert (remote / "metrics.jsonl").read_text() == '{"step": 1}\n'
    assert (remote / "eval" / "a.png").read_bytes() == b"png"
    (remote / "eval" / "a.png").write_bytes(b"changed in the bucket")
    with open(local / "metrics.jsonl", "a") as f:
        f.write('{"step": 2}\n')
    storage.push(local, "metrics.jsonl", "eval")
    assert (remote / "metrics.jsonl").read_text().count("step") == 2
    assert (remote / "eval" / "a.png").read_bytes() == b"changed in the bucket"  # unchanged here: not sent

    (local / "metrics.jsonl").write_text("stale local copy\n")
    again = storage.open_workdir(url)  # another host, or a later command: the bucket wins
    assert again == local and (local / "metrics.jsonl").read_text().count("step") == 2
    assert storage.remote_of(tmp_path) is None and storage.checkpoint_dir(tmp_path) == epath.Path(
        tmp_path / "checkpoints"
    )


def test_a_scene_is_copied_once_and_refreshed_where_it_differs(emulator, tmp_path):
    scene = small_scene(tmp_path, "copied")
    url = f"gs://{BUCKET}/data/copied"
    _upload(scene, url)
    local = storage.open_scene(url)
    files = sorted(p.relative_to(scene) for p in scene.rglob("*") if p.is_file())
    assert (
        sorted(
            p.relative_to(local) for p in local.rglob("*") if p.is_file() and p.name != storage.REMOTE_FILE
        )
        == files
    )
    image, other = sorted((local / "images").iterdir())[:2]
    mtime = other.stat().st_mtime_ns
    image.write_bytes(b"torn")  # a damaged local copy: its size differs, so it is fetched again
    storage.open_scene(url)
    assert image.read_bytes() == (scene / "images" / image.name).read_bytes()
    assert other.stat().st_mtime_ns == mtime  # intact files are not downloaded again
    with pytest.raises(RaynerfError, match="scene folder gs://raynerf-test/data/absent does not exist"):
        storage.open_scene(f"gs://{BUCKET}/data/absent")


def test_a_missing_bucket_is_one_error_line(emulator, tmp_path):
    result = run_cli(
        "train",
        "--scene",
        "s",
        "--data-dir",
        str(tmp_path),
        "--workdir",
        "gs://no-such-bucket/run",
        env=cli_env(**emulator),
    )
    assert result.returncode == 1, result.stdout + result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("Error: cannot write to gs://no-such-bucket/run")
    assert "Traceback" not in result.stderr


def _fresh(path: epath.Path) -> epath.Path:
    """``path``, with gcsfs's cached listings dropped (another process writes the bucket)."""
    if str(path).startswith("gs://"):
        fsspec.filesystem("gs").invalidate_cache()
    return path


def _files(root: epath.Path) -> set[str]:
    found = set()
    for path in root.iterdir():
        found |= {f"{path.name}/{name}" for name in _files(path)} if path.is_dir() else {path.name}
    return found


def test_train_kill_resume_eval_render_in_a_bucket(emulator, tmp_path):
    """The same sequence with a local workdir is what tests/faults (kill, resume),
    tests/test_eval.py and tests/render check; here every file lives in the bucket."""
    scene = small_scene(tmp_path / "data", "gscene")
    data_dir, workdir = f"gs://{BUCKET}/{tmp_path.name}/data", f"gs://{BUCKET}/{tmp_path.name}/run"
    _upload(scene, f"{data_dir}/gscene")
    args = ["--scene", "gscene", "--data-dir", data_dir, "--config", "tiny", "--workdir", workdir]
    for item in (
        *SMALL,
        "train.checkpoint_every=2",
        "train.log_every=1",
        f'data.cache_dir="{tmp_path / "px"}"',
    ):
        args += ["--set", item]
    env = cli_env(**emulator)
    root = epath.Path(workdir)

    proc = popen_cli("train", *args, "--steps", "400", env=env)
    try:
        deadline = time.monotonic() + 300
        while not _fresh(root / "checkpoints" / "4").exists():
            assert proc.poll() is None, proc.stdout.read()
            assert time.monotonic() < deadline, "no checkpoint 4"
            time.sleep(0.5)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()

    resumed = run_cli("train", *args, "--steps", "10", env=env, timeout=400)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    _fresh(root)
    assert f"checkpoints in {workdir}/checkpoints" in resumed.stdout
    records = [json.loads(line) for line in (root / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if "loss" in r] == list(range(1, 11))
    steps = sorted(int(p.name) for p in (root / "checkpoints").iterdir() if p.name.isdigit())
    assert steps[-1] == 10 and min(steps) >= 4

    evaluated = run_cli("eval", *args, env=env, timeout=400)
    assert evaluated.returncode == 0, evaluated.stdout + evaluated.stderr
    _fresh(root)
    assert f"-> {workdir}/eval/metrics.json" in evaluated.stdout
    assert json.loads((root / "eval" / "metrics.json").read_text())["step"] == 10

    rendered = run_cli("render", *args, "--frames", "2", "--workers", "1", env=env, timeout=400)
    assert rendered.returncode == 0, rendered.stdout + rendered.stderr
    _fresh(root)

    files = _files(root)
    assert {"run.json", "config.toml", "metrics.jsonl", "eval/metrics.json"} <= files
    assert any(name.startswith("tensorboard/events") for name in files)
    assert sum(name.startswith("render/") and name.endswith(".mp4") for name in files) == 3, files
    assert sum(name.startswith("eval/") and name.endswith("_color.png") for name in files) == 2
