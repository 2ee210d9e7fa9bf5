"""Camera paths: focus point, ellipse, spline, the paths for captures from one side, and the
JSON file formats (raynerf's own, nerfstudio's camera_path.json)."""

import json

import numpy as np
import pytest
from scipy.optimize import minimize
from scipy.spatial.transform import Rotation

from raynerf.data.poses import surrounds_scene
from raynerf.data.synthetic import LOOK_AT, ring_cameras
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


# --- default paths for captures from one side ---------------------------------------------

# A similarity applied to the synthetic rigs below (rotation, scale, shift), so the path code
# may assume neither world z up nor unit size; _to_rig maps path positions back.
SCALE, SHIFT = 0.3, np.array([0.5, -1.0, 2.0])


def _from_rig(poses):
    out = np.einsum("ij,njk->nik", TILT, poses)
    out[:, :, 3] = SCALE * out[:, :, 3] + SHIFT
    return out


def _to_rig(positions):
    return (positions - SHIFT) @ TILT / SCALE


def _steps(path):
    """Distances between consecutive frames, the last back to the first: [F]."""
    centres = path[:, :, 3]
    return np.linalg.norm(np.roll(centres, -1, axis=0) - centres, axis=1)


def test_level_up_is_the_axis_of_an_arc():
    rig = _from_rig(ring_cameras(24, 0, 150.0))
    np.testing.assert_allclose(paths.level_up(rig), UP, atol=1e-9)
    # The cameras' mean up vector leans towards the arc's centre; level_up does not.
    assert np.degrees(np.arccos(paths.world_up(rig) @ UP)) > 3.0
    np.testing.assert_allclose(paths.level_up(_rig()), paths.world_up(_rig()), atol=1e-6)


@pytest.mark.parametrize("arc", [150.0, 60.0])
def test_arc_path_stays_among_the_cameras(arc):
    cameras = ring_cameras(24, 3, arc)
    rig = _from_rig(cameras)
    assert not surrounds_scene(rig) and paths.forward_facing_kind(rig) == "arc"
    path = paths.default_path(rig, 50, forward_facing=True)
    assert path.shape == (50, 3, 4)
    _assert_rotations(path)

    # In the rig's own frame: azimuth about the point the cameras look at, distance from the
    # vertical axis through it, height.
    def cylindrical(centres):
        offsets = centres - LOOK_AT
        middle = np.radians(arc / 2)
        azimuth = np.arctan2(offsets[:, 1], offsets[:, 0]) - middle
        return (
            np.degrees(np.mod(azimuth + np.pi, 2 * np.pi) - np.pi),
            np.hypot(*offsets[:, :2].T),
            centres[:, 2],
        )

    cam_azimuth, cam_radius, cam_height = cylindrical(cameras[:, :, 3])
    azimuth, radius, height = cylindrical(_to_rig(path[:, :, 3]))
    assert cam_azimuth.min() < azimuth.min() and azimuth.max() < cam_azimuth.max()
    assert azimuth.max() - azimuth.min() > 0.8 * (cam_azimuth.max() - cam_azimuth.min())
    assert cam_radius.min() < radius.min() and radius.max() < cam_radius.max()
    assert cam_height.min() < height.min() and height.max() < cam_height.max()
    # Every frame looks at the focus, upright.
    miss, depth = _axis_miss(path, SCALE * TILT @ LOOK_AT + SHIFT)
    assert miss.max() < 1e-9 and depth.min() > 0
    assert np.all(-path[:, :, 1] @ UP > 0.5)
    # Closed and smooth: no step (the last back to the first included) is much longer
    # than the average, and no two frames in a row are the same.
    steps = _steps(path)
    assert steps.max() < 1.6 * steps.mean() and steps.min() > 0
    turns = np.einsum("nij,nij->n", np.roll(path[:, :, :3], -1, axis=0), path[:, :, :3])
    angles = np.degrees(np.arccos(np.clip((turns - 1) / 2, -1, 1)))  # rotation between frames
    assert angles.max() < 1.6 * angles.mean() and angles.max() < 4 * arc / 50


def test_arc_path_goes_there_and_back():
    path = paths.arc_path(_from_rig(ring_cameras(16, 1, 150.0)), 40)
    offsets = _to_rig(path[:, :, 3]) - LOOK_AT
    azimuth = np.degrees(np.arctan2(offsets[:, 1], offsets[:, 0]))
    turns = np.sum(np.diff(np.sign(np.diff(np.concatenate([azimuth, azimuth[:2]])))) != 0)
    assert turns == 2  # one turning point at each end of the arc


