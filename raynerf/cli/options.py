"""Options shared by several commands (scene, data dir, config, overrides, workdir)."""

from __future__ import annotations

import errno
import json
import os
import tempfile
from pathlib import Path

import click

from raynerf import storage
from raynerf.config import Config, load_config
from raynerf.errors import RaynerfError


def scene_options(func):
    """``--scene NAME`` and ``--data-dir D``: the scene folder is ``D/NAME``."""
    func = click.option(
        "--data-dir",
        default="nerf_data",
        show_default=True,
        help="Folder holding one folder per scene (as 360_v2.zip unzips), or gs://BUCKET/PATH "
        "(copied to this host's cache once).",
    )(func)
    func = click.option("--scene", required=True, help="Scene name, a folder of --data-dir.")(func)
    return func


def config_options(func):
    """``--config NAME|PATH`` and repeated ``--set section.key=value``."""
    func = click.option(
        "--set",
        "overrides",
        multiple=True,
        metavar="SECTION.KEY=VALUE",
        help="Override one config value; repeatable.",
    )(func)
    func = click.option(
        "--config",
        "config_name",
        default=None,
        help="A config name from configs/ (360, tiny) or a .toml path [default: 360; "
        "eval and render default to the run's own config.toml].",
    )(func)
    return func


def build_config(
    config_name: str | None, overrides: tuple[str, ...], steps: int | None = None, workdir: Path | None = None
) -> Config:
    """The config named (default ``360``), or the workdir's saved ``config.toml`` when none
    is named and ``workdir`` is given, with overrides and ``--steps`` applied."""
    if config_name is None:
        saved = workdir / "config.toml" if workdir is not None else None
        config_name = str(saved) if saved is not None and saved.is_file() else "360"
    config = load_config(config_name, overrides)
    if steps is not None:
        if steps <= 0:
            raise RaynerfError(f"--steps must be positive, got {steps}")
        config = config.replace({"train": {"max_steps": steps}})
    return config


def workdir_option(help_text: str):
    """``--workdir``: a folder or ``gs://BUCKET/PATH`` (see :mod:`raynerf.storage`)."""
    return click.option("--workdir", default=None, help=f"{help_text} A folder or gs://BUCKET/PATH.")


def scene_dir(data_dir: str | Path, scene: str) -> Path:
    """``DATA_DIR/SCENE`` (for ``gs://``, this host's copy of it), with a clear error when
    either is missing."""
    if storage.is_url(data_dir):
        return storage.open_scene(f"{str(data_dir).rstrip('/')}/{scene}")
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise RaynerfError(f"data dir {data_dir} does not exist (pass --data-dir, or unzip 360_v2.zip there)")
    path = data_dir / scene
    if not path.is_dir():
        present = sorted(p.name for p in data_dir.iterdir() if p.is_dir())
        hint = f"scenes there: {', '.join(present)}" if present else "it holds no scene folders"
        raise RaynerfError(f"scene folder {path} does not exist ({hint})")
    return path


def default_workdir(workdir: str | Path | None, scene: str) -> Path:
    """The local folder of ``--workdir`` (default ``runs/<scene>``): for ``gs://``, this
    host's mirror of it, once the bucket has been checked to be writable."""
    if workdir is None:
        return Path("runs") / scene
    if storage.is_url(workdir):
        storage.check_writable(str(workdir))
    return storage.open_workdir(workdir)


def writable_dir(folder: Path, what: str) -> Path:
    """Checks, before any compiling, that files can be written in ``folder`` (or, when it
    does not exist yet, in the nearest folder above it, where it will be created): a
    probe file is made and removed at once, so nothing else is created. An unwritable
    folder or a read-only file system is a RaynerfError naming the folder."""
    folder = Path(folder)
    existing = folder.absolute()
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    try:
        if not existing.is_dir():
            raise NotADirectoryError(errno.ENOTDIR, "not a folder")
        fd, probe = tempfile.mkstemp(prefix=".raynerf-write-probe-", dir=existing)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        reason = {
            errno.EROFS: "the file system is read-only",
            errno.EACCES: "permission denied",
            errno.EPERM: "permission denied",
            errno.ENOSPC: "no space left on the device",
            errno.ENOTDIR: "a file of that name is in the way",
        }.get(exc.errno, exc.strerror or str(exc))
        where = "" if existing == folder.absolute() else f" (in {existing})"
        raise RaynerfError(
            f"cannot write to the {what} {folder}{where}: {reason}; fix its permissions or choose "
            "another folder"
        ) from None
    return folder


def run_scene(workdir: Path) -> Path:
    """The scene folder a run was trained on, as its ``run.json`` records it, for the
    commands that default to the run's own scene (``view``, ``export``)."""
    run_file = Path(workdir) / "run.json"
    try:
        recorded = json.loads(run_file.read_text())
    except FileNotFoundError:
        raise RaynerfError(
            f"{run_file} does not exist: {storage.shown(Path(workdir))} holds no trained run "
            "(train first, or pass --scene and --data-dir)"
        ) from None
    except (OSError, json.JSONDecodeError) as exc:
        raise RaynerfError(f"{run_file} is unreadable ({exc}); pass --scene and --data-dir") from None
    path = Path(str(recorded.get("scene_path", "")))
    if not recorded.get("scene_path") or not path.is_dir():
        raise RaynerfError(
            f"the run's scene folder {path} is not on this machine; pass --scene and --data-dir"
        )
    return path


def run_options(func):
    """``--workdir`` plus optional ``--scene`` / ``--data-dir`` (default: the run's own
    scene, from its ``run.json``); see :func:`resolve_run`."""
    func = click.option(
        "--data-dir",
        default="nerf_data",
        show_default=True,
        help="With --scene: the folder holding the scene folders, or gs://BUCKET/PATH.",
    )(func)
    func = click.option("--scene", default=None, help="Scene name [default: the run's own scene].")(func)
    return workdir_option("The training run's folder [default: runs/<scene>].")(func)


def resolve_run(workdir: str | None, scene: str | None, data_dir: str) -> tuple[Path, Path]:
    """(local workdir, scene folder) from ``--workdir`` / ``--scene`` / ``--data-dir``."""
    if workdir is None and scene is None:
        raise RaynerfError("give --workdir (a training run's folder) or --scene")
    local = default_workdir(workdir, scene or "")
    if scene is None:
        return local, run_scene(local)
    return local, scene_dir(data_dir, scene)
