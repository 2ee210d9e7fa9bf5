"""The generated scene: layout, loading through load_scene, ground-truth depth, points."""

import numpy as np
import pycolmap
import pytest

from raynerf.data import synthetic
from raynerf.data.cameras import project
from raynerf.data.poses import transform_points
from raynerf.data.scene import load_scene


def test_layout_and_loading(small_scene):
    for folder, size in [("images", (160, 120)), ("images_2", (80, 60)), ("images_4", (40, 30)), ("images_8", (20, 15))]:
        assert len(list((small_scene / folder).iterdir())) == 16
    scene = load_scene(small_scene, 2)
    assert scene.num_images == 16 and len(scene.test_indices) == 2
    assert scene.kind == "360" and scene.cameras[0].model == "PINHOLE"
    assert scene.widths[0] == 80 and scene.heights[0] == 60
    assert len(scene.points) > 100


@pytest.mark.parametrize("factor", [4, 8])
def test_rays_hit_geometry_at_ground_truth_depth(small_scene, factor):
    """o + depth * d (normalised frame, mapped back) lies on an analytic surface (SDF = 0)."""
    scene = load_scene(small_scene, factor)
    inverse = np.linalg.inv(scene.transform)
    for i in range(0, scene.num_images, 5):
        depth = np.load(small_scene / f"depth_{factor}" / scene.names[i].replace(".JPG", ".npy"))
        rays = scene.image_rays(i, 0.2, 1e6)
        points = rays["origins"] + rays["directions"] * (depth * scene.scale)[..., None]
        world = transform_points(inverse, points.reshape(-1, 3).astype(np.float64))
        distance = synthetic.surface_distance(world)
        assert distance.max() < 1e-3 * (1 + np.linalg.norm(world, axis=-1)).max()
        # and the depth is that of the *first* surface: half-way there is free space
        halfway = transform_points(inverse, (rays["origins"] + rays["directions"] * (0.5 * depth * scene.scale)[..., None]).reshape(-1, 3).astype(np.float64))
        assert synthetic.surface_distance(halfway).min() > 1e-3


def test_sky_is_far_so_contraction_matters(small_scene):
    scene = load_scene(small_scene, 8)
    depth = np.load(small_scene / "depth_8" / scene.names[0].replace(".JPG", ".npy"))
    assert (depth * scene.scale).max() > 5.0  # well outside the unit ball


def test_points_project_onto_recorded_observations(small_scene):
    scene = load_scene(small_scene, 1)
    recon = pycolmap.Reconstruction(str(small_scene / "sparse" / "0"))
    index = {name: i for i, name in enumerate(scene.names)}
    for image in list(recon.images.values())[:4]:
        obs = [(p.xy, recon.points3D[p.point3D_id].xyz) for p in image.points2D if p.has_point3D()]
        assert len(obs) > 10
        world = transform_points(scene.transform, np.array([o[1] for o in obs]))
        i = index[image.name]
        xy = project(world, scene.camtoworlds[i].astype(np.float64), scene.intrinsics[i])
        np.testing.assert_allclose(xy, np.array([o[0] for o in obs]), atol=1e-3)


def test_box_filtered_factors_agree(small_scene):
    from PIL import Image

    full = np.asarray(Image.open(small_scene / "images" / "frame_0003.JPG"), np.float64)
    small = np.asarray(Image.open(small_scene / "images_4" / "frame_0003.JPG"), np.float64)
    assert np.abs(synthetic.box_filter(full, 4) - small).mean() < 6  # JPEG noise only


def test_make_scene_cli_then_info(tmp_path):
    from click.testing import CliRunner

    from raynerf.cli import main

    runner = CliRunner()
    made = runner.invoke(main, ["make-scene", str(tmp_path / "data" / "tiny"), "--images", "4",
                                "--width", "64", "--height", "48", "--seed", "3"])
    assert made.exit_code == 0, made.output
    shown = runner.invoke(main, ["info", "--scene", "tiny", "--data-dir", str(tmp_path / "data"), "--factor", "2"])
    assert shown.exit_code == 0, shown.output
    assert "4 (3 train, 1 test" in shown.output and "images_8/   8x6" in shown.output


def test_default_scene_is_built_once(tmp_path, monkeypatch):
    built = []

    def fake_make_scene(path):
        built.append(path)
        (path / "sparse" / "0").mkdir(parents=True)
        (path / "sparse" / "0" / "images.bin").write_bytes(b"")
        return path

    monkeypatch.setattr(synthetic, "make_scene", fake_make_scene)
    first = synthetic.default_scene(tmp_path)
    assert synthetic.default_scene(tmp_path) == first and len(built) == 1
