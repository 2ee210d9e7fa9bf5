"""Camera paths: focus point, ellipse, spline and the JSON file format."""

import json

import numpy as np
import pytest
from scipy.optimize import minimize
from scipy.spatial.transform import Rotation

from raynerf.errors import RaynerfError
from raynerf.render import paths

TARGET = np.array([0.1, -0.2, 0.05])
# An arbitrary rotation applied to the whole rig, so nothing may assume world z is up.
TILT = Rotation.from_rotvec([0.3, -0.5, 0.2]).as_matrix()
UP = TILT @ np.array([0.0, 0.0, 1.0])


def _opencv_camera(position, target):
    """Camera-to-world [3, 4] at ``position`` looking at ``target``, upright w.r.t. +z.

    Built from the viewing direction's yaw and pitch (independent of the module's code).
    """
    d = target - position
    yaw = np.arctan2(d[1], d[0])
    pitch = np.arctan2(d[2], np.hypot(d[0], d[1]))
    forward = np.array([np.cos(pitch) * np.cos(yaw), np.cos(pitch) * np.sin(yaw), np.sin(pitch)])
    right = np.array([np.sin(yaw), -np.cos(yaw), 0.0])
    down = -np.array([-np.sin(pitch) * np.cos(yaw), -np.sin(pitch) * np.sin(yaw), np.cos(pitch)])
    return np.stack([right, down, forward, position], axis=1)


def _rig(n=24, a=2.0, b=1.2, height=0.4, dz=0.1, arc=2 * np.pi, tilt=True):
    """Cameras on an ellipse (semi-axes a along x, b along y) around TARGET, looking at it."""
    theta = np.linspace(0, arc, n, endpoint=arc < 2 * np.pi)
    positions = np.stack(
        [TARGET[0] + a * np.cos(theta), TARGET[1] + b * np.sin(theta), height + dz * np.sin(2 * theta)], -1
    )
    poses = np.stack([_opencv_camera(p, TARGET) for p in positions])
    if tilt:
        poses = np.einsum("ij,njk->nik", TILT, poses)
    return poses


def _assert_rotations(poses):
    r = poses[:, :, :3]
    np.testing.assert_allclose(
        np.einsum("nji,njk->nik", r, r), np.broadcast_to(np.eye(3), r.shape), atol=1e-9
    )
    np.testing.assert_allclose(np.linalg.det(r), 1.0, atol=1e-9)


def _axis_miss(poses, point):
    """Distance from ``point`` to each camera's optical axis, and its depth along it: [N], [N]."""
    offset = point - poses[:, :, 3]
    z = poses[:, :, 2]
    depth = np.einsum("ni,ni->n", offset, z)
    return np.linalg.norm(offset - depth[:, None] * z, axis=1), depth


def test_rig_is_a_valid_opencv_rig():
    rig = _rig()
    _assert_rotations(rig)
    miss, depth = _axis_miss(rig, TILT @ TARGET)
    assert miss.max() < 1e-12 and depth.min() > 0
    assert np.all(-rig[:, :, 1] @ UP > 0)


def test_focus_point_recovered():
    np.testing.assert_allclose(paths.focus_point(_rig()), TILT @ TARGET, atol=1e-9)


def test_focus_point_matches_brute_force_least_squares():
    rig = _rig(n=9)
    rng = np.random.default_rng(0)
    rotvecs = rng.normal(scale=0.05, size=(9, 3))
    rig[:, :, :3] = np.einsum("nij,njk->nik", Rotation.from_rotvec(rotvecs).as_matrix(), rig[:, :, :3])

    def cost(p):
        miss, _ = _axis_miss(rig, p)
        return np.sum(miss**2)

    expected = minimize(cost, np.zeros(3), method="BFGS", options={"gtol": 1e-12}).x
    np.testing.assert_allclose(paths.focus_point(rig), expected, atol=1e-6)


def test_focus_point_parallel_axes_is_an_error():
    rig = _rig(tilt=False)
    rig[:, :, :3] = rig[0, :, :3]
    with pytest.raises(RaynerfError, match="parallel"):
        paths.focus_point(rig)


