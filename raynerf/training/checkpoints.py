"""Orbax checkpoints of a training run: state, PRNG key and the grain iterator, together.

Saves are asynchronous and atomic (orbax writes into a temporary folder and renames
it when the save is complete), so a process killed mid-save leaves the previous
checkpoints loadable. Every process takes part in each save and restore.
A workdir remembers the scene and model it was trained for (``run.json``) and
refuses to resume a different one.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any

import grain
import jax
import orbax.checkpoint as ocp

from raynerf.config import Config
from raynerf.errors import RaynerfError
from raynerf.model.mipnerf360 import MipNerf360
from raynerf.training.optim import make_optimizer
from raynerf.training.step import create_train_state

RUN_FILE = "run.json"


def checkpoint_manager(directory: Path, keep: int, async_save: bool = True) -> ocp.CheckpointManager:
    """An orbax manager for ``directory`` keeping the last ``keep`` checkpoints."""
    options = ocp.CheckpointManagerOptions(
        max_to_keep=keep,
        create=True,
        cleanup_tmp_directories=True,
        enable_async_checkpointing=async_save,
    )
    return ocp.CheckpointManager(
        Path(directory).absolute(),
        options=options,
        item_names=("state", "data"),
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


# The data settings that fix the scene's frame, with the value a run.json written before
# the setting existed implies (None: it always had one).
_DATA_IDENTITY = {"factor": None, "recentre": "focus"}


def run_identity(scene_path: Path, config: Config) -> dict:
    """What makes a checkpoint usable: the scene, the frame it is normalised to and the
    shapes of the model."""
    return {
        "scene": Path(scene_path).resolve().name,
        "scene_path": str(Path(scene_path).resolve()),
        "model": dataclasses.asdict(config.model) | {"compute_dtype": None},
    } | {key: getattr(config.data, key) for key in _DATA_IDENTITY}


def check_workdir(workdir: Path, scene_path: Path, config: Config, write: bool) -> None:
    """Refuses a workdir whose checkpoints belong to another scene or model; records
    this run's identity in ``run.json`` when ``write`` (process 0)."""
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
        changed = sorted(
            key for key, value in identity["model"].items() if recorded.get("model", {}).get(key) != value
        )
        changed += [
            f"data.{key}"
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
        run_file.parent.mkdir(parents=True, exist_ok=True)
        tmp = run_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(identity, indent=2))
        os.replace(tmp, run_file)


def load_trained_params(config: Config, scene_path: Path, workdir: Path, mesh) -> tuple[int, Any]:
    """``(step, params)`` of the latest checkpoint in ``workdir``, replicated on ``mesh``:
    what eval, render and export infer with."""
    ckpt_dir = Path(workdir) / "checkpoints"
    missing = f"no checkpoint in {ckpt_dir}: train first (raynerf train --scene ... --workdir {workdir})"
    if not ckpt_dir.is_dir():
        raise RaynerfError(missing)
    check_workdir(workdir, scene_path, config, write=False)
    manager = checkpoint_manager(ckpt_dir, config.train.keep_checkpoints, async_save=False)
    try:
        if manager.latest_step() is None:
            raise RaynerfError(missing)
        state = create_train_state(config, MipNerf360(config.model), make_optimizer(config.train), mesh)
        step, state = restore(manager, state)
    finally:
        manager.close()
    return step, state.params
