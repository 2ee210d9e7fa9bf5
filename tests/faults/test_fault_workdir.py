"""The workdir's identity (run.json).

Promises: a first run that fails its checks leaves the workdir free for a corrected
run (run.json is written with the first checkpoint); two different captures in
folders of the same name are told apart; a run.json written before the COLMAP
fingerprint existed still resumes.
"""

from __future__ import annotations

import json
import shutil

import pycolmap
import pytest
from click.testing import CliRunner
from fault_helpers import one_error_line
from small_run import STEPS, cli_args, small_config

from raynerf.cli import main
from raynerf.errors import RaynerfError
from raynerf.training import checkpoints

EXTRA = ("train.checkpoint_every=4",)


def test_a_failed_first_run_then_a_corrected_one(fault_scene, fault_cache, tmp_path):
    """A first run with another model size on a scene missing an image fails with one
    Error line and records no identity; the corrected run (scene restored, the usual
    model) trains in that same workdir instead of being refused."""
    scene = tmp_path / "data" / fault_scene.name
    shutil.copytree(fault_scene, scene)
    image = sorted((scene / "images_4").iterdir())[3]
    hidden = image.rename(tmp_path / image.name)
    workdir = tmp_path / "run"
    first = cli_args(scene, workdir, fault_cache, *EXTRA, "model.nerf_net_width=24")
    result = CliRunner().invoke(main, ["train", *first])
    assert result.exit_code == 1
    assert image.name in one_error_line(result.output)
    assert not (workdir / checkpoints.RUN_FILE).exists()
    assert not (workdir / "checkpoints").exists() or not any((workdir / "checkpoints").iterdir())

    hidden.rename(image)
    result = CliRunner().invoke(main, ["train", *cli_args(scene, workdir, fault_cache, *EXTRA)])
    assert result.exit_code == 0, result.output
    assert f"to step {STEPS}" in result.output
    recorded = json.loads((workdir / checkpoints.RUN_FILE).read_text())
    assert recorded["model"]["nerf_net_width"] == 16 and recorded["colmap"]


def test_another_capture_in_a_folder_of_the_same_name_is_refused(trained, fault_scene, fault_cache, tmp_path):
    """A different COLMAP model in a folder named like the trained scene: train and eval
    refuse the workdir with one Error line; the same capture copied elsewhere is fine."""
    other = tmp_path / "elsewhere" / fault_scene.name
    shutil.copytree(fault_scene, other)
    _perturb_model(other)
    for command in ("train", "eval"):
        result = CliRunner().invoke(main, [command, *cli_args(other, trained, fault_cache, *EXTRA, steps=0)])
        assert result.exit_code == 1
        line = one_error_line(result.output)
        assert "another capture" in line and "sparse" in line and "--workdir" in line, line
    copy = tmp_path / "copy" / fault_scene.name
    shutil.copytree(fault_scene, copy)
    checkpoints.check_workdir(trained, copy, small_config(fault_cache, *EXTRA), write=False)


def _perturb_model(scene) -> None:
    """Moves one 3D point of the COLMAP model (another reconstruction of the same views)."""
    model = pycolmap.Reconstruction(str(scene / "sparse" / "0"))
    point_id = next(iter(model.points3D))
    model.points3D[point_id].xyz = model.points3D[point_id].xyz + 0.5
    model.write(str(scene / "sparse" / "0"))


def test_a_run_file_without_the_fingerprint_still_resumes(tmp_path, fault_scene, fault_cache):
    """run.json from before the COLMAP fingerprint: accepted for the same scene and model."""
    config = small_config(fault_cache)
    identity = checkpoints.run_identity(fault_scene, config)
    assert identity["colmap"] == checkpoints.colmap_fingerprint(fault_scene) is not None
    identity.pop("colmap")
    (tmp_path / checkpoints.RUN_FILE).write_text(json.dumps(identity))
    checkpoints.check_workdir(tmp_path, fault_scene, config, write=False)
    other = small_config(fault_cache, "model.nerf_net_width=24")
    with pytest.raises(RaynerfError, match="model.nerf_net_width"):  # still checks the rest
        checkpoints.check_workdir(tmp_path, fault_scene, other, write=False)
