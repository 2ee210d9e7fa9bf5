"""Broken scenes: one `Error:` line naming the file and the fix, exit code 1, no traceback."""

import shutil
from pathlib import Path

import numpy as np
import pycolmap
import pytest
from click.testing import CliRunner
from PIL import Image

from raynerf.cli import main


@pytest.fixture
def scene(small_scene, tmp_path) -> Path:
    """A writable copy of the small generated scene under tmp_path/data/scene."""
    target = tmp_path / "data" / "scene"
    shutil.copytree(small_scene, target)
    return target


def _info(data_dir: Path, *extra: str, scene: str = "scene"):
    return CliRunner().invoke(
        main, ["info", "--scene", scene, "--data-dir", str(data_dir), "--factor", "8", *extra]
    )


def _assert_one_error(result, *fragments: str):
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    assert isinstance(result.exception, SystemExit), repr(result.exception)  # not a crash
    errors = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1, result.output
    print(errors[0])
    for fragment in fragments:
        assert fragment in errors[0], errors[0]
    return errors[0]


def test_good_scene_reports(scene):
    result = _info(scene.parent)
    assert result.exit_code == 0, result.output
    assert "16 (14 train, 2 test" in result.output and "PINHOLE" in result.output
    assert "images_8/   20x15" in result.output and "full orbit" in result.output


def test_data_dir_missing(tmp_path):
    _assert_one_error(_info(tmp_path / "nowhere"), str(tmp_path / "nowhere"), "--data-dir")


def test_scene_folder_missing(scene):
    _assert_one_error(_info(scene.parent, scene="stump"), "stump", "scenes there: scene")


def test_sparse_missing(scene):
    shutil.rmtree(scene / "sparse")
    _assert_one_error(_info(scene.parent), str(scene / "sparse" / "0"), "missing")


def test_sparse_empty(scene):
    for f in (scene / "sparse" / "0").iterdir():
        f.unlink()
    _assert_one_error(_info(scene.parent), str(scene / "sparse" / "0"), "empty")


def test_model_file_corrupt(scene):
    path = scene / "sparse" / "0" / "images.bin"
    path.write_bytes(path.read_bytes()[:500])
    _assert_one_error(_info(scene.parent), str(scene / "sparse" / "0"), "corrupt")


def test_no_registered_images(scene):
    model = scene / "sparse" / "0"
    shutil.rmtree(model)
    recon = pycolmap.Reconstruction()
    recon.add_camera_with_trivial_rig(
        pycolmap.Camera(model="PINHOLE", width=160, height=120, params=[144, 144, 80, 60], camera_id=1)
    )
    model.mkdir()
    recon.write(str(model))
    _assert_one_error(_info(scene.parent), str(model / "images.bin"), "no registered images")


def test_image_absent_on_disk(scene):
    (scene / "images_8" / "frame_0005.JPG").unlink()
    _assert_one_error(_info(scene.parent), str(scene / "images_8" / "frame_0005.JPG"), "absent")


def test_corrupt_image(scene):
    (scene / "images_8" / "frame_0002.JPG").write_bytes(b"this is not a JPEG at all" * 10)
    _assert_one_error(_info(scene.parent), str(scene / "images_8" / "frame_0002.JPG"), "corrupt")


def test_truncated_image(scene):
    path = scene / "images_8" / "frame_0009.JPG"
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * 0.7)])  # the header still reads, the pixels don't
    _assert_one_error(_info(scene.parent), str(path), "corrupt or truncated (")


def test_image_of_another_size(scene):
    path = scene / "images_8" / "frame_0004.JPG"
    Image.fromarray(np.zeros((30, 40, 3), np.uint8)).save(path)
    _assert_one_error(_info(scene.parent), str(path), "40x30", "160x120")


def test_unsupported_camera_model(scene):
    model = scene / "sparse" / "0"
    recon = pycolmap.Reconstruction(str(model))
    camera = recon.cameras[1]
    camera.model = pycolmap.CameraModelId.OPENCV_FISHEYE
    camera.params = [144, 144, 80, 60, 0.01, 0, 0, 0]
    recon.write(str(model))
    _assert_one_error(_info(scene.parent), "OPENCV_FISHEYE", str(model / "cameras.bin"))


def test_factor_folder_missing_then_created_on_request(scene):
    shutil.rmtree(scene / "images_8")
    _assert_one_error(_info(scene.parent), str(scene / "images_8"), "--downsample")
    result = _info(scene.parent, "--downsample")
    assert result.exit_code == 0, result.output
    sizes = {Image.open(p).size for p in (scene / "images_8").iterdir()}
    assert sizes == {(20, 15)} and len(list((scene / "images_8").iterdir())) == 16


def test_make_scene_refuses_a_non_empty_folder(scene):
    result = CliRunner().invoke(main, ["make-scene", str(scene)])
    _assert_one_error(result, str(scene), "not empty")
