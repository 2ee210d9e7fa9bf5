"""Where a run's files and a scene's files live: a local folder or a Cloud Storage
bucket (``gs://bucket/path``).

A local workdir is used as it is. A ``gs://`` workdir is split by what can be written
where: orbax writes the checkpoints straight into the bucket (every host of a pod reads
and writes them there), while the run's other files (``metrics.jsonl``, TensorBoard
events, ``run.json``, ``config.toml``, eval and render outputs) are written to a local
mirror folder on each host and uploaded from it by :func:`push`, because Cloud Storage
objects cannot be appended to and ffmpeg and TensorBoard write local files. Opening a
``gs://`` workdir downloads those files from the bucket (:func:`open_workdir`), so a run
resumes, evaluates or renders on any host. Uploads replace whole objects, which Cloud
Storage does atomically: a reader sees the old file or the new one.

A ``gs://`` data dir is copied to this host's cache once (:func:`open_scene`): COLMAP,
PIL and the pixel cache read local files.

Every bucket access goes through :mod:`etils.epath` (with ``gcsfs``), as orbax's does.
To use a Cloud Storage emulator, set ``STORAGE_EMULATOR_HOST=http://HOST:PORT`` (gcsfs)
and ``TENSORSTORE_GCS_HTTP_URL=http://HOST:PORT`` with ``GOOGLE_AUTH_TOKEN_FOR_TESTING``
(tensorstore, which writes the checkpoints' arrays).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

from etils import epath

from raynerf.errors import RaynerfError

# Against an emulator, gcsfs cannot ask for a bucket's type (a Storage Control call that
# needs real credentials) and warns on every listing; the fallback it takes is right.
if os.environ.get("STORAGE_EMULATOR_HOST"):
    for _name in ("gcsfs", "google.auth._default"):
        logging.getLogger(_name).setLevel(logging.ERROR)

URL_PREFIX = "gs://"
REMOTE_FILE = ".raynerf-remote"  # in a mirror folder: the gs:// workdir it mirrors
PUSHED_FILE = ".raynerf-pushed.json"  # in a mirror folder: size and mtime of each upload
CHECKPOINTS = "checkpoints"
# What a workdir's mirror downloads when opened: what resuming, eval and render read.
PULLED = ("run.json", "config.toml", "metrics.jsonl")


def is_url(path: str | os.PathLike) -> bool:
    return str(path).startswith(URL_PREFIX)


def cache_root() -> Path:
    """``$RAYNERF_CACHE`` or ``~/.cache/raynerf``: this host's caches (pixels, scenes, mirrors)."""
    env = os.environ.get("RAYNERF_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "raynerf"


def _bucket_path(url: str) -> str:
    rest = url[len(URL_PREFIX) :].strip("/")
    if not rest or any(part in ("", ".", "..") for part in rest.split("/")):
        raise RaynerfError(f"{url} is not a gs://BUCKET/PATH location")
    return rest


def _remote(url: str) -> epath.Path:
    try:
        return epath.Path(URL_PREFIX + _bucket_path(url))
    except (ImportError, ModuleNotFoundError) as exc:  # gcsfs missing
        raise RaynerfError(f"{url}: Cloud Storage needs gcsfs ({exc}); pip install 'raynerf[gcs]'") from None


def _failed(what: str, url: str, exc: Exception) -> RaynerfError:
    lines = [line for line in str(exc).splitlines() if line.strip()]
    return RaynerfError(f"cannot {what} {url}: {type(exc).__name__}: {lines[0] if lines else ''}")


def open_workdir(workdir: str | os.PathLike) -> Path:
    """The local folder a command writes ``workdir``'s files in: ``workdir`` itself, or
    for ``gs://`` the host's mirror of it (``<cache>/workdirs/<bucket>/<path>``), with what
    the bucket holds of :data:`PULLED` downloaded (the bucket's copy wins)."""
    if not is_url(workdir):
        return Path(workdir)
    url = URL_PREFIX + _bucket_path(str(workdir))
    local = cache_root() / "workdirs" / _bucket_path(url)
    local.mkdir(parents=True, exist_ok=True)
    (local / REMOTE_FILE).write_text(url)
    remote = _remote(url)
    try:
        for name in PULLED:
            source = remote / name
            if source.exists():
                _atomic_write(local / name, source.read_bytes())
            else:
                (local / name).unlink(missing_ok=True)
    except OSError as exc:
        raise _failed("read the workdir", url, exc) from None
    return local


def remote_of(folder: Path) -> epath.Path | None:
    """The ``gs://`` location that the local ``folder`` (a workdir's mirror, a scene's
    copy) stands for, or None."""
    marker = Path(folder) / REMOTE_FILE
    return _remote(marker.read_text().strip()) if marker.is_file() else None


def shown(folder: Path) -> str:
    """A workdir or scene folder as the user named it: its ``gs://`` location for a
    mirror or a downloaded copy, else the path itself."""
    remote = remote_of(folder)
    return str(remote) if remote is not None else str(folder)


def checkpoint_dir(workdir: Path) -> epath.Path:
    """Where ``workdir``'s checkpoints are: in the bucket for a ``gs://`` workdir."""
    remote = remote_of(workdir)
    return remote / CHECKPOINTS if remote is not None else epath.Path(Path(workdir).absolute() / CHECKPOINTS)


def push(workdir: Path, *names: str) -> None:
    """Uploads the files ``names`` (relative to ``workdir``; folders: every file in them)
    that changed since their last upload, for a mirror folder; nothing for a local workdir.
    Missing names are skipped."""
    remote = remote_of(workdir)
    if remote is None:
        return
    workdir = Path(workdir)
    record_file = workdir / PUSHED_FILE
    try:
        pushed = json.loads(record_file.read_text()) if record_file.is_file() else {}
    except (OSError, json.JSONDecodeError):
        pushed = {}  # a damaged record only costs uploading again
    files = []
    for name in names:
        path = workdir / name
        files += sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    try:
        for path in files:
            if not path.is_file() or path.name.startswith("."):
                continue
            key = path.relative_to(workdir).as_posix()
            stat = path.stat()
            if pushed.get(key) == [stat.st_size, stat.st_mtime_ns]:
                continue
            target = remote / key
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(path.read_bytes())
            pushed[key] = [stat.st_size, stat.st_mtime_ns]
    except OSError as exc:
        raise _failed("upload to", str(remote), exc) from None
    finally:
        _atomic_write(record_file, json.dumps(pushed).encode())


def check_writable(url: str) -> None:
    """Writes and removes a probe object under ``url``: a missing bucket or missing
    rights are one RaynerfError before any compiling."""
    probe = _remote(url) / f".raynerf-write-probe-{uuid.uuid4().hex}"
    try:
        probe.write_text("")
        probe.unlink()
    except OSError as exc:
        raise _failed("write to", url, exc) from None


def open_scene(scene: str | os.PathLike) -> Path:
    """The local folder of the scene folder ``scene``: for ``gs://BUCKET/DATA/SCENE``, this
    host's copy (``<cache>/scenes/BUCKET/DATA/SCENE``), downloading only the files it lacks
    or whose size differs; a local path as it is."""
    if not is_url(scene):
        return Path(scene)
    url = URL_PREFIX + _bucket_path(str(scene))
    source = _remote(url)
    local = cache_root() / "scenes" / _bucket_path(url)
    try:
        if not source.is_dir():
            parent = source.parent
            present = sorted(p.name for p in parent.iterdir() if p.is_dir()) if parent.is_dir() else []
            hint = f"scenes there: {', '.join(present)}" if present else "no scene folders there"
            raise RaynerfError(f"scene folder {source} does not exist ({hint})")
        for path in _files_under(source):
            target = local / path.relative_to(source)
            if target.is_file() and target.stat().st_size == path.stat().length:
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            _atomic_write(target, path.read_bytes())
    except OSError as exc:
        raise _failed("read the scene", str(source), exc) from None
    (local / REMOTE_FILE).write_text(url)
    return local


def _files_under(folder: epath.Path) -> list[epath.Path]:
    """Every file below ``folder`` (epath's ``rglob`` refuses ``**`` on Cloud Storage)."""
    files = []
    for path in folder.iterdir():
        files += _files_under(path) if path.is_dir() else [path]
    return files


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yields a temporary path next to ``path`` (same suffix); renames it into place on success."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=f".partial{path.suffix}", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp)
    try:
        yield tmp
        umask = os.umask(0)
        os.umask(umask)
        tmp.chmod(0o666 & ~umask)  # mkstemp makes it private; give it the usual mode
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _atomic_write(path: Path, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
