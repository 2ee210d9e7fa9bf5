"""The training loop: metrics.jsonl, TensorBoard, the progress bar, non-finite steps and
roll-back, and the batch-size check."""

import json
import math
import re
import struct
from pathlib import Path

import jax
import numpy as np
import pytest
from click.testing import CliRunner
from small_run import cache, cli_args, cli_env, run_cli, scene, small_config  # noqa: F401 (fixtures)
from tensorboardX.proto import event_pb2

from raynerf.cli import main
from raynerf.data.cache import load_pixels
from raynerf.data.pipeline import make_train_iterator
from raynerf.data.scene import load_scene
from raynerf.errors import RaynerfError
from raynerf.mesh import global_batch, make_mesh
from raynerf.model.mipnerf360 import MipNerf360
from raynerf.training import loop
from raynerf.training.checkpoints import load_trained_params
from raynerf.training.metrics_log import read_metrics
from raynerf.training.optim import learning_rate, make_optimizer
from raynerf.training.step import BATCH_FIELDS, check_batch_size, create_train_state, jit_train_step

LOGGED = (
    "loss",
    "loss_data",
    "loss_interlevel",
    "loss_distortion",
    "psnr",
    "lr",
    "rays_per_sec",
    "grad_norm",
)


def read_events(logdir: Path) -> tuple[dict[str, dict[int, float]], dict[str, list[int]]]:
    """Scalars {tag: {step: value}} and image steps {tag: [step]} from TensorBoard event
    files, parsed as TFRecords (length, crc, payload, crc) of ``Event`` protos."""
    scalars: dict[str, dict[int, float]] = {}
    images: dict[str, list[int]] = {}
    for path in sorted(logdir.rglob("events.out.tfevents.*")):
        data, pos = path.read_bytes(), 0
        while pos < len(data):
            (length,) = struct.unpack("<Q", data[pos : pos + 8])
            event = event_pb2.Event.FromString(data[pos + 12 : pos + 12 + length])
            pos += 12 + length + 4
            for value in event.summary.value:
                if value.HasField("image"):
                    images.setdefault(value.tag, []).append(event.step)
                else:
                    scalars.setdefault(value.tag, {})[event.step] = value.simple_value
    return scalars, images


def test_cli_run_logs_metrics_tensorboard_and_a_progress_bar(scene, cache, tmp_path):
    workdir = tmp_path / "run"
    args = cli_args(scene, workdir, cache, "train.render_every=4")
    result = CliRunner().invoke(main, ["train", *args])
    assert result.exit_code == 0, result.output
    # The bar: step count, loss, PSNR, rays/s and elapsed<remaining time.
    assert re.search(r"train: .*\d+/8", result.output), result.output
    for field in ("loss=", "psnr=", "rays_s="):
        assert field in result.output
    assert re.search(r"\d\d:\d\d<\d\d:\d\d", result.output)

    records = [r for r in read_metrics(workdir) if "event" not in r]
    assert [r["step"] for r in records] == [2, 4, 6, 8]
    config = small_config(cache)
    for record in records:
        for key in LOGGED:
            assert math.isfinite(record[key]), (key, record)
        assert record["rays_per_sec"] > 0 and record["grad_norm"] > 0
        # lr is the rate the step used: the schedule at the step's index (step - 1).
        assert record["lr"] == pytest.approx(float(learning_rate(config.train, record["step"] - 1)), rel=1e-6)
        # Charbonnier with a 1e-3 pad is close to the mean absolute error, which
        # bounds the RMS error from below: PSNR <= -20 log10(data loss) (+ slack).
        assert record["psnr"] <= -20 * math.log10(record["loss_data"]) + 0.1

    scalars, images = read_events(workdir / "tensorboard")
    for key in LOGGED:
        logged = scalars[f"train/{key}"]
        assert sorted(logged) == [2, 4, 6, 8]
        for record in records:
            assert logged[record["step"]] == pytest.approx(record[key], rel=1e-6)
    assert sorted(images["test_view/rgb"]) == [4, 8]
    assert sorted(images["test_view/acc"]) == [4, 8]


def test_nonfinite_step_is_not_applied_but_counted(scene, cache):
    config = small_config(cache)
    loaded = load_scene(scene, config.data.factor)
    pixels, _ = load_pixels(loaded, config.data.cache_dir)
    batch = next(make_train_iterator(loaded, pixels, config, 0, 1))
    mesh = make_mesh()
    model, tx = MipNerf360(config.model), make_optimizer(config.train)
    state = create_train_state(config, model, tx, mesh)
    step_fn = jit_train_step(config, model, tx, mesh, state)

    bad = dict(batch, rgb=batch["rgb"].copy())
    bad["rgb"][0, 0] = np.nan
    before = jax.device_get((state.params, state.opt_state))  # the state is donated below
    state, metrics = step_fn(state, global_batch(mesh, bad, BATCH_FIELDS))
    assert int(state.step) == 1
    assert int(state.nonfinite_steps) == 1 and int(state.nonfinite_total) == 1
    assert int(metrics["skipped"]) == 1 and not np.isfinite(float(metrics["loss"]))
    after = jax.device_get((state.params, state.opt_state))
    for old, new in zip(jax.tree.leaves(before), jax.tree.leaves(after)):
        np.testing.assert_array_equal(new, old)  # neither applied nor zeroed

    state, metrics = step_fn(state, global_batch(mesh, batch, BATCH_FIELDS))
    assert int(metrics["skipped"]) == 0 and np.isfinite(float(metrics["loss"]))
    assert int(state.nonfinite_steps) == 0 and int(state.nonfinite_total) == 1
    moved = [
        not np.array_equal(a, b)
        for a, b in zip(jax.tree.leaves(after[0]), jax.tree.leaves(jax.device_get(state.params)))
    ]
    assert all(moved)