def test_world_up_is_derived_from_the_cameras():
    np.testing.assert_allclose(paths.world_up(_rig()), UP, atol=1e-9)
    # A half ring: the cameras' mean up vector leans inwards, the ring's axis does not.
    half = _rig(arc=np.pi, dz=0.0)
    mean_up = -half[:, :, 1].sum(0)
    assert np.dot(mean_up / np.linalg.norm(mean_up), UP) < 0.999
    np.testing.assert_allclose(paths.world_up(half), UP, atol=1e-9)


@pytest.mark.parametrize("arc", [2 * np.pi, np.pi])
def test_ellipse_looks_at_focus_at_mean_height(arc):
    rig = _rig(arc=arc, dz=0.0 if arc < 2 * np.pi else 0.1)
    path = paths.ellipse_path(rig, 30)
    assert path.shape == (30, 3, 4)
    _assert_rotations(path)
    focus = paths.focus_point(rig)
    miss, depth = _axis_miss(path, focus)
    assert miss.max() < 1e-9 and depth.min() > 0
    heights = path[:, :, 3] @ UP
    np.testing.assert_allclose(heights, np.mean(rig[:, :, 3] @ UP), atol=1e-9)
    assert np.all(-path[:, :, 1] @ UP > 0.5)


def test_ellipse_follows_the_cameras_ellipse():
    rig = _rig()
    path = paths.ellipse_path(rig, 40)
    # Back in the rig's own frame, the path lies on the cameras' ellipse x^2/a^2 + y^2/b^2 = 1.
    local = path[:, :, 3] @ TILT - TARGET
    np.testing.assert_allclose((local[:, 0] / 2.0) ** 2 + (local[:, 1] / 1.2) ** 2, 1.0, atol=1e-9)
    # It goes once round: the angles advance monotonically by 2 pi / n.
    angles = np.unwrap(np.arctan2(local[:, 1] / 1.2, local[:, 0] / 2.0))
    np.testing.assert_allclose(np.diff(angles), 2 * np.pi / 40, atol=1e-9)


def test_ellipse_height_variation_stays_in_range():
    rig = _rig()
    heights_in = rig[:, :, 3] @ UP
    path = paths.ellipse_path(rig, 60, z_variation=1.0, z_phase=0.7)
    _assert_rotations(path)
    heights = path[:, :, 3] @ UP
    assert heights.min() >= heights_in.min() - 1e-9 and heights.max() <= heights_in.max() + 1e-9
    assert heights.max() - heights.min() > 0.9 * (heights_in.max() - heights_in.min())
    miss, _ = _axis_miss(path, paths.focus_point(rig))
    assert miss.max() < 1e-9
    assert np.all(-path[:, :, 1] @ UP > 0)


def test_catmull_rom_passes_through_points():
    points = np.random.default_rng(0).normal(size=(5, 3))
    for closed in (False, True):
        np.testing.assert_allclose(paths.catmull_rom(points, np.arange(5.0), closed), points, atol=1e-12)
    # Closed: the curve comes back to the first point at u = K.
    np.testing.assert_allclose(
        paths.catmull_rom(points, np.array([5.0 - 1e-12]), True)[0], points[0], atol=1e-9
    )
    # Between two points the curve is C1: left and right derivatives agree at a knot.
    eps = 1e-6
    left, mid, right = paths.catmull_rom(points, np.array([2 - eps, 2.0, 2 + eps]), False)
    np.testing.assert_allclose((mid - left) / eps, (right - mid) / eps, atol=1e-4)


