"""Checkpoints: resume equals an uninterrupted run, a killed save leaves earlier
checkpoints loadable, and a workdir of another scene or model is refused."""

import json
import signal
import time
from pathlib import Path

import jax
import numpy as np
import pytest
from click.testing import CliRunner
from small_run import cache, cli_args, popen_cli, scene, small_config, small_scene  # noqa: F401 (fixtures)

from raynerf.cli import main
from raynerf.data.cache import load_pixels
from raynerf.data.pipeline import make_train_iterator
from raynerf.data.scene import load_scene
from raynerf.errors import RaynerfError
from raynerf.mesh import make_mesh
from raynerf.model.mipnerf360 import MipNerf360
from raynerf.training import checkpoints
from raynerf.training.checkpoints import load_trained_params
from raynerf.training.loop import train
from raynerf.training.metrics_log import read_metrics
from raynerf.training.optim import make_optimizer
from raynerf.training.step import create_train_state


def _params(config, scene, workdir):
    return load_trained_params(config, scene, workdir, make_mesh())


@pytest.fixture(scope="module")
def straight(scene, cache, tmp_path_factory) -> Path:
    """A run of STEPS (8) steps straight through, with a checkpoint every 4."""
    workdir = tmp_path_factory.mktemp("runs") / "straight"
    result = CliRunner().invoke(main, ["train", *cli_args(scene, workdir, cache, "train.checkpoint_every=4")])
    assert result.exit_code == 0, result.output
    return workdir


def test_resume_gives_the_parameters_of_a_straight_run(scene, cache, straight, tmp_path):
    config = small_config(cache, "train.checkpoint_every=4")

    def interrupt_at_6(step, metrics):
        if step == 6:
            raise KeyboardInterrupt  # what Ctrl-C between two steps does

    with pytest.raises(KeyboardInterrupt):
        train(config, scene, tmp_path / "resumed", show_progress=False, reporter=interrupt_at_6)
    step, params_6 = _params(config, scene, tmp_path / "resumed")
    assert step == 6  # the interrupt saved a checkpoint between the regular ones
    result = train(config, scene, tmp_path / "resumed", show_progress=False)
    assert result.step == 8

    step_a, params_a = _params(config, scene, straight)
    step_b, params_b = _params(config, scene, tmp_path / "resumed")
    assert step_a == step_b == 8
    for a, b in zip(jax.tree.leaves(params_a), jax.tree.leaves(params_b)):
        np.testing.assert_allclose(np.asarray(b), np.asarray(a), rtol=1e-5, atol=1e-7)
    # The comparison can tell runs apart: two more steps do move the parameters.
    moved = max(
        float(np.max(np.abs(np.asarray(a) - np.asarray(s))))
        for a, s in zip(jax.tree.leaves(params_a), jax.tree.leaves(params_6))
    )
    assert moved > 1e-6
    # The resumed log replays nothing twice and ends with the same loss.
    log_a, log_b = read_metrics(straight), read_metrics(tmp_path / "resumed")
    assert [r["step"] for r in log_b] == [r["step"] for r in log_a] == [2, 4, 6, 8]
    assert log_b[-1]["loss"] == pytest.approx(log_a[-1]["loss"], rel=1e-5)


def _finished_steps(directory: Path) -> list[int]:
    if not directory.is_dir():
        return []
    return sorted(int(p.name) for p in directory.iterdir() if p.name.isdigit())


def _partial_saves(directory: Path) -> list[str]:
    if not directory.is_dir():
        return []
    return [p.name for p in directory.iterdir() if "tmp" in p.name]


def _kill_during_a_save(args: list[str], ckpt: Path, timeout: float = 150) -> bool:
    """Starts ``raynerf train``, SIGKILLs it as soon as a save is under way while an
    earlier checkpoint exists; True when the kill did leave a partial save behind."""
    proc = popen_cli("train", *args)
    try:
        deadline = time.monotonic() + timeout
        while proc.poll() is None and time.monotonic() < deadline:
            if _finished_steps(ckpt) and _partial_saves(ckpt):
                proc.send_signal(signal.SIGKILL)
                break
            time.sleep(0.001)
        else:
            output = proc.stdout.read() if proc.poll() is not None else ""
            pytest.fail(f"training ended or stalled before a save could be interrupted:\n{output[-3000:]}")
    finally:
        proc.kill()
        proc.wait()
        proc.stdout.close()
    return bool(_partial_saves(ckpt))


