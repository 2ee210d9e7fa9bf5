"""The training loop: data in, steps, metrics out, checkpoints, resume.

Every process of a (possibly multi-host) run executes :func:`train` with the same
arguments; process 0 alone writes metrics, TensorBoard and the progress bar.
"""

from __future__ import annotations

import dataclasses
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

import jax
from tqdm.auto import tqdm

from raynerf import storage
from raynerf.config import Config
from raynerf.data.cache import load_pixels
from raynerf.data.pipeline import make_train_iterator
from raynerf.data.scene import image_rays, load_configured_scene
from raynerf.errors import RaynerfError
from raynerf.hostmem import release_free_memory
from raynerf.mesh import global_batch, make_mesh
from raynerf.model.mipnerf360 import MipNerf360
from raynerf.model.render_chunks import choose_chunk, chunk_unit, make_render_fn, render_image
from raynerf.training import checkpoints
from raynerf.training.metrics_log import MetricsLogger, truncate_metrics
from raynerf.training.optim import make_optimizer
from raynerf.training.progress import ProgressBar
from raynerf.training.step import (
    BATCH_FIELDS,
    batch_spec,
    check_batch_size,
    create_train_state,
    jit_train_step,
)

# Called by every process at every logged step (the same steps everywhere) with
# (step, metrics + "checkpoint_step"); the Ray host group forwards process 0's to the
# driver's progress bar and every process's to Ray Train.
Reporter = Callable[[int, dict], None]


@dataclasses.dataclass
class TrainResult:
    step: int
    metrics: dict
    workdir: Path


def write_config(workdir: Path, config: Config) -> None:
    """Writes the resolved config to ``workdir/config.toml`` (atomically), creating the
    workdir; an unwritable workdir is a RaynerfError naming it."""
    path = workdir / "config.toml"
    try:
        workdir.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".toml.tmp")
        tmp.write_text(config.to_toml())
        os.replace(tmp, path)
    except OSError as exc:
        raise RaynerfError(
            f"cannot write to the workdir {workdir} ({exc.strerror or exc}); "
            "pass a writable --workdir or fix its permissions"
        ) from None


def _stderr_line(message: str) -> None:
    tqdm.write(message, file=sys.stderr)


def _silent(message: str) -> None:
    pass


def train(
    config: Config,
    scene_path: Path,
    workdir: Path,
    *,
    show_progress: bool = True,
    reporter: Reporter | None = None,
    async_checkpoints: bool = True,
    should_stop: Callable[[int], bool] | None = None,
) -> TrainResult:
    """Trains (or resumes) ``scene_path`` into ``workdir`` up to ``config.train.max_steps``.

    ``should_stop(step)``, asked after every step (by every process: it must give the
    same answer everywhere), ends the run early with a checkpoint, as if interrupted;
    running again resumes. Persistent non-finite steps roll back to the latest
    checkpoint, at most ``MAX_ROLLBACKS`` times to the same one.
    """
    tc = config.train
    workdir = Path(workdir)
    is_main = jax.process_index() == 0
    notify = _stderr_line if is_main else _silent
    mesh = make_mesh()
    check_batch_size(tc.batch_size, mesh.devices.size, tc.grad_accum_steps)
    checkpoints.check_workdir(workdir, scene_path, config, write=False)
    if is_main:
        write_config(workdir, config)

    scene = load_configured_scene(scene_path, config.data)
    pixels, _ = load_pixels(scene, config.data.cache_dir or None, progress=is_main and show_progress)
    iterator = make_train_iterator(
        scene, pixels, config, jax.process_index(), jax.process_count(), config.model.near, config.model.far
    )

    model = MipNerf360(config.model)
    tx = make_optimizer(tc)
    state = create_train_state(config, model, tx, mesh)
    manager = checkpoints.checkpoint_manager(
        storage.checkpoint_dir(workdir), tc.keep_checkpoints, async_save=async_checkpoints
    )
    restored = checkpoints.restore_newest(manager, state, iterator, notify=notify)
    if restored is not None:
        state = restored[1]
    step = int(jax.device_get(state.step))
    if is_main:
        truncate_metrics(workdir, step, notify=notify)
    # The workdir's identity is recorded with its first checkpoint, so that a run that
    # fails before saving anything (a bad scene, a model too big to compile) leaves the
    # workdir free for a corrected one.
    identity_pending = is_main and not (workdir / checkpoints.RUN_FILE).exists()

    def save(at: int) -> None:
        nonlocal identity_pending
        if identity_pending:
            checkpoints.write_identity(workdir, checkpoints.run_identity(scene_path, config))
            identity_pending = False
        checkpoints.save(manager, at, state, iterator)
        if is_main:  # a gs:// workdir's other files follow its checkpoints into the bucket
            storage.push(workdir, *RUN_FILES)

    # Compiled before the first batch, so that what the compiler freed can be handed
    # back to the system before the step's own buffers are allocated.
    train_step = (
        jit_train_step(config, model, tx, mesh, state).lower(state, batch_spec(mesh, tc.batch_size)).compile()
    )
    release_free_memory()
    logger = MetricsLogger(workdir, enabled=is_main)
    bar = ProgressBar(tc.max_steps, initial=step, enabled=is_main and show_progress)
    viewer = _TestViewRenderer(config, model, mesh, scene) if tc.render_every > 0 else None

    last_metrics: dict = {}
    step_metrics, logged_step = None, step
    tick, tick_step = time.perf_counter(), step
    check_every = max(1, min(tc.log_every, tc.max_nonfinite_steps))
    rollbacks = _RollbackGuard()
    try:
        while step < tc.max_steps:
            batch = global_batch(mesh, next(iterator), BATCH_FIELDS)
            state, step_metrics = train_step(state, batch)
            step += 1
            stop = should_stop is not None and should_stop(step)
            if step % tc.log_every == 0 or step == tc.max_steps or stop:
                metrics = _step_record(step_metrics, state, tc.batch_size, step - tick_step, tick)
                tick, tick_step = time.perf_counter(), step
                logger.log(step, metrics)
                last_metrics, logged_step = metrics, step
                if reporter is not None:
                    reporter(step, {**metrics, "checkpoint_step": manager.latest_step()})
            if step % check_every == 0:
                streak = int(jax.device_get(state.nonfinite_steps))
                if streak >= tc.max_nonfinite_steps:
                    state, step = _roll_back(manager, state, step, streak, logger, bar, rollbacks, notify)
                    tick, tick_step = time.perf_counter(), step
                    continue
            if viewer is not None and step % tc.render_every == 0:
                viewer.log(logger, step, state.params)
            if step % tc.checkpoint_every == 0 or step == tc.max_steps or stop:
                save(step)
            bar.update(step, last_metrics or None)
            if stop:
                bar.write(f"stopping early at step {step} (run again to resume)")
                break
    except KeyboardInterrupt:
        # A second Ctrl-C (or one between steps): the state of the last finished step
        # is saved, with its metrics record, so the resumed log has no hole. Inside a
        # step, its input state may already be donated (deleted): nothing to save then.
        if _donated(state):
            latest = manager.latest_step()
            bar.write(f"interrupted inside step {step + 1}; the latest checkpoint is step {latest}")
        else:
            if manager.latest_step() != step:
                bar.write(f"interrupted: saving a checkpoint at step {step}")
                save(step)
            if logged_step != step and step_metrics is not None:
                logger.log(step, _step_record(step_metrics, state, tc.batch_size, step - tick_step, tick))
        manager.wait_until_finished()
        raise
    finally:
        bar.close()
        manager.wait_until_finished()
        logger.close()
        if is_main:
            storage.push(workdir, *RUN_FILES)
    manager.close()
    return TrainResult(step=step, metrics=last_metrics, workdir=workdir)


