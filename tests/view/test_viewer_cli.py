"""``raynerf view`` from the command line, and a viewer following a run that trains on."""

from __future__ import annotations

import shutil
import time

import pytest
from click.testing import CliRunner
from small_run import STEPS

from raynerf.cli import main
from raynerf.data.scene import load_configured_scene
from raynerf.mesh import make_mesh
from raynerf.storage import checkpoint_dir
from raynerf.training.checkpoints import load_trained_params
from raynerf.training.loop import train
from raynerf.view.frames import FrameRenderer
from raynerf.view.server import Viewer, newest_checkpoint


@pytest.mark.parametrize(
    "args, message",
    [
        ([], "give --workdir (a training run's folder) or --scene"),
        (["--workdir", "{empty}"], "holds no trained run"),
        (["--workdir", "{empty}", "--port", "0"], "Invalid value for '--port'"),
    ],
)
def test_what_view_says_when_there_is_nothing_to_view(tmp_path, args, message):
    (tmp_path / "empty").mkdir()
    result = CliRunner().invoke(main, ["view", *(a.format(empty=tmp_path / "empty") for a in args)])
    assert result.exit_code != 0 and message in result.output
    assert "Traceback" not in result.output


def test_a_run_whose_scene_folder_is_gone_names_it(tmp_path):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "run.json").write_text('{"scene": "gone", "scene_path": "/nowhere/gone"}')
    result = CliRunner().invoke(main, ["view", "--workdir", str(tmp_path / "run")])
    assert result.exit_code == 1
    assert result.output.strip().splitlines()[-1] == (
        "Error: the run's scene folder /nowhere/gone is not on this machine; pass --scene and --data-dir"
    )


@pytest.mark.slow
def test_the_viewer_follows_a_run_that_trains_on(viewed_run, tmp_path, free_port):
    config, scene_path, workdir, viewed_step = viewed_run
    run = tmp_path / "run"
    shutil.copytree(workdir, run)
    mesh = make_mesh()
    step, params = load_trained_params(config, scene_path, run, mesh)
    assert step == viewed_step
    renderer = FrameRenderer(config.model, params, chunk=1024)
    load = lambda: load_trained_params(config, scene_path, run, mesh)
    newest = newest_checkpoint(checkpoint_dir(run), load)
    scene = load_configured_scene(scene_path, config.data)
    viewer = Viewer(
        renderer,
        scene,
        step,
        path_file=tmp_path / "path.json",
        path_size=(64, 48),
        newest=newest,
        port=free_port,
        follow_seconds=0.2,
    )
    try:
        before = renderer.params
        train(config, scene_path, run, show_progress=False)  # resumes to STEPS
        deadline = time.monotonic() + 60
        while viewer.step != STEPS and time.monotonic() < deadline:
            time.sleep(0.2)
        assert viewer.step == STEPS
        assert f"step {STEPS}" in viewer.status.content
        assert renderer.params is not before
    finally:
        viewer.close()