@pytest.mark.parametrize("closed", [False, True])
def test_spline_path_through_keyframes(closed):
    rig = _rig()
    keys = [0, 5, 11, 17]
    path = paths.spline_path(rig, keys, 400, closed=closed)
    assert path.shape == (400, 3, 4)
    _assert_rotations(path)
    np.testing.assert_allclose(path[0], rig[0], atol=1e-9)
    if not closed:
        np.testing.assert_allclose(path[-1], rig[17], atol=1e-9)
    steps = np.linalg.norm(np.diff(path[:, :, 3], axis=0), axis=1)
    # Evenly spaced by distance travelled, and no jumps.
    assert steps.std() / steps.mean() < 0.02
    for k in keys:
        nearest = np.argmin(np.linalg.norm(path[:, :, 3] - rig[k, :, 3], axis=1))
        assert np.linalg.norm(path[nearest, :, 3] - rig[k, :, 3]) <= steps.max()
        assert np.linalg.norm(path[nearest, :, :3] - rig[k, :, :3]) < 0.05
    assert np.all(-path[:, :, 1] @ UP > 0)


def test_spline_path_needs_keyframes():
    with pytest.raises(RaynerfError, match="at least 2"):
        paths.spline_path(_rig(), [3], 10)


INTRINSICS = {"width": 640, "height": 481, "fx": 512.25, "fy": 510.0, "cx": 320.5, "cy": 240.125}


def test_json_round_trip_exact(tmp_path):
    path = paths.ellipse_path(_rig(), 7)
    file = tmp_path / "out" / "path.json"
    paths.save_path_json(file, path, INTRINSICS)
    document = json.loads(file.read_text())
    assert (
        document["version"] == 1
        and document["convention"] == "opencv camera-to-world, normalised scene frame"
    )
    assert len(document["frames"]) == 7
    loaded, intrinsics = paths.load_path_json(file)
    assert np.array_equal(loaded, path) and loaded.dtype == np.float64
    assert intrinsics == INTRINSICS
    assert [p.name for p in file.parent.iterdir()] == ["path.json"]


def _good_document():
    return {
        "version": 1,
        "convention": paths.PATH_CONVENTION,
        "intrinsics": dict(INTRINSICS),
        "frames": [{"camtoworld": pose.tolist()} for pose in _rig(n=3)],
    }


def _set(doc, keys, value):
    target = doc
    for key in keys[:-1]:
        target = target[key]
    target[keys[-1]] = value
    return doc


BAD = {
    "version": (["version"], 7, "version"),
    "convention": (["convention"], "opengl", "convention"),
    "intrinsics": (["intrinsics"], {"width": 10}, "lacks"),
    "focal": (["intrinsics", "fx"], -1.0, "'fx'"),
    "width": (["intrinsics", "width"], 10.5, "'width'"),
    "frames": (["frames"], [], "non-empty"),
    "shape": (["frames", 1, "camtoworld"], [[1, 0, 0], [0, 1, 0], [0, 0, 1]], "frame 1"),
    "scaled": (["frames", 0, "camtoworld"], (np.eye(3, 4) * 2).tolist(), "orthonormal"),
    "mirror": (["frames", 2, "camtoworld"], np.diag([1.0, 1.0, -1.0, 0.0])[:3].tolist(), "determinant"),
    "nan": (["frames", 0, "camtoworld"], [[None] * 4] * 3, "frame 0"),
    "entry": (["frames", 1], {"pose": []}, "frame 1"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_json_is_a_clear_error(tmp_path, case):
    keys, value, message = BAD[case]
    file = tmp_path / "bad.json"
    file.write_text(json.dumps(_set(_good_document(), keys, value)))
    with pytest.raises(RaynerfError, match=message) as info:
        paths.load_path_json(file)
    assert str(file) in str(info.value)


def test_unreadable_json_files(tmp_path):
    with pytest.raises(RaynerfError, match="not found"):
        paths.load_path_json(tmp_path / "missing.json")
    broken = tmp_path / "broken.json"
    broken.write_text('{"version": 1,\n "frames": [')
    with pytest.raises(RaynerfError, match=r"broken.json: not valid JSON \(line 2"):
        paths.load_path_json(broken)
    good = tmp_path / "good.json"
    doc = _good_document()
    doc["frames"][0]["camtoworld"] = doc["frames"][0]["camtoworld"] + [[0, 0, 0, 1]]  # 4x4 is accepted
    good.write_text(json.dumps(doc))
    poses, _ = paths.load_path_json(good)
    assert poses.shape == (3, 3, 4)
