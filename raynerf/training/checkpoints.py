"""Orbax checkpoints of a training run: state, PRNG key and the grain iterator, together.

Saves are asynchronous and atomic (orbax writes into a temporary folder and renames
it when the save is complete), so a process killed mid-save leaves the previous
checkpoints loadable. Every process takes part in each save and restore.

A checkpoint damaged after it was written (a truncated or corrupted file) is moved
aside to ``checkpoints-damaged/<step>`` (never deleted) when an older one restores,
and that one is used instead (:func:`restore_newest`).

A workdir remembers the scene (its folder name and a fingerprint of its COLMAP model)
and the model it was trained for (``run.json``, written with the first checkpoint)
and refuses to resume a different one.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grain
import jax
import numpy as np
import orbax.checkpoint as ocp
from etils import epath
from jax.experimental import multihost_utils

from raynerf import storage
from raynerf.config import Config
from raynerf.data.colmap import MODEL_FILES
from raynerf.errors import RaynerfError
from raynerf.model.mipnerf360 import MipNerf360
from raynerf.training.optim import make_optimizer
from raynerf.training.step import create_train_state

RUN_FILE = "run.json"
# Where damaged checkpoints are moved, next to ``checkpoints/`` (orbax never looks there).
DAMAGED_DIR = "checkpoints-damaged"

Notify = Callable[[str], None]


def _stderr_line(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def checkpoint_manager(directory: Path, keep: int, async_save: bool = True) -> ocp.CheckpointManager:
    """An orbax manager for ``directory`` keeping the last ``keep`` checkpoints.

    In a bucket (``gs://``) each array is its own zarr store (no OCDBT): OCDBT commits
    every save through conditional writes of one manifest object, which the Cloud Storage
    emulator the tests use does not support under concurrent writes ("Malformed
    StorageGeneration"), and plain per-array objects are what the bucket path is tested
    with. Local checkpoints keep OCDBT (fewer, larger files)."""
    in_bucket = str(directory).startswith("gs://")
    options = ocp.CheckpointManagerOptions(
        max_to_keep=keep,
        create=True,
        cleanup_tmp_directories=True,
        enable_async_checkpointing=async_save,
    )
    return ocp.CheckpointManager(
        epath.Path(directory),
        options=options,
        item_handlers={
            "state": ocp.StandardCheckpointHandler(use_ocdbt=not in_bucket),
            "data": grain.checkpoint.CheckpointHandler(),
        },
    )


def save(
    manager: ocp.CheckpointManager, step: int, state: Any, data_iterator: Any = None, force: bool = True
) -> None:
    """Starts an (asynchronous) save of ``state`` and the iterator position at ``step``."""
    items = {"state": ocp.args.StandardSave(state)}
    if data_iterator is not None:
        items["data"] = grain.checkpoint.CheckpointSave(data_iterator)
    manager.save(step, args=ocp.args.Composite(**items), force=force)


def restore(
    manager: ocp.CheckpointManager, state_like: Any, data_iterator: Any = None, step: int | None = None
) -> tuple[int, Any]:
    """The state at ``step`` (default: latest), laid out like ``state_like`` (same
    shapes, dtypes and shardings); ``data_iterator`` is moved to the saved position."""
    step = manager.latest_step() if step is None else step
    if step is None:
        raise RaynerfError(f"no checkpoint in {manager.directory}")
    abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), state_like)
    items = {"state": ocp.args.StandardRestore(abstract)}
    if data_iterator is not None:
        items["data"] = grain.checkpoint.CheckpointRestore(data_iterator)
    restored = manager.restore(step, args=ocp.args.Composite(**items))
    return step, restored["state"]


def _everywhere(ok: bool) -> bool:
    """Whether ``ok`` holds on every process (the processes must agree on what to restore)."""
    if jax.process_count() == 1:
        return ok
    return bool(np.all(multihost_utils.process_allgather(np.array([ok]))))


def _short(exc: BaseException) -> str:
    """The root cause of ``exc`` in one short line (tensorstore wraps its own in pages)."""
    while (exc.__cause__ or exc.__context__) is not None:
        exc = exc.__cause__ or exc.__context__
    lines = str(exc).strip().splitlines()
    text = lines[0] if lines else ""
    if len(text) < 40:
        text = f"{type(exc).__name__}: {text}" if text else type(exc).__name__
    return text if len(text) <= 200 else text[:197] + "..."


def move_aside(manager: ocp.CheckpointManager, step: int) -> epath.Path:
    """Moves checkpoint ``step`` to ``<workdir>/checkpoints-damaged/<step>`` (a numbered
    sibling if that exists), where orbax no longer sees it; returns where it went."""
    source = epath.Path(manager.directory) / str(step)
    damaged = epath.Path(manager.directory).parent / DAMAGED_DIR
    damaged.mkdir(parents=True, exist_ok=True)
    target, n = damaged / str(step), 1
    while target.exists():
        target, n = damaged / f"{step}.{n}", n + 1
    source.rename(target)
    return target


def restore_newest(
    manager: ocp.CheckpointManager,
    state_like: Any,
    data_iterator: Any = None,
    notify: Notify = _stderr_line,
) -> tuple[int, Any] | None:
    """The newest checkpoint that restores, as :func:`restore`; ``None`` when there is
    no checkpoint at all.

    Checkpoints newer than the one that restores (a truncated or corrupted file:
    tensorstore, orbax and grain raise many kinds of errors) are moved aside by process
    0 (see :func:`move_aside`), each with one line to ``notify``. When none restores,
    nothing is moved (a model config that does not match the checkpoints fails the
    same way) and a RaynerfError names the folder.
    """
    steps = sorted(manager.all_steps(), reverse=True)
    if not steps:
        return None
    failed: list[tuple[int, str]] = []
    for step in steps:
        try:
            restored, reason = restore(manager, state_like, data_iterator, step=step), ""
        except Exception as exc:  # noqa: BLE001 - any failure to read it means it is unusable
            restored, reason = None, _short(exc)
        if _everywhere(restored is not None):
            _set_aside(manager, failed, step, notify)
            return restored
        failed.append((step, reason or "it failed to restore on another host"))
    newest, reason = failed[0]
    raise RaynerfError(
        f"no checkpoint in {manager.directory} restores (checkpoint {newest}: {reason}); if the run's "
        "config changed, use the one it was trained with; if the files are damaged, move the "
        "folder away to train from step 0"
    )


def _set_aside(
    manager: ocp.CheckpointManager, failed: list[tuple[int, str]], restored: int, notify: Notify
) -> None:
    """Moves the ``failed`` checkpoints (newer than ``restored``) aside, one note each."""
    if not failed:
        return
    for step, reason in failed:
        where = epath.Path(manager.directory).parent / DAMAGED_DIR / str(step)
        if jax.process_index() == 0:
            where = move_aside(manager, step)
        notify(f"checkpoint {step} does not restore ({reason}); moved it to {where}; using step {restored}")
    if jax.process_count() > 1:
        multihost_utils.sync_global_devices(f"raynerf-damaged-checkpoints-{restored}")
    manager.reload()


# The data settings that fix the scene's frame, with the value a run.json written before
# the setting existed implies (None: it always had one).
_DATA_IDENTITY = {"factor": None, "recentre": "focus"}


def colmap_fingerprint(scene_path: Path) -> str | None:
    """A digest of the scene's COLMAP model (``sparse/0``: cameras, images, points; the
    binary files, else the text ones), which tells apart two captures in folders of
    the same name. ``None`` when there is no model to read."""
    folder = Path(scene_path) / "sparse" / "0"
    for names in (MODEL_FILES, tuple(n.replace(".bin", ".txt") for n in MODEL_FILES)):
        files = [folder / name for name in names]
        if all(f.is_file() for f in files):
            digest = hashlib.sha256()
            for f in files:
                digest.update(f.name.encode())
                with open(f, "rb") as handle:
                    for block in iter(lambda: handle.read(1 << 20), b""):
                        digest.update(block)
            return digest.hexdigest()[:16]
    return None


def run_identity(scene_path: Path, config: Config) -> dict:
    """What makes a checkpoint usable: the scene (its folder's name and its COLMAP
    model), the frame it is normalised to and the shapes of the model."""
    return {
        "scene": Path(scene_path).resolve().name,
        "scene_path": str(Path(scene_path).resolve()),
        "colmap": colmap_fingerprint(scene_path),
        "model": dataclasses.asdict(config.model) | {"compute_dtype": None},
    } | {key: getattr(config.data, key) for key in _DATA_IDENTITY}


def check_workdir(workdir: Path, scene_path: Path, config: Config, write: bool) -> None:
    """Refuses a workdir whose checkpoints belong to another scene or model; records
    this run's identity in ``run.json`` when ``write`` (process 0) and there is none.

    A ``run.json`` written before the COLMAP fingerprint existed is accepted for any
    capture of the same name."""
    identity = run_identity(scene_path, config)
    run_file = Path(workdir) / RUN_FILE
    if run_file.exists():
        try:
            recorded = json.loads(run_file.read_text())
        except (OSError, json.JSONDecodeError):
            raise RaynerfError(f"{run_file} is unreadable; remove it or use another --workdir") from None
        if recorded.get("scene") != identity["scene"]:
            raise RaynerfError(
                f"workdir {workdir} holds checkpoints of scene '{recorded.get('scene')}', not "
                f"'{identity['scene']}'; use another --workdir"
            )
        if recorded.get("colmap") not in (None, identity["colmap"]):
            raise RaynerfError(
                f"workdir {workdir} holds checkpoints of another capture named '{identity['scene']}' "
                f"(the COLMAP model in {Path(scene_path) / 'sparse' / '0'} differs from the one it "
                "was trained on); use another --workdir"
            )
        changed = sorted(
            key for key, value in identity["model"].items() if recorded.get("model", {}).get(key) != value
        )
        # A data setting names the run's own value, so that a changed default (issue 18: the
        # frame) is one --set away from resuming where the run was trained.
        changed += [
            f"data.{key} (the run's: --set data.{key}={recorded.get(key, before)})"
            for key, before in _DATA_IDENTITY.items()
            if recorded.get(key, before) != identity[key]
        ]
        if changed:
            raise RaynerfError(
                f"workdir {workdir} holds checkpoints of a different model config "
                f"(differs in: {', '.join('model.' + c if '.' not in c else c for c in changed)}); "
                "use another --workdir or the same config"
            )
    elif write:
        write_identity(workdir, identity)


def write_identity(workdir: Path, identity: dict) -> None:
    """Writes ``run.json`` atomically."""
    run_file = Path(workdir) / RUN_FILE
    run_file.parent.mkdir(parents=True, exist_ok=True)
    tmp = run_file.with_suffix(".tmp")
    tmp.write_text(json.dumps(identity, indent=2))
    os.replace(tmp, run_file)


def load_trained_params(
    config: Config, scene_path: Path, workdir: Path, mesh, notify: Notify = _stderr_line
) -> tuple[int, Any]:
    """``(step, params)`` of the newest checkpoint in ``workdir`` that restores (see
    :func:`restore_newest`), replicated on ``mesh``: what eval, render and export infer with."""
    ckpt_dir = storage.checkpoint_dir(Path(workdir))
    missing = (
        f"no checkpoint in {ckpt_dir}: train first (raynerf train --scene ... --workdir "
        f"{storage.shown(Path(workdir))})"
    )
    if not ckpt_dir.is_dir():
        raise RaynerfError(missing)
    check_workdir(workdir, scene_path, config, write=False)
    manager = checkpoint_manager(ckpt_dir, config.train.keep_checkpoints, async_save=False)
    try:
        if manager.latest_step() is None:
            raise RaynerfError(missing)
        state = create_train_state(config, MipNerf360(config.model), make_optimizer(config.train), mesh)
        step, state = restore_newest(manager, state, notify=notify)
    finally:
        manager.close()
    return step, state.params