def _llff_rig(jitter_degrees=0.0, seed=0):
    """A 5 x 4 grid of cameras in the plane z = 0 of the rig's frame, all looking along +z
    with y down (so the rig's up is -y), each turned by a small random rotation."""
    gx, gy = np.meshgrid(np.linspace(-1.0, 1.0, 5), np.linspace(-0.6, 0.6, 4))
    centres = np.stack([gx.ravel(), gy.ravel(), np.zeros(gx.size)], -1)
    rotvecs = np.radians(jitter_degrees) * np.random.default_rng(seed).normal(size=(len(centres), 3))
    rotations = Rotation.from_rotvec(rotvecs).as_matrix()
    return np.concatenate([rotations, centres[:, :, None]], axis=-1)


LLFF_FORWARD, LLFF_UP = TILT @ np.array([0.0, 0.0, 1.0]), TILT @ np.array([0.0, -1.0, 0.0])


@pytest.mark.parametrize("jitter", [0.0, 2.0])
def test_spiral_path_for_parallel_cameras(jitter):
    rig = _from_rig(_llff_rig(jitter))
    assert paths.forward_facing_kind(rig) == "spiral"
    if jitter == 0.0:
        with pytest.raises(RaynerfError, match="parallel"):
            paths.focus_point(rig)
    rng = np.random.default_rng(1)
    points_rig = rng.normal(size=(400, 3)) * [2.0, 2.0, 1.0] + [0.0, 0.0, 6.0]
    points = SCALE * points_rig @ TILT.T + SHIFT
    path = paths.default_path(rig, 30, forward_facing=True, points=points)
    assert path.shape == (30, 3, 4)
    _assert_rotations(path)
    centroid = rig[:, :, 3].mean(0)
    # Among the cameras: in their plane, no farther from their centroid than the farthest.
    offsets = path[:, :, 3] - centroid
    assert np.abs(offsets @ LLFF_FORWARD).max() < 0.02 * SCALE
    assert np.linalg.norm(offsets, axis=1).max() <= np.linalg.norm(rig[:, :, 3] - centroid, axis=1).max()
    assert np.linalg.norm(offsets, axis=1).min() > 0.3 * SCALE  # it does move
    # Looking forward, upright, at one point at the sparse points' median depth.
    assert np.all(path[:, :, 2] @ LLFF_FORWARD > 0.9)
    assert np.all(-path[:, :, 1] @ LLFF_UP > 0.9)
    depths = (points - centroid) @ paths._normalize(rig[:, :, 2].sum(0))
    target = centroid + np.median(depths[depths > 0]) * paths._normalize(rig[:, :, 2].sum(0))
    miss, _ = _axis_miss(path, target)
    assert miss.max() < 1e-9
    steps = _steps(path)
    assert steps.max() < 1.6 * steps.mean()


def test_spiral_path_without_points_looks_ten_radii_ahead():
    rig = _from_rig(_llff_rig())
    path = paths.spiral_path(rig, 12)
    radius = np.linalg.norm(path[:, :, 3] - rig[:, :, 3].mean(0), axis=1).max()
    miss, depth = _axis_miss(path, rig[:, :, 3].mean(0) + 10 * radius * LLFF_FORWARD)
    assert miss.max() < 1e-9 and depth.min() > 0


def test_default_path_kinds():
    assert paths.default_path_kind(_from_rig(ring_cameras(24, 0)), forward_facing=False) == "ellipse"
    assert paths.default_path_kind(_from_rig(ring_cameras(24, 0, 150.0)), forward_facing=True) == "arc"
    assert paths.default_path_kind(_from_rig(_llff_rig(2.0)), forward_facing=True) == "spiral"
    # Exactly parallel axes have no focus point to tell a capture's sides by; the default
    # path is the spiral however the capture was classified.
    assert paths.default_path_kind(_from_rig(_llff_rig()), forward_facing=False) == "spiral"
    path = paths.default_path(_from_rig(_llff_rig()), 10, forward_facing=False)
    np.testing.assert_allclose(path, paths.spiral_path(_from_rig(_llff_rig()), 10))


# --- nerfstudio's camera_path.json ---------------------------------------------------------


def _opengl_rows(pose):
    """An OpenCV camera-to-world [3, 4] -> nerfstudio's 16 numbers: the camera's y and z
    axes negated (OpenGL: y up, z backwards), bottom row appended, written row by row."""
    gl = np.array(pose, np.float64)
    gl[:, 1] = -gl[:, 1]
    gl[:, 2] = -gl[:, 2]
    return [float(v) for row in gl for v in row] + [0.0, 0.0, 0.0, 1.0]