def _donated(state) -> bool:
    """Whether any buffer of ``state`` was deleted (donated to a step that did not return)."""
    return any(x.is_deleted() for x in jax.tree.leaves(state) if isinstance(x, jax.Array))


def _step_record(step_metrics, state, batch_size: int, steps: int, since: float) -> dict:
    """The logged record of a step: its metrics and the rates since ``since``."""
    metrics = {k: float(v) for k, v in jax.device_get(step_metrics).items()}
    seconds = max(time.perf_counter() - since, 1e-9)
    metrics["rays_per_sec"] = batch_size * steps / seconds
    metrics["steps_per_sec"] = steps / seconds
    metrics["nonfinite_total"] = int(jax.device_get(state.nonfinite_total))
    return metrics


# Roll-backs to one checkpoint before giving up: the same data and state would fail again.
MAX_ROLLBACKS = 3
# A run's files besides its checkpoints (uploaded together for a gs:// workdir).
RUN_FILES = (checkpoints.RUN_FILE, "config.toml", "metrics.jsonl", "tensorboard")


class _RollbackGuard:
    """Counts roll-backs to each checkpoint step."""

    def __init__(self):
        self.counts: dict[int, int] = {}

    def record(self, to_step: int) -> int:
        self.counts[to_step] = self.counts.get(to_step, 0) + 1
        return self.counts[to_step]


def _roll_back(
    manager,
    state,
    step: int,
    streak: int,
    logger: MetricsLogger,
    bar: ProgressBar,
    guard: _RollbackGuard,
    notify: checkpoints.Notify,
):
    """Back to the latest checkpoint after ``streak`` consecutive non-finite steps.
    The data iterator is not rewound, so the run moves past the batches that failed."""
    manager.wait_until_finished()
    latest = manager.latest_step()
    if latest is None:
        raise RaynerfError(
            f"loss or gradients were non-finite for {streak} consecutive steps (up to step {step}) "
            "and there is no checkpoint to roll back to; lower train.lr_init or check the data"
        )
    if guard.record(latest) > MAX_ROLLBACKS:
        raise RaynerfError(
            f"training keeps diverging after rolling back to the checkpoint of step {latest} "
            f"{MAX_ROLLBACKS} times (non-finite loss or gradients up to step {step}); "
            "lower train.lr_init or train.grad_max_norm, or check the data"
        )
    bar.write(f"{streak} non-finite steps up to step {step}: rolling back to step {latest}")
    restored_step, state = checkpoints.restore_newest(manager, state, None, notify=notify)
    state = state.replace(nonfinite_steps=state.nonfinite_steps * 0)
    logger.log(step, {"event": "rollback", "to_step": restored_step, "nonfinite_streak": streak})
    return state, restored_step


class _TestViewRenderer:
    """Renders the first test view into TensorBoard every ``render_every`` steps."""

    def __init__(self, config: Config, model: MipNerf360, mesh, scene):
        self.render_fn = make_render_fn(model, mesh)
        self.mesh = mesh
        index = scene.test_indices[0] if len(scene.test_indices) else scene.train_indices[0]
        self.rays = image_rays(scene, index, config.model.near, config.model.far)
        self.chunk = choose_chunk(
            config.render.chunk_size,
            int(scene.widths[index] * scene.heights[index]),
            chunk_unit(mesh),
            config.model,
        )

    def log(self, logger: MetricsLogger, step: int, params) -> None:
        out = render_image(self.render_fn, params, self.rays, self.chunk, self.mesh)
        logger.image(step, "test_view/rgb", out["rgb"])
        logger.image(step, "test_view/acc", out["acc"])
