"""The viewer's pieces without a browser: camera conventions, sizes, the camera path it
saves, the checkpoint follower, and frames rendered in bands against the model applied
to the whole image at once."""

from __future__ import annotations

import math

import jax
import numpy as np
import pytest
from small_run import TWO_LAYER_MODEL

from raynerf.config import load_config
from raynerf.data.cameras import camera_rays
from raynerf.model.mipnerf360 import MipNerf360
from raynerf.model.rays import Rays
from raynerf.render import paths
from raynerf.view.frames import FrameRenderer, as_image, image_size, pixels_for, view_intrinsics
from raynerf.view.server import (
    Keyframe,
    finished_steps,
    newest_checkpoint,
    path_from_keyframes,
    pose_from_viser,
    start_pose,
    viser_from_pose,
)


def test_a_viser_quaternion_is_the_rotation_it_names():
    # 90 degrees about z: x -> y, y -> -x (written out by hand).
    half = math.pi / 4
    pose = pose_from_viser([math.cos(half), 0, 0, math.sin(half)], [1.0, 2.0, 3.0])
    np.testing.assert_allclose(pose[:, :3], [[0, -1, 0], [1, 0, 0], [0, 0, 1]], atol=1e-12)
    np.testing.assert_allclose(pose[:, 3], [1, 2, 3])


def test_poses_round_trip_through_viser():
    rng = np.random.default_rng(0)
    looks = paths.look_at(rng.normal(size=(20, 3)), rng.normal(size=(20, 3)) * 0.1, np.array([0.0, 0, 1]))
    for pose in looks:
        wxyz, position = viser_from_pose(pose)
        np.testing.assert_allclose(pose_from_viser(wxyz, position), pose, atol=1e-9)


def test_view_intrinsics_match_the_field_of_view():
    fx, fy, cx, cy = view_intrinsics(math.radians(90), 200, 100)[:4]
    assert fx == fy == pytest.approx(50.0) and (cx, cy) == (100, 50)
    # The top edge's ray makes half the field of view with the optical axis.
    fov = math.radians(40)
    fy = view_intrinsics(fov, 64, 48)[1]
    assert math.atan2(24, fy) == pytest.approx(fov / 2)
    with pytest.raises(ValueError):
        view_intrinsics(math.pi, 10, 10)


def test_image_sizes_follow_the_budget_and_the_aspect():
    width, height = image_size(16 / 9, 90_000)
    assert abs(width / height - 16 / 9) < 0.02 and abs(width * height - 90_000) < 600
    assert image_size(2.0, 1e9, max_height=100) == (200, 100)
    assert image_size(1.0, 0.0) == (1, 1)
    assert pixels_for(0.25, 40_000) == 10_000
    assert pixels_for(0.25, 10, lo=100) == 100 and pixels_for(1, 1e9, hi=5000) == 5000


def test_as_image_shows_each_output():
    outputs = {
        "rgb": np.full((4, 6, 3), 0.5, np.float32),
        "acc": np.linspace(0, 1, 24, dtype=np.float32).reshape(4, 6, 1),
        "distance_mean": np.linspace(1, 5, 24, dtype=np.float32).reshape(4, 6, 1),
    }
    assert (as_image(outputs, "colour") == 128).all()
    acc = as_image(outputs, "accumulation")
    assert acc.shape == (4, 6, 3) and acc[0, 0, 0] == 0 and acc[-1, -1, 0] == 255
    distance = as_image(outputs, "distance")
    assert distance.shape == (4, 6, 3) and distance.dtype == np.uint8
    with pytest.raises(ValueError):
        as_image(outputs, "normals")


def test_the_saved_path_passes_through_the_keyframes(tmp_path):
    up = np.array([0.0, 0, 1])
    centres = np.array([[2.0, 0, 0.5], [0, 2, 0.6], [-2, 0, 0.4]])
    poses = paths.look_at(centres, np.zeros((3, 3)), up)
    keys = [Keyframe(pose, math.radians(50)) for pose in poses]
    path, intrinsics = path_from_keyframes(keys, 21, (160, 120), loop=False)
    assert path.shape == (21, 3, 4)
    np.testing.assert_allclose(path[0], poses[0], atol=1e-9)
    np.testing.assert_allclose(path[-1], poses[-1], atol=1e-9)
    assert intrinsics["width"] == 160 and intrinsics["height"] == 120
    assert math.atan2(60, intrinsics["fy"]) == pytest.approx(math.radians(25))
    # What "Save path" writes, raynerf render reads back as it was.
    paths.save_path_json(tmp_path / "path.json", path, intrinsics)
    loaded, read = paths.load_path_json(tmp_path / "path.json")
    np.testing.assert_array_equal(loaded, path)
    assert read == intrinsics
    with pytest.raises(Exception, match="at least 3 keyframes"):
        path_from_keyframes(keys[:2], 10, (160, 120), loop=True)


def test_a_new_tab_starts_behind_the_first_test_camera():
    poses = paths.look_at(np.array([[3.0, 0, 0], [-3, 0, 0]]), np.zeros((2, 3)), np.array([0.0, 0, 1]))
    start = start_pose(poses, 0)
    np.testing.assert_allclose(start[:, :3], poses[0][:, :3])
    # Straight back along the viewing axis (+x here: the camera looks towards -x).
    assert start[0, 3] > 3.0 and abs(start[1, 3]) < 1e-12 and abs(start[2, 3]) < 1e-12


def test_only_finished_checkpoints_are_followed(tmp_path):
    for name in ("4", "8", "12.orbax-checkpoint-tmp-1700000000", "3.damaged-1"):
        (tmp_path / name).mkdir()
    (tmp_path / "16").write_text("a file, not a checkpoint")
    assert finished_steps(tmp_path) == [4, 8]
    assert finished_steps(tmp_path / "missing") == []

    loads = []
    newest = newest_checkpoint(tmp_path, lambda: loads.append(1) or (8, "params at 8"))
    assert newest(8) is None and not loads  # nothing newer: nothing restored
    assert newest(4) == (8, "params at 8") and len(loads) == 1


@pytest.fixture(scope="module")
def small_model():
    config = load_config("tiny", TWO_LAYER_MODEL)
    model = MipNerf360(config.model)
    rays = camera_rays(np.eye(3, 4), np.array([8.0, 8, 4, 4, 0, 0, 0, 0]), 8, 8, 0.2, 1e6)
    params = model.init(jax.random.PRNGKey(0), None, Rays.from_batch(rays))["params"]
    return config.model, model, params


def test_frames_rendered_in_bands_match_the_whole_image(small_model):
    model_config, model, params = small_model
    renderer = FrameRenderer(model_config, params, chunk=64)  # 9 rows of 7 pixels per band
    pose = paths.look_at(np.array([[0.0, -2, 0.5]]), np.zeros((1, 3)), np.array([0.0, 0, 1]))[0]
    intrinsics = view_intrinsics(math.radians(60), 7, 20)
    frame = renderer.render(pose, intrinsics, 7, 20)
    rays = camera_rays(pose, intrinsics, 7, 20, model_config.near, model_config.far)
    whole = model.apply({"params": params}, None, Rays.from_batch(rays))[-1]
    np.testing.assert_allclose(frame["rgb"], whole["rgb"], atol=2e-5)
    np.testing.assert_allclose(frame["acc"], whole["acc"], atol=2e-5)
    np.testing.assert_allclose(frame["distance_mean"], whole["distance_mean"], rtol=1e-4)
    assert renderer.rays_per_second > 0
    # Abandoned between bands: no frame.
    assert renderer.render(pose, intrinsics, 7, 20, abandon=lambda: True) is None