def _nerfstudio_document(poses, fov=50.0, width=64, height=48):
    return {
        "camera_type": "perspective",
        "render_width": width,
        "render_height": height,
        "fps": 24,
        "seconds": len(poses) / 24,
        "camera_path": [
            {"camera_to_world": _opengl_rows(pose), "fov": fov, "aspect": width / height} for pose in poses
        ],
    }


def test_nerfstudio_path_to_opencv_poses_and_intrinsics(tmp_path):
    expected = _rig(n=5)
    file = tmp_path / "camera_path.json"
    file.write_text(json.dumps(_nerfstudio_document(expected, fov=50.0, width=64, height=48)))
    poses, intrinsics = paths.load_camera_path(file)
    np.testing.assert_allclose(poses, expected, atol=1e-12)
    focal = 48 / (2 * np.tan(np.radians(25.0)))
    assert intrinsics == pytest.approx(
        {"width": 64, "height": 48, "fx": focal, "fy": focal, "cx": 32.0, "cy": 24.0}, abs=1e-9
    )
    # Written by nerfstudio's viewer, the camera points along its -z axis: check one by hand.
    gl = np.reshape(json.loads(file.read_text())["camera_path"][0]["camera_to_world"], (4, 4))
    np.testing.assert_allclose(-gl[:3, 2], expected[0, :, 2], atol=1e-12)
    # raynerf's own format is still read by the same function.
    paths.save_path_json(tmp_path / "own.json", expected, INTRINSICS)
    own, own_intrinsics = paths.load_camera_path(tmp_path / "own.json")
    assert np.array_equal(own, expected) and own_intrinsics == INTRINSICS


def _good_nerfstudio():
    return _nerfstudio_document(_rig(n=3))


NS_BAD = {
    "type": (["camera_type"], "fisheye", "perspective"),
    "no width": (["render_width"], None, "render_width"),
    "height": (["render_height"], 0, "render_height"),
    "empty": (["camera_path"], [], "non-empty"),
    "no pose": (["camera_path", 1], {"fov": 50.0}, r"camera_path\[1\] has no 'camera_to_world'"),
    "no fov": (["camera_path", 0], {"camera_to_world": np.eye(4).ravel().tolist()}, "'fov'"),
    "fov": (["camera_path", 2, "fov"], 180.0, "'fov'"),
    "15 numbers": (["camera_path", 0, "camera_to_world"], [1.0] * 15, "16 numbers"),
    "scaled": (
        ["camera_path", 0, "camera_to_world"],
        np.diag([2.0, 2.0, 2.0, 1.0]).ravel().tolist(),
        "orthonormal",
    ),
    "sheared": (
        ["camera_path", 1, "camera_to_world"],
        [1, 0.5, 0, 0, 0, 1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1],
        "orthonormal",
    ),
    "mirror": (
        ["camera_path", 1, "camera_to_world"],
        np.diag([1.0, 1, -1, 1]).ravel().tolist(),
        "determinant",
    ),
    "column-major": (
        ["camera_path", 0, "camera_to_world"],
        np.array([[1, 0, 0, 1.5], [0, 1, 0, 2], [0, 0, 1, 3], [0, 0, 0, 1]]).T.ravel().tolist(),
        "last row",
    ),
    "zoom": (["camera_path", 2, "fov"], 40.0, "field of view changes"),
    "strings": (["camera_path", 0, "camera_to_world"], "identity", "16 numbers"),
}


@pytest.mark.parametrize("case", sorted(NS_BAD))
def test_bad_nerfstudio_path_is_a_clear_error(tmp_path, case):
    keys, value, message = NS_BAD[case]
    document = _good_nerfstudio()
    if value is None:
        del document[keys[0]]
    else:
        _set(document, keys, value)
    file = tmp_path / "camera_path.json"
    file.write_text(json.dumps(document))
    with pytest.raises(RaynerfError, match=message) as info:
        paths.load_camera_path(file)
    assert str(file) in str(info.value)


def test_unknown_path_format_is_a_clear_error(tmp_path):
    file = tmp_path / "keyframes.json"
    file.write_text(json.dumps({"keyframes": [], "render_height": 48}))
    with pytest.raises(RaynerfError, match="not a camera path raynerf knows") as info:
        paths.load_camera_path(file)
    assert str(file) in str(info.value)
    file.write_text("[1, 2]")
    with pytest.raises(RaynerfError, match="not a camera path"):
        paths.load_camera_path(file)
    own = tmp_path / "own.json"
    paths.save_path_json(own, _rig(n=2), INTRINSICS)
    with pytest.raises(RaynerfError, match="nerfstudio camera paths only"):
        paths.load_camera_path(own, np.eye(4))


