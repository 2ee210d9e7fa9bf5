"""Render set-up without Ray workers: worker plans, chunk sizes, intrinsics, keyframes, and
the CLI's one-line errors for bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from raynerf.cli import main
from raynerf.data.scene import load_scene
from raynerf.data.synthetic import make_scene
from raynerf.errors import RaynerfError
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


def test_cli_bad_options(scene_path, tmp_path):
    common = (
        "--scene",
        scene_path.name,
        "--data-dir",
        scene_path.parent,
        "--workdir",
        tmp_path,
        "--config",
        "tiny",
        "--set",
        "data.factor=4",
    )
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
