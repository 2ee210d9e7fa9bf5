"""The generated scene: layout, loading through load_scene, ground-truth depth, points."""

import numpy as np
import pycolmap
import pytest
from PIL import Image

from raynerf.data import poses, synthetic
from raynerf.data.cameras import project
from raynerf.data.poses import transform_points
from raynerf.data.scene import load_scene


def test_layout_and_loading(small_scene):
    for folder, size in [
        ("images", (160, 120)),
        ("images_2", (80, 60)),
        ("images_4", (40, 30)),
        ("images_8", (20, 15)),
    ]:
        files = sorted((small_scene / folder).iterdir())
        assert len(files) == 16
        assert Image.open(files[0]).size == size
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
        halfway = transform_points(
            inverse,
            (rays["origins"] + rays["directions"] * (0.5 * depth * scene.scale)[..., None])
            .reshape(-1, 3)
            .astype(np.float64),
        )
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
    full = np.asarray(Image.open(small_scene / "images" / "frame_0003.JPG"), np.float64)
    small = np.asarray(Image.open(small_scene / "images_4" / "frame_0003.JPG"), np.float64)
    assert np.abs(synthetic.box_filter(full, 4) - small).mean() < 6  # JPEG noise only


def test_make_scene_cli_then_info(tmp_path):
    from click.testing import CliRunner

    from raynerf.cli import main

    runner = CliRunner()
    made = runner.invoke(
        main,
        [
            "make-scene",
            str(tmp_path / "data" / "tiny"),
            "--images",
            "4",
            "--width",
            "64",
            "--height",
            "48",
            "--seed",
            "3",
        ],
    )
    assert made.exit_code == 0, made.output
    shown = runner.invoke(
        main, ["info", "--scene", "tiny", "--data-dir", str(tmp_path / "data"), "--factor", "2"]
    )
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


@pytest.fixture(scope="module")
def phone_scene(tmp_path_factory):
    """A half orbit of portrait images, one camera per image (focal +-20%, k1 up to 0.1)."""
    return synthetic.make_scene(
        tmp_path_factory.mktemp("phone") / "phone",
        num_images=10,
        width=96,
        height=128,
        num_points=600,
        arc_degrees=180.0,
        focal_spread=0.2,
        max_k1=0.1,
    )


def test_variant_cameras_read_back(phone_scene):
    recon = pycolmap.Reconstruction(str(phone_scene / "sparse" / "0"))
    lenses = synthetic.draw_lenses(10, 96, 128, 0, 0.2, 0.1)
    assert len(recon.cameras) == 10
    for image in recon.images.values():
        camera = recon.cameras[image.camera_id]
        i = int(image.name[len("frame_") : -len(".JPG")])
        assert camera.model.name == "SIMPLE_RADIAL" and (camera.width, camera.height) == (96, 128)
        np.testing.assert_allclose(camera.params, [lenses.focals[i], 48, 64, lenses.k1s[i]], rtol=1e-12)
    focals = np.array([c.params[0] for c in recon.cameras.values()])
    k1s = np.array([c.params[3] for c in recon.cameras.values()])
    assert focals.min() < 0.95 * 0.9 * 128 < 1.05 * 0.9 * 128 < focals.max()
    assert k1s.max() == pytest.approx(0.1) and np.all((k1s >= 0) & (k1s <= 0.1))
    scene = load_scene(phone_scene, 2)
    assert scene.widths[0] == 48 and scene.heights[0] == 64  # portrait
    assert {c.model for c in scene.cameras} == {"SIMPLE_RADIAL"}


def test_variant_half_orbit_spans_half_the_ring(phone_scene):
    cams = load_scene(phone_scene, 8).camtoworlds
    assert poses.orbit_kind(cams) == "partial orbit"
    assert 160 < 360 - poses.largest_azimuth_gap(cams) < 200  # about half the ring covered


@pytest.mark.parametrize("factor", [4, 8])
def test_variant_rays_hit_geometry_at_ground_truth_depth(phone_scene, factor):
    """The loader's rays (undistorted by raynerf's camera code) meet the surfaces at the
    renderer's depth, pixel by pixel, also where k1 bends the rays most (the corners)."""
    scene = load_scene(phone_scene, factor)
    inverse = np.linalg.inv(scene.transform)
    for i in range(scene.num_images):
        depth = np.load(phone_scene / f"depth_{factor}" / scene.names[i].replace(".JPG", ".npy"))
        rays = scene.image_rays(i, 0.2, 1e6)
        points = rays["origins"] + rays["directions"] * (depth * scene.scale)[..., None]
        world = transform_points(inverse, points.reshape(-1, 3).astype(np.float64))
        distance = synthetic.surface_distance(world)
        assert distance.max() < 1e-3 * (1 + np.linalg.norm(world, axis=-1)).max()


def test_variant_points_project_onto_recorded_observations(phone_scene):
    scene = load_scene(phone_scene, 1)
    recon = pycolmap.Reconstruction(str(phone_scene / "sparse" / "0"))
    index = {name: i for i, name in enumerate(scene.names)}
    corner_reached = False
    for image in recon.images.values():
        obs = [(p.xy, recon.points3D[p.point3D_id].xyz) for p in image.points2D if p.has_point3D()]
        if len(obs) < 5:
            continue
        world = transform_points(scene.transform, np.array([o[1] for o in obs]))
        i = index[image.name]
        xy = project(world, scene.camtoworlds[i].astype(np.float64), scene.intrinsics[i])
        np.testing.assert_allclose(xy, np.array([o[0] for o in obs]), atol=1e-3)
        corner_reached |= bool(np.any(np.hypot(*(np.array([o[0] for o in obs]) - [48, 64]).T) > 50))
    assert corner_reached  # observations where the distortion is large


def test_info_calls_a_half_orbit_partial(tmp_path):
    from click.testing import CliRunner

    from raynerf.cli import main

    runner = CliRunner()
    for name, arc in (("half", "180"), ("full", "360")):
        made = runner.invoke(
            main,
            [
                "make-scene",
                str(tmp_path / "data" / name),
                "--images",
                "8",
                "--width",
                "48",
                "--height",
                "64",
                "--arc",
                arc,
                "--focal-spread",
                "0.1",
                "--max-k1",
                "0.05",
            ],
        )
        assert made.exit_code == 0, made.output
        shown = runner.invoke(
            main,
            [
                "info",
                "--scene",
                name,
                "--data-dir",
                str(tmp_path / "data"),
                "--factor",
                "8",
                "--recentre",
                "focus",
            ],
        )
        assert shown.exit_code == 0, shown.output
        kind = "partial orbit" if arc == "180" else "full orbit"
        assert f"capture     {kind}" in shown.output and "SIMPLE_RADIAL (8 images)" in shown.output
        assert "frame       origin at the point the cameras look at (data.recentre = focus)" in shown.output
    bad = runner.invoke(main, ["make-scene", str(tmp_path / "bad"), "--max-k1", "0.5"])
    assert bad.exit_code != 0 and "Error: --max-k1" in bad.output
