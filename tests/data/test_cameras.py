"""Camera models: distortion inverse, agreement with pycolmap, pixel -> ray geometry."""

import numpy as np
import pycolmap
import pytest

from raynerf.data import cameras as cam
from raynerf.errors import RaynerfError

DISTORTED = {
    "SIMPLE_RADIAL": [300.0, 160.0, 120.0, -0.12],
    "RADIAL": [300.0, 160.0, 120.0, -0.1, 0.03],
    "OPENCV": [310.0, 290.0, 158.0, 123.0, -0.15, 0.04, 0.002, -0.003],
}


def _grid(width=320, height=240, step=23):
    ys, xs = np.meshgrid(np.arange(0, height, step), np.arange(0, width, step), indexing="ij")
    return xs.ravel(), ys.ravel()


def test_undistort_inverts_distort():
    rng = np.random.default_rng(0)
    uv = rng.uniform(-0.6, 0.6, size=(500, 2))
    dist = np.array([-0.2, 0.05, 0.003, -0.002])
    back = cam.undistort(cam.distort(uv, dist), dist)
    np.testing.assert_allclose(back, uv, atol=1e-10)


def test_distortion_jacobian_matches_finite_differences():
    rng = np.random.default_rng(1)
    uv = rng.uniform(-0.5, 0.5, size=(50, 2))
    dist = np.array([-0.2, 0.05, 0.003, -0.002])
    eps = 1e-6
    numeric = np.stack(
        [(cam.distort(uv + eps * e, dist) - cam.distort(uv - eps * e, dist)) / (2 * eps) for e in np.eye(2)],
        -1,
    )
    np.testing.assert_allclose(cam._distort_jacobian(uv, dist), numeric, atol=1e-7)


@pytest.mark.parametrize("model", sorted(DISTORTED))
def test_rays_through_distorted_pixels_match_pycolmap(model):
    params = DISTORTED[model]
    colmap_cam = pycolmap.Camera(model=model, width=320, height=240, params=params)
    ours = cam.intrinsics_from_colmap(model, 320, 240, params)
    x, y = _grid()
    expected = colmap_cam.cam_from_img(np.stack([x + 0.5, y + 0.5], -1).astype(np.float64))
    rays = cam.rays_from_pixels(np.eye(4)[:3], ours.as_array(), x, y, 0.2, 1e6)
    np.testing.assert_allclose(rays["directions"][:, :2], expected, atol=1e-5)
    np.testing.assert_allclose(rays["directions"][:, 2], 1.0)


@pytest.mark.parametrize("model", sorted(DISTORTED))
def test_projection_matches_pycolmap(model):
    params = DISTORTED[model]
    colmap_cam = pycolmap.Camera(model=model, width=320, height=240, params=params)
    ours = cam.intrinsics_from_colmap(model, 320, 240, params)
    rng = np.random.default_rng(2)
    points = np.concatenate([rng.uniform(-0.4, 0.4, (100, 2)), np.ones((100, 1))], -1) * rng.uniform(
        1, 5, (100, 1)
    )
    expected = colmap_cam.img_from_cam(points)
    np.testing.assert_allclose(cam.project(points, np.eye(4)[:3], ours.as_array()), expected, atol=1e-8)


def test_simple_models_match_pycolmap():
    for model, params in [("SIMPLE_PINHOLE", [200.0, 80.0, 60.0]), ("PINHOLE", [200.0, 210.0, 81.0, 59.0])]:
        colmap_cam = pycolmap.Camera(model=model, width=160, height=120, params=params)
        ours = cam.intrinsics_from_colmap(model, 160, 120, params)
        x, y = _grid(160, 120, 7)
        expected = colmap_cam.cam_from_img(np.stack([x + 0.5, y + 0.5], -1).astype(np.float64))
        rays = cam.rays_from_pixels(np.eye(4)[:3], ours.as_array(), x, y, 0.2, 1e6)
        np.testing.assert_allclose(rays["directions"][:, :2], expected, atol=1e-6)


def test_unsupported_model_is_named():
    with pytest.raises(RaynerfError, match="OPENCV_FISHEYE"):
        cam.intrinsics_from_colmap("OPENCV_FISHEYE", 10, 10, [1, 1, 5, 5, 0, 0, 0, 0])


def test_camera_rays_geometry():
    """Pinhole rays: rotated by the pose, unit depth, radii = 2/sqrt(12)/f, pixel centres."""
    intr = cam.Intrinsics("PINHOLE", 40, 30, fx=50.0, fy=50.0, cx=20.0, cy=15.0)
    angle = 0.7
    rotation = np.array([[np.cos(angle), 0, np.sin(angle)], [0, 1, 0], [-np.sin(angle), 0, np.cos(angle)]])
    pose = np.concatenate([rotation, [[1.0], [2.0], [3.0]]], 1)
    rays = cam.camera_rays(pose, intr, 40, 30, 0.5, 9.0)
    assert rays["origins"].shape == (30, 40, 3) and rays["radii"].shape == (30, 40, 1)
    np.testing.assert_allclose(rays["origins"][7, 3], [1, 2, 3])
    # pixel (x=19, y=14) has its centre 0.5 px left/up of the principal point
    expected = rotation @ np.array([-0.5 / 50, -0.5 / 50, 1.0])
    np.testing.assert_allclose(rays["directions"][14, 19], expected, atol=1e-6)
    np.testing.assert_allclose(rays["directions"] @ rotation[:, 2], 1.0, atol=1e-6)  # unit depth
    np.testing.assert_allclose(np.linalg.norm(rays["viewdirs"], axis=-1), 1.0, atol=1e-6)
    np.testing.assert_allclose(rays["radii"], 2 / np.sqrt(12) / 50, rtol=1e-5)
    assert np.all(rays["near"] == 0.5) and np.all(rays["far"] == 9.0)


def test_scaled_intrinsics_use_actual_size_ratio():
    intr = cam.Intrinsics("PINHOLE", 800, 533, 826.0, 826.5, 400.0, 266.5)
    small = intr.scaled(100, 67)
    assert small.fx == pytest.approx(826.0 / 8) and small.cx == pytest.approx(50.0)
    assert small.fy == pytest.approx(826.5 * 67 / 533) and small.cy == pytest.approx(266.5 * 67 / 533)