class _Poisoned:
    """The training iterator with a NaN colour in the batches whose (1-based) call
    number satisfies ``bad``; checkpointable like a grain iterator."""

    def __init__(self, inner, bad):
        self.inner, self.bad, self.calls = inner, bad, 0

    def __next__(self):
        self.calls += 1
        batch = next(self.inner)
        if self.bad(self.calls):
            batch = dict(batch, rgb=np.full_like(batch["rgb"], np.nan))
        return batch

    def get_state(self) -> bytes:
        return json.dumps(self.inner.get_state()).encode()

    def set_state(self, state: bytes) -> None:
        self.inner.set_state(json.loads(state))

    def start_prefetch(self) -> None:
        pass


def _poison(monkeypatch, bad) -> None:
    real = loop.make_train_iterator
    monkeypatch.setattr(loop, "make_train_iterator", lambda *a, **k: _Poisoned(real(*a, **k), bad))


RUN = ("train.log_every=1", "train.checkpoint_every=3", "train.max_nonfinite_steps=2")


def test_transient_nonfinite_steps_are_skipped_then_rolled_back(scene, cache, tmp_path, monkeypatch):
    _poison(monkeypatch, lambda call: call in (4, 5))
    config = small_config(cache, *RUN)
    result = loop.train(config, scene, tmp_path, show_progress=False)
    assert result.step == 8

    records = read_metrics(tmp_path)
    first_4, first_5 = (next(r for r in records if r["step"] == s) for s in (4, 5))
    assert first_4["skipped"] == 1 and first_4["nonfinite_total"] == 1
    assert first_5["skipped"] == 1 and first_5["nonfinite_total"] == 2
    assert first_4["loss"] is None  # non-finite values are written as null (strict JSON)
    json.loads(
        (tmp_path / "metrics.jsonl").read_text().splitlines()[3],
        parse_constant=lambda c: pytest.fail(f"non-JSON constant {c}"),
    )
    rollbacks = [r for r in records if r.get("event") == "rollback"]
    assert rollbacks == [{"step": 5, "event": "rollback", "to_step": 3, "nonfinite_streak": 2}]
    after = records[records.index(rollbacks[0]) + 1 :]
    assert [r["step"] for r in after] == [4, 5, 6, 7, 8]
    assert all(r["skipped"] == 0 and math.isfinite(r["loss"]) for r in after)
    _, params = load_trained_params(config, scene, tmp_path, make_mesh())
    assert all(np.all(np.isfinite(p)) for p in jax.tree.leaves(params))


def test_persistent_nonfinite_steps_stop_after_repeated_rollbacks(scene, cache, tmp_path, monkeypatch):
    _poison(monkeypatch, lambda call: call >= 4)
    with pytest.raises(RaynerfError, match="rolling back to the checkpoint of step 3 3 times"):
        loop.train(small_config(cache, *RUN), scene, tmp_path, show_progress=False)
    events = [r for r in read_metrics(tmp_path) if r.get("event") == "rollback"]
    assert len(events) == 3 and all(e["to_step"] == 3 for e in events)


def test_nonfinite_steps_without_a_checkpoint_are_a_clear_error(scene, cache, tmp_path, monkeypatch):
    _poison(monkeypatch, lambda call: True)
    with pytest.raises(RaynerfError, match="no checkpoint to roll back to"):
        loop.train(
            small_config(cache, *RUN[:1], "train.max_nonfinite_steps=2"), scene, tmp_path, show_progress=False
        )
    assert not (tmp_path / "checkpoints").exists() or not any(
        p.name.isdigit() for p in (tmp_path / "checkpoints").iterdir()
    )


@pytest.mark.parametrize(
    "batch, devices, nearest", [(63, 2, 62), (1000, 3, 999), (1001, 3, 1002), (5, 8, 8), (16385, 8, 16384)]
)
def test_batch_size_must_divide_over_devices(batch, devices, nearest):
    with pytest.raises(RaynerfError, match=f"--set train.batch_size={nearest}$"):
        check_batch_size(batch, devices)
    check_batch_size(nearest, devices)


def test_cli_refuses_an_indivisible_batch_on_two_devices(scene, cache, tmp_path):
    env = cli_env(XLA_FLAGS="--xla_force_host_platform_device_count=2")
    result = run_cli("train", *cli_args(scene, tmp_path / "run", cache, "train.batch_size=63"), env=env)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1, result.stderr
    assert "over 2 devices" in errors[0] and "--set train.batch_size=62" in errors[0]
    assert not (tmp_path / "run" / "checkpoints").exists()
