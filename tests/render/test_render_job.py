"""Render set-up without Ray workers: worker plans, chunk sizes, intrinsics, keyframes, the
default paths, path files (raynerf's and nerfstudio's), and the CLI's one-line errors for
bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner
from scipy.spatial.transform import Rotation

from raynerf.cli import main
from raynerf.data.scene import load_scene
from raynerf.data.synthetic import LOOK_AT, make_scene, ring_cameras
from raynerf.errors import RaynerfError
from raynerf.render import paths
from raynerf.render.job import RenderRequest, build_path, parse_resolution, render_intrinsics
from raynerf.render.pool import plan_workers


@pytest.fixture(scope="module")
def scene_path(tmp_path_factory):
    return make_scene(tmp_path_factory.mktemp("data") / "toy", num_images=8, width=64, height=48)


@pytest.fixture(scope="module")
def scene(scene_path):
    return load_scene(scene_path, 4)


def test_plan_cpu_workers_share_the_cpus(monkeypatch):
    monkeypatch.delenv("XLA_FLAGS", raising=False)
    one = plan_workers([{"CPU": 2.0}])
    assert (one.count, one.num_cpus, one.threads, one.device) == (1, 2.0, 2, "cpu")
    assert "xla_cpu_multi_thread_eigen" not in one.env_vars().get("XLA_FLAGS", "")
    two = plan_workers([{"CPU": 2.0}], requested=2)
    assert (two.count, two.num_cpus, two.threads) == (2, 1.0, 1)
    env = two.env_vars()
    assert env["JAX_PLATFORMS"] == "cpu" and "--xla_cpu_multi_thread_eigen=false" in env["XLA_FLAGS"]
    many = plan_workers([{"CPU": 2.0}], requested=4)  # more workers than CPUs: fractional shares
    assert (many.count, many.num_cpus, many.threads) == (4, 0.5, 1)
    nodes = plan_workers([{"CPU": 8.0}, {"CPU": 8.0}, {"memory": 1.0}])
    assert (nodes.count, nodes.num_cpus, nodes.threads) == (2, 8.0, 8)


def test_plan_one_worker_per_tpu_host_or_gpu():
    tpu = plan_workers([{"CPU": 96.0, "TPU": 4.0}] * 4 + [{"CPU": 8.0}])
    assert (tpu.count, dict(tpu.resources), tpu.device) == (4, {"TPU": 4.0}, "tpu")
    assert tpu.actor_options(2)["resources"] == {"TPU": 4.0}
    # Four VMs of one slice: each worker runs alone on its VM's 4 chips (a 2x2x1 grid).
    assert tpu.env_vars() == {
        "JAX_PLATFORMS": "",
        "TPU_PROCESS_BOUNDS": "1,1,1",
        "TPU_CHIPS_PER_PROCESS_BOUNDS": "2,2,1",
        "TPU_VISIBLE_CHIPS": "0,1,2,3",
    }
    one_vm = plan_workers([{"CPU": 96.0, "TPU": 8.0}])  # a one-VM slice: libtpu's own defaults
    assert one_vm.env_vars() == {"JAX_PLATFORMS": ""}
    v6e = plan_workers([{"CPU": 180.0, "TPU": 8.0}] * 2)
    assert v6e.env_vars()["TPU_CHIPS_PER_PROCESS_BOUNDS"] == "2,4,1"
    assert v6e.env_vars()["TPU_VISIBLE_CHIPS"] == "0,1,2,3,4,5,6,7"
    gpu = plan_workers([{"CPU": 16.0, "GPU": 2.0}, {"CPU": 16.0, "GPU": 2.0}], requested=3)
    assert (gpu.count, gpu.num_gpus, gpu.device) == (3, 1, "gpu")
    with pytest.raises(RaynerfError, match="4 GPUs"):
        plan_workers([{"CPU": 16.0, "GPU": 4.0}], requested=5)
    with pytest.raises(RaynerfError, match="--workers"):
        plan_workers([{"CPU": 2.0}], requested=-1)


def test_parse_resolution():
    assert parse_resolution("1280x720") == (1280, 720)
    assert parse_resolution(" 9X7 ") == (9, 7)
    for bad in ("1280", "0x5", "12by5", "-3x4", "1.5x2"):
        with pytest.raises(RaynerfError, match="--resolution"):
            parse_resolution(bad)


def test_intrinsics_follow_the_test_camera(scene):
    camera = scene.cameras[int(scene.test_indices[0])]
    base = render_intrinsics(scene)
    assert (base["width"], base["height"], base["fx"]) == (16, 12, camera.fx)
    half = render_intrinsics(scene, factor=2)  # twice the size of images_4
    assert (half["width"], half["height"]) == (32, 24)
    np.testing.assert_allclose(
        [half["fx"], half["fy"], half["cx"], half["cy"]],
        2 * np.array([camera.fx, camera.fy, camera.cx, camera.cy]),
    )
    fitted = render_intrinsics(scene, resolution=(24, 10))
    # Same horizontal field of view: the image edge sits at the same angle.
    assert fitted["width"] / 2 / fitted["fx"] == pytest.approx(camera.width / 2 / camera.fx)
    assert (fitted["cx"], fitted["cy"]) == (12.0, 5.0)
    assert render_intrinsics(scene, resolution=(24, 10), focal=30.0)["fy"] == 30.0
    with pytest.raises(RaynerfError, match="not both"):
        render_intrinsics(scene, factor=2, resolution=(24, 10))
    with pytest.raises(RaynerfError, match="--focal"):
        render_intrinsics(scene, focal=30.0)


def test_keyframe_spline_starts_and_ends_at_the_named_images(scene):
    names = [scene.names[2], scene.names[5].rsplit(".", 1)[0]]  # a full name and a stem
    poses, intrinsics = build_path(scene, RenderRequest(keyframes=names), 7, 0.0, 0.0)
    assert poses.shape == (7, 3, 4) and intrinsics["width"] == 16
    np.testing.assert_allclose(poses[0], scene.camtoworlds[2], atol=1e-5)
    np.testing.assert_allclose(poses[-1], scene.camtoworlds[5], atol=1e-5)


def invoke(*args):
    result = CliRunner().invoke(main, ["render", *map(str, args)])
    lines = result.output.strip().splitlines()
    return result.exit_code, lines


def error_line(code_lines):
    code, lines = code_lines
    assert code == 1 and len(lines) == 1 and lines[0].startswith("Error: "), lines
    return lines[0]


def test_cli_without_checkpoint(scene_path, tmp_path):
    line = error_line(
        invoke(
            "--scene",
            scene_path.name,
            "--data-dir",
            scene_path.parent,
            "--workdir",
            tmp_path / "empty",
            "--config",
            "tiny",
            "--set",
            "data.factor=4",
        )
    )
    assert "no checkpoint" in line and "raynerf train" in line


def _common_args(scene_path, workdir) -> tuple:
    """The scene, workdir and config options of the CLI tests."""
    return ("--scene", scene_path.name, "--data-dir", scene_path.parent, "--workdir", workdir) + (
        "--config",
        "tiny",
        "--set",
        "data.factor=4",
    )


def test_cli_bad_options(scene_path, tmp_path):
    common = _common_args(scene_path, tmp_path)
    assert "--resolution" in error_line(invoke(*common, "--resolution", "12by5"))
    line = error_line(invoke(*common, "--keyframes", "frame_0001.JPG,nope.JPG"))
    assert "nope.JPG" in line and "frame_0000.JPG" in line
    bad = tmp_path / "path.json"
    bad.write_text('{"version": 1, "frames": [')
    line = error_line(invoke(*common, "--path-json", bad))
    assert str(bad) in line and "JSON" in line
    bad.write_text(
        json.dumps(
            {
                "version": 1,
                "convention": "opencv camera-to-world, normalised scene frame",
                "intrinsics": {"width": 8, "height": 6, "fx": 5, "fy": 5, "cx": 4, "cy": 3},
                "frames": [{"camtoworld": [[2, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0]]}],
            }
        )
    )
    assert "orthonormal" in error_line(invoke(*common, "--path-json", bad))
    assert "--frames" in error_line(invoke(*common, "--frames", "0"))
    assert "not both" in error_line(invoke(*common, "--factor", "2", "--resolution", "8x6"))


# --- the default path of a capture from one side, and nerfstudio camera paths ---------------


@pytest.fixture(scope="module")
def arc_scene(tmp_path_factory):
    path = make_scene(
        tmp_path_factory.mktemp("data") / "arc", num_images=8, width=64, height=48, arc_degrees=150
    )
    return load_scene(path, 4)


def test_full_ring_gets_the_ellipse(scene):
    assert not scene.forward_facing
    poses, _ = build_path(scene, RenderRequest(), 12, 0.0, 0.0)
    np.testing.assert_allclose(poses, paths.ellipse_path(scene.camtoworlds, 12), atol=1e-12)


def test_arc_capture_gets_an_arc_among_its_views(arc_scene):
    assert arc_scene.forward_facing
    poses, intrinsics = build_path(arc_scene, RenderRequest(), 20, 0.0, 0.0)
    assert poses.shape == (20, 3, 4) and intrinsics["width"] == 16
    # Back in the capture's own (COLMAP) world: azimuths inside the cameras' 150 degrees.
    back = np.linalg.inv(arc_scene.transform)
    centres = poses[:, :, 3] @ back[:3, :3].T + back[:3, 3]
    cameras = ring_cameras(8, 0, 150.0)[:, :, 3]

    def azimuth(points):
        return np.degrees(np.arctan2(points[:, 1] - LOOK_AT[1], points[:, 0] - LOOK_AT[0]))

    assert azimuth(cameras).min() < azimuth(centres).min() and azimuth(centres).max() < azimuth(cameras).max()
    # Every frame looks at the point the cameras look at.
    focus = arc_scene.transform[:3, :3] @ LOOK_AT + arc_scene.transform[:3, 3]
    offset = focus - poses[:, :, 3]
    along = np.einsum("ni,ni->n", offset, poses[:, :, 2])
    assert along.min() > 0
    np.testing.assert_allclose(np.linalg.norm(offset, axis=1), along, rtol=1e-5)


def _nerfstudio_pose(colmap_c2w, orient, scale):
    """A COLMAP camera-to-world (OpenCV axes, [3, 4]) taken through nerfstudio's chain into
    its dataparser frame (camera axes to OpenGL; world axes (x, y, z) -> (x, z, -y); then the
    dataparser's [3, 4] ``orient`` and ``scale``), flattened as in camera_path.json."""
    c2w = np.vstack([colmap_c2w, [0, 0, 0, 1]])
    c2w[:3, 1:3] *= -1
    c2w = c2w[[0, 2, 1, 3]]
    c2w[2] *= -1
    pose = np.vstack([orient, [0, 0, 0, 1]]) @ c2w
    pose[:3, 3] *= scale
    return pose.ravel().tolist()


def test_nerfstudio_path_with_dataparser_transforms_lands_on_the_scene_cameras(scene, tmp_path):
    colmap = ring_cameras(8, 0)  # what make_scene wrote as the COLMAP model
    orient = np.concatenate([Rotation.from_rotvec([0.1, -0.4, 0.3]).as_matrix(), [[0.2], [0.1], [-0.5]]], 1)
    scale = 0.21
    # nerfstudio's transform folds its world axis change into the orientation.
    axes = np.array([[1.0, 0, 0], [0, 0, 1], [0, -1, 0]])
    transform = np.concatenate([orient[:, :3] @ axes, orient[:, 3:]], 1)
    (tmp_path / "dataparser_transforms.json").write_text(
        json.dumps({"transform": transform.tolist(), "scale": scale})
    )
    frames = [{"camera_to_world": _nerfstudio_pose(c, orient, scale), "fov": 40.0} for c in colmap[:3]]
    (tmp_path / "camera_path.json").write_text(
        json.dumps({"render_width": 20, "render_height": 10, "camera_path": frames})
    )
    request = RenderRequest(
        path_json=tmp_path / "camera_path.json", path_transforms=tmp_path / "dataparser_transforms.json"
    )
    poses, intrinsics = build_path(scene, request, 50, 0.0, 0.0)
    np.testing.assert_allclose(poses, scene.camtoworlds[:3], atol=1e-5)
    assert (intrinsics["width"], intrinsics["height"], intrinsics["cx"]) == (20, 10, 10.0)
    assert intrinsics["fy"] == pytest.approx(5 / np.tan(np.radians(20)))
    # Without the transforms the poses are taken as they are, in the scene's frame.
    poses, _ = build_path(scene, RenderRequest(path_json=tmp_path / "camera_path.json"), 50, 0.0, 0.0)
    assert not np.allclose(poses, scene.camtoworlds[:3], atol=1e-2)


def test_cli_path_file_errors(scene_path, tmp_path):
    common = _common_args(scene_path, tmp_path)
    fisheye = tmp_path / "camera_path.json"
    fisheye.write_text(
        json.dumps(
            {
                "camera_type": "fisheye",
                "render_width": 8,
                "render_height": 6,
                "camera_path": [{"camera_to_world": np.eye(4).ravel().tolist(), "fov": 50}],
            }
        )
    )
    for option in ("--path", "--path-json"):
        line = error_line(invoke(*common, option, fisheye))
        assert str(fisheye) in line and "perspective" in line
    unknown = tmp_path / "unknown.json"
    unknown.write_text(json.dumps({"keyframes": []}))
    assert "not a camera path" in error_line(invoke(*common, "--path", unknown))
    assert "--path FILE" in error_line(invoke(*common, "--path-transforms", unknown))
    assert "once" in error_line(invoke(*common, "--path", fisheye, "--path-json", unknown))
    help_text = CliRunner().invoke(main, ["render", "--help"]).output
    assert "--path FILE" in help_text and "--path-transforms" in help_text and "--path-json" not in help_text