# --- nerfstudio's frame -> the COLMAP world -> raynerf's normalised frame ------------------


def _nerfstudio_chain(w2c, orient, scale):
    """nerfstudio's way from a COLMAP image pose to its dataparser's frame, step by step
    (ns-process-data's colmap_to_json / the colmap dataparser, then the dataparser's
    orientation, centring and scaling), written out for the test.

    Args:
      w2c: [4, 4] COLMAP's world-to-camera (R | t of images.bin).
      orient: [3, 4] the orientation and centring nerfstudio's dataparser chose.
      scale: its scale factor.
    Returns:
      (camera_to_world [4, 4] as in a camera_path.json, dataparser_transforms.json content).
    """
    c2w = np.linalg.inv(w2c)
    c2w[0:3, 1:3] *= -1  # OpenCV camera axes -> OpenGL
    c2w = c2w[[0, 2, 1, 3], :]  # world axes: swap y and z ...
    c2w[2, :] *= -1  # ... and flip the new z (COLMAP's -y becomes up)
    applied = np.eye(4)[:3, :][[0, 2, 1], :]
    applied[2, :] *= -1  # the same world change, as transforms.json's applied_transform
    orient4 = np.vstack([orient, [0, 0, 0, 1]])
    pose = orient4 @ c2w
    pose[:3, 3] *= scale
    transform = orient4 @ np.vstack([applied, [0, 0, 0, 1]])
    return pose, {"transform": transform[:3].tolist(), "scale": scale}


def test_dataparser_transforms_map_nerfstudio_poses_back_to_the_colmap_world(tmp_path):
    colmap = _rig(n=4)  # OpenCV camera-to-world in a COLMAP world frame
    orient = np.concatenate(
        [Rotation.from_rotvec([0.2, 0.9, -0.4]).as_matrix(), [[0.3], [-0.7], [1.1]]], axis=1
    )
    chain = [
        _nerfstudio_chain(np.linalg.inv(np.vstack([pose, [0, 0, 0, 1]])), orient, 0.37) for pose in colmap
    ]
    (tmp_path / "dataparser_transforms.json").write_text(json.dumps(chain[0][1]))
    document = _nerfstudio_document(colmap)
    for frame, (pose, _) in zip(document["camera_path"], chain):
        frame["camera_to_world"] = pose.ravel().tolist()
    (tmp_path / "camera_path.json").write_text(json.dumps(document))

    back = paths.load_dataparser_transforms(tmp_path / "dataparser_transforms.json")
    poses, _ = paths.load_camera_path(tmp_path / "camera_path.json", back)
    np.testing.assert_allclose(poses, colmap, atol=1e-9)
    # Then on into a normalised frame (x -> 0.5 R x + t): centres as points, axes rotated.
    rotation = Rotation.from_rotvec([0.0, 0.3, 1.0]).as_matrix()
    to_scene = np.eye(4)
    to_scene[:3, :3], to_scene[:3, 3] = 0.5 * rotation, [1.0, 2.0, 3.0]
    poses, _ = paths.load_camera_path(tmp_path / "camera_path.json", to_scene @ back)
    np.testing.assert_allclose(poses[:, :, :3], rotation @ colmap[:, :, :3], atol=1e-9)
    np.testing.assert_allclose(poses[:, :, 3], 0.5 * colmap[:, :, 3] @ rotation.T + [1, 2, 3], atol=1e-9)


@pytest.mark.parametrize(
    "content, message",
    [
        ({"transform": np.eye(3, 4).tolist()}, "'scale'"),
        ({"transform": np.eye(3).tolist(), "scale": 1.0}, "3 rows of 4"),
        ({"transform": (2 * np.eye(3, 4)).tolist(), "scale": 1.0}, "orthonormal"),
        ({"transform": np.eye(3, 4).tolist(), "scale": -2.0}, "positive"),
        ({"transform": np.diag([1.0, 1.0, -1.0, 0.0])[:3].tolist(), "scale": 1.0}, "determinant"),
    ],
)
def test_bad_dataparser_transforms(tmp_path, content, message):
    file = tmp_path / "dataparser_transforms.json"
    file.write_text(json.dumps(content))
    with pytest.raises(RaynerfError, match=message) as info:
        paths.load_dataparser_transforms(file)
    assert str(file) in str(info.value)
    with pytest.raises(RaynerfError, match="not found"):
        paths.load_dataparser_transforms(tmp_path / "missing.json")
