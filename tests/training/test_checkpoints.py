"""Checkpoints: a workdir of another scene or model is refused. (Resume after
interrupts and kills, and damaged checkpoints: tests/faults/.)"""

import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from small_run import cache, cli_args, scene, small_config, small_scene  # noqa: F401 (fixtures)

from raynerf.cli import main
from raynerf.errors import RaynerfError
from raynerf.training import checkpoints


@pytest.fixture(scope="module")
def straight(scene, cache, tmp_path_factory) -> Path:
    """A run of STEPS (8) steps straight through, with a checkpoint every 4."""
    workdir = tmp_path_factory.mktemp("runs") / "straight"
    result = CliRunner().invoke(main, ["train", *cli_args(scene, workdir, cache, "train.checkpoint_every=4")])
    assert result.exit_code == 0, result.output
    return workdir


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
        scene, straight, cache, "model.nerf_net_width=24", "model.num_nerf_samples=4", "data.recentre=focus"
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
    config = small_config(tmp_path / "cache", 'data.recentre="focus"')
    identity = checkpoints.run_identity(scene_path, config)
    identity.pop("recentre")  # as run.json was written before data.recentre existed
    (tmp_path / checkpoints.RUN_FILE).write_text(json.dumps(identity))
    checkpoints.check_workdir(tmp_path, scene_path, config, write=False)  # focus: accepted
    cameras = small_config(tmp_path / "cache", 'data.recentre="cameras"')
    with pytest.raises(RaynerfError, match="data.recentre"):
        checkpoints.check_workdir(tmp_path, scene_path, cameras, write=False)
