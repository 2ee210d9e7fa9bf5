"""The real bonsai capture (../shared/data/bonsai): counts, split, cameras, reprojection."""

import numpy as np
import pycolmap
import pytest

from raynerf.data import cameras as cam
from raynerf.data.poses import transform_points
from raynerf.data.scene import load_scene


@pytest.fixture(scope="module")
def bonsai8(bonsai_dir):
    return load_scene(bonsai_dir, 8)


def test_counts_and_split_match_source(bonsai8):
    assert bonsai8.num_images == 292
    assert bonsai8.names[0] == "DSCF5565.JPG" and bonsai8.names[-1] == "DSCF5856.JPG"
    assert len(bonsai8.test_indices) == 37 and len(bonsai8.train_indices) == 255
    test_names = [bonsai8.names[i] for i in bonsai8.test_indices]
    assert test_names[:2] == ["DSCF5565.JPG", "DSCF5573.JPG"] and test_names[-1] == "DSCF5853.JPG"
    assert not set(bonsai8.train_indices) & set(bonsai8.test_indices)
    assert bonsai8.kind == "360"


def test_intrinsics_scaled_by_actual_size(bonsai8):
    assert set(bonsai8.widths) == {100} and set(bonsai8.heights) == {67}
    c = bonsai8.cameras[0]
    assert c.model == "PINHOLE"
    assert c.fx == pytest.approx(826.1387 * 100 / 800, rel=1e-6)
    assert c.fy == pytest.approx(826.4894 * 67 / 533, rel=1e-6)
    assert c.cy == pytest.approx(266.5 * 67 / 533)


@pytest.mark.parametrize("factor", [1, 4])
def test_points_reproject_onto_their_observations(bonsai_dir, factor):
    """Our normalised cameras project normalised points onto COLMAP's 2D observations."""
    scene = load_scene(bonsai_dir, factor)
    recon = pycolmap.Reconstruction(str(bonsai_dir / "sparse" / "0"))
    index = {name: i for i, name in enumerate(scene.names)}
    errors = []
    for image in list(recon.images.values())[::7]:
        i = index[image.name]
        observed = [(p.xy, recon.points3D[p.point3D_id].xyz) for p in image.points2D if p.has_point3D()]
        xy = np.array([o[0] for o in observed])
        world = transform_points(scene.transform, np.array([o[1] for o in observed]))
        projected = cam.project(world, scene.camtoworlds[i].astype(np.float64), scene.intrinsics[i])
        model_cam = recon.cameras[image.camera_id]
        ratio = np.array([scene.widths[i] / model_cam.width, scene.heights[i] / model_cam.height])
        errors.append(np.linalg.norm(projected / ratio - xy, axis=-1))  # back at model resolution
    errors = np.concatenate(errors)
    assert len(errors) > 1000
    assert errors.mean() < 1.0


def test_centre_rays_pass_near_scene_centre(bonsai8):
    for i in range(bonsai8.num_images):
        rays = cam.pixel_rays(bonsai8, np.array([i]), np.array([50]), np.array([33]), 0.2, 1e6)
        origin, direction = rays["origins"][0], rays["viewdirs"][0]
        closest = origin - (origin @ direction) * direction
        assert np.linalg.norm(closest) < 0.2, bonsai8.names[i]
        assert origin @ direction < 0  # looking towards the centre


def test_normalisation_puts_cameras_in_unit_cube(bonsai8):
    centres = bonsai8.camtoworlds[:, :, 3]
    assert np.abs(centres).max() == pytest.approx(1.0, abs=1e-5)
    rotations = bonsai8.camtoworlds[:, :, :3].astype(np.float64)
    np.testing.assert_allclose(
        rotations @ rotations.transpose(0, 2, 1), np.broadcast_to(np.eye(3), rotations.shape), atol=1e-5
    )