def test_killing_the_process_during_a_save_leaves_checkpoints_loadable(scene, cache, tmp_path):
    workdir = tmp_path / "killed"
    ckpt = workdir / "checkpoints"
    extra = ("train.checkpoint_every=1", "train.keep_checkpoints=2")
    args = cli_args(scene, workdir, cache, *extra)
    for _ in range(4):  # each try resumes the last; a kill lands mid-save almost always
        if _kill_during_a_save(args, ckpt):
            break
    else:
        pytest.fail("never caught a save in progress")
    partial = _partial_saves(ckpt)
    assert partial, "the kill should have left an unfinished save"

    config = small_config(cache, *extra)
    loaded = load_scene(scene, config.data.factor)
    pixels, _ = load_pixels(loaded, config.data.cache_dir)
    state_like = create_train_state(
        config, MipNerf360(config.model), make_optimizer(config.train), make_mesh()
    )
    manager = checkpoints.checkpoint_manager(ckpt, keep=2, async_save=False)
    listed = manager.all_steps()
    assert listed, "no finished checkpoint survived"
    for step in listed:  # every checkpoint orbax lists restores, with the data position
        iterator = make_train_iterator(loaded, pixels, config, 0, 1)
        restored_step, state = checkpoints.restore(manager, state_like, iterator, step=step)
        assert restored_step == step and int(state.step) == step
        assert all(np.all(np.isfinite(x)) for x in jax.tree.leaves(state.params))
        assert iterator.get_state() != make_train_iterator(loaded, pixels, config, 0, 1).get_state()
    manager.close()

    # Running again resumes from the latest finished checkpoint and sweeps the partial save.
    resumed = train(config, scene, workdir, show_progress=False)
    assert resumed.step == config.train.max_steps
    assert not _partial_saves(ckpt)


def _assert_one_error_line(result, *phrases):
    assert result.exit_code != 0
    assert "Traceback" not in result.output
    lines = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert len(lines) == 1, result.output
    for phrase in phrases:
        assert phrase in lines[0], lines[0]


def test_workdir_of_another_scene_is_refused(scene, cache, straight, tmp_path):
    trained_workdir = straight
    other = small_scene(tmp_path, "other")
    before = sorted(p.name for p in (trained_workdir / "checkpoints").iterdir())
    runner = CliRunner()
    for command in ("train", "eval"):
        result = runner.invoke(main, [command, *cli_args(other, trained_workdir, cache, steps=0)])
        _assert_one_error_line(result, "'small'", "'other'", "--workdir")
    assert sorted(p.name for p in (trained_workdir / "checkpoints").iterdir()) == before


def test_workdir_of_another_model_config_is_refused(scene, cache, straight):
    args = cli_args(
        scene, straight, cache, "model.nerf_net_width=24", "model.num_nerf_samples=4", "data.recentre=cameras"
    )
    result = CliRunner().invoke(main, ["train", *args])
    _assert_one_error_line(
        result, "model.nerf_net_width", "model.num_nerf_samples", "data.recentre", "--workdir"
    )
    # Training settings are no reason to refuse: the same run, keeping more checkpoints, is accepted.
    args = cli_args(scene, straight, cache, "train.keep_checkpoints=5", "train.checkpoint_every=4")
    result = CliRunner().invoke(main, ["train", *args])
    assert result.exit_code == 0, result.output
    assert "to step 8" in result.output


def test_run_file_written_before_the_frame_setting_counts_as_the_focus_frame(tmp_path):
    scene_path = tmp_path / "scene"
    config = small_config(tmp_path / "cache")
    identity = checkpoints.run_identity(scene_path, config)
    identity.pop("recentre")  # as run.json was written before data.recentre existed
    (tmp_path / checkpoints.RUN_FILE).write_text(json.dumps(identity))
    checkpoints.check_workdir(tmp_path, scene_path, config, write=False)  # focus: accepted
    cameras = small_config(tmp_path / "cache", 'data.recentre="cameras"')
    with pytest.raises(RaynerfError, match="data.recentre"):
        checkpoints.check_workdir(tmp_path, scene_path, cameras, write=False)
