"""The numerical cores of ``raynerf export``, against analytic references: no training.

Marching cubes on analytic densities (a sphere, a box) must put its vertices within a
small fraction of a voxel of the true surface; the contracted grid's map back must
invert the model's contraction; back-projection of true depth must land on the true
surfaces; the output frame must undo the scene's normalisation.
"""

from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import plyfile
import pytest
import trimesh
from small_run import SCENE, scene  # noqa: F401 (fixture)

from raynerf.data import synthetic
from raynerf.data.cameras import camera_rays
from raynerf.data.poses import transform_points
from raynerf.data.scene import load_scene
from raynerf.errors import RaynerfError
from raynerf.export import to_frame
from raynerf.export.mesh import (
    contracted_limit,
    drop_small_components,
    frontal_viewdirs,
    grid_axis,
    marching_cubes,
    pixel_footprint,
    sample_gaussians,
    surface_values,
    write_mesh_ply,
)
from raynerf.export.pointcloud import (
    backproject,
    confident,
    region_accumulation,
    spread_views,
    write_points_ply,
)
from raynerf.model import coords
from raynerf.model.coords import contract_jacobian_inverse, uncontract
from raynerf.render.images import to_uint8


def _points(count: int, seed: int, max_radius: float) -> np.ndarray:
    """Points [count, 3] with radii spread log-uniformly up to ``max_radius``."""
    rng = np.random.default_rng(seed)
    directions = rng.normal(size=(count, 3))
    directions /= np.linalg.norm(directions, axis=-1, keepdims=True)
    radii = np.exp(rng.uniform(np.log(1e-3), np.log(max_radius), count))
    return (directions * radii[:, None]).astype(np.float32)


def test_uncontract_inverts_the_model_contraction():
    x = _points(2000, 0, 50.0)
    y = np.asarray(coords.contract(jnp.asarray(x)))
    np.testing.assert_allclose(np.asarray(uncontract(jnp.asarray(y))), x, rtol=2e-4, atol=1e-6)
    # and the other way round, over the open ball of radius 2 that the grid covers
    y = _points(2000, 1, 1.99)
    np.testing.assert_allclose(np.asarray(coords.contract(uncontract(jnp.asarray(y)))), y, atol=2e-6)


def test_contract_jacobian_inverse_matches_autodiff_of_uncontract():
    x = jnp.asarray(_points(300, 2, 20.0))
    inverse = contract_jacobian_inverse(x)
    np.testing.assert_allclose(
        np.asarray(jnp.matmul(coords.contract_jacobian(x), inverse)),
        np.broadcast_to(np.eye(3), inverse.shape),
        atol=2e-5,
    )
    # d uncontract / dy at y = contract(x), by autodiff: an independent derivation.
    reference = jax.vmap(jax.jacfwd(uncontract))(coords.contract(x))
    np.testing.assert_allclose(np.asarray(inverse), np.asarray(reference), rtol=1e-3, atol=1e-4)


@pytest.mark.parametrize("space", ["metric", "contracted"])
def test_sample_gaussians_are_the_cube_once_contracted(space):
    axis, voxel = grid_axis(33, space)
    rng = np.random.default_rng(3)
    points = jnp.asarray(axis[rng.integers(0, 33, size=(500, 3))])
    points = points[jnp.linalg.norm(points, axis=-1) < contracted_limit(voxel)]
    side = 1.5 * voxel
    means, covs, stretch = sample_gaussians(points, space, side)
    # What the MLP sees after its own (linearised) contraction.
    seen_means, seen_covs = coords.contract_gaussians(means, covs)
    cube = np.broadcast_to(side**2 / 12 * np.eye(3), covs.shape)
    # The stretch: the cube root of the metric volume of a unit of contracted volume
    # (|det d uncontract / dy| at the contracted point), by autodiff.
    contracted = points if space == "contracted" else coords.contract(points)
    jacobians = np.asarray(jax.vmap(jax.jacfwd(uncontract))(contracted), np.float64)
    np.testing.assert_allclose(np.asarray(stretch) ** 3, np.abs(np.linalg.det(jacobians)), rtol=2e-3)
    if space == "contracted":
        # a cube of the grid's space around the grid point: variance side^2 / 12 per axis
        np.testing.assert_allclose(np.asarray(seen_means), np.asarray(points), atol=2e-5)
        np.testing.assert_allclose(np.asarray(seen_covs), cube, atol=1e-7)
    else:
        np.testing.assert_allclose(np.asarray(means), np.asarray(points))
        np.testing.assert_allclose(np.asarray(covs), cube)
        inner = np.linalg.norm(np.asarray(points), axis=-1) <= 1
        np.testing.assert_allclose(np.asarray(stretch)[inner], 1.0, rtol=1e-6)


def test_pixel_footprint_is_a_training_pixel_at_the_centre(scene):
    loaded = load_scene(scene, 4)
    # make-scene's focal length is 0.9 x the width (160 / 4 = 40 pixels at factor 4),
    # and the cameras stand about 1 normalised unit from the origin.
    distances = np.linalg.norm(loaded.camtoworlds[loaded.train_indices, :, 3], axis=-1)
    assert pixel_footprint(loaded) == pytest.approx(np.median(distances) / 36.0, rel=1e-6)
    assert 0.8 / 36 < pixel_footprint(loaded) < 1.05 / 36


def _grid(resolution: int, space: str):
    axis, voxel = grid_axis(resolution, space)
    y = np.stack(np.meshgrid(axis, axis, axis, indexing="ij"), -1)
    return axis, voxel, y


def _soft_density(sdf: np.ndarray, peak: float, width: float) -> np.ndarray:
    """A density that rises smoothly from 0 outside to ``peak`` inside across ``width``."""
    return peak / (1.0 + np.exp(np.clip(sdf / width, -60, 60)))


def _box_sdf(p: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    q = np.abs(p - 0.5 * (lo + hi)) - 0.5 * (hi - lo)
    return np.linalg.norm(np.maximum(q, 0), axis=-1) + np.minimum(q.max(-1), 0)


def test_marching_cubes_puts_a_sphere_and_a_box_within_a_fraction_of_a_voxel():
    axis, voxel, p = _grid(64, "metric")
    centre, radius = np.array([0.1, -0.05, 0.2]), 0.45
    lo, hi = np.array([-0.9, -0.8, -0.85]), np.array([-0.45, 0.6, -0.3])
    sphere_sdf = np.linalg.norm(p - centre, axis=-1) - radius
    box_sdf = _box_sdf(p, lo, hi)
    # A density that crosses the default level (half opaque over a footprint of one
    # voxel: ln 2 / h) on the true surface, linearly in the distance to it, and rises to 50
    # times that a voxel inside: what is left is the extraction's own error.
    sdf = np.minimum(sphere_sdf, box_sdf)
    density = (np.log(2.0) / voxel * np.clip(1.0 - sdf / voxel, 0.0, 50.0)).astype(np.float32)
    values, level = surface_values(density, np.ones_like(density), voxel, None)
    assert level == pytest.approx(np.log(2.0))
    vertices, faces = marching_cubes(values, level, axis)
    sphere_err = np.abs(np.linalg.norm(vertices - centre, axis=-1) - radius)
    box_err = np.abs(_box_sdf(vertices, lo, hi))
    err = np.minimum(sphere_err, box_err)
    # Marching cubes rounds off the box's edges and corners; elsewhere the vertices lie
    # on the true surface up to the sphere's curvature within a voxel (measured: a
    # median of 0.0005 voxel, 0.006 at the 90th percentile).
    assert np.median(err) < 0.01 * voxel
    assert np.percentile(err, 90) < 0.05 * voxel
    mesh = trimesh.Trimesh(vertices, faces, process=False)
    # Two closed pieces, wound outwards: a positive volume, about the true one.
    assert mesh.is_watertight
    true_volume = 4 / 3 * np.pi * radius**3 + np.prod(hi - lo)
    assert mesh.volume == pytest.approx(true_volume, rel=0.01)
    outward = np.sum(mesh.vertex_normals * (vertices - centre), axis=-1)
    assert np.mean(outward[sphere_err < box_err] > 0) > 0.99


def test_marching_cubes_in_contracted_space_finds_a_far_sphere():
    # A sphere of metric radius 4 about the origin lies at contracted radius 1.75.
    axis, voxel, y = _grid(48, "contracted")
    limit = contracted_limit(voxel)
    inside = np.linalg.norm(y, axis=-1) <= limit
    x = np.asarray(uncontract(jnp.asarray(y[inside])))
    values = np.zeros(y.shape[:-1], np.float32)
    values[inside] = _soft_density(np.linalg.norm(x, axis=-1) - 4.0, 1000.0, 0.01)
    vertices, faces = marching_cubes(values, 500.0, axis)
    # The density jumps within 0.01 metric units, and a contracted voxel at radius 1.75
    # spans (4 / 47) / (2 - 1.75)^2 ~ 1.4 metric units radially: the grid sees a step, and
    # marching cubes can only put the surface between grid points, within half a voxel of
    # the true one in contracted units.
    err = np.abs(np.linalg.norm(vertices, axis=-1) - 1.75) / voxel
    assert np.median(err) < 0.2 and err.max() < 0.5
    # In metric terms: between the points that half a voxel either side stands for.
    metric = np.linalg.norm(np.asarray(uncontract(jnp.asarray(vertices))), axis=-1)
    assert np.all((metric > 1 / (0.25 + voxel / 2)) & (metric < 1 / (0.25 - voxel / 2)))
    assert trimesh.Trimesh(vertices, faces, process=False).volume > 0  # wound outward (contracted)


def test_a_level_the_field_never_crosses_is_an_error():
    axis, _ = grid_axis(8, "metric")
    with pytest.raises(RaynerfError, match="no surface at level 5.*0, 1"):
        marching_cubes(np.zeros((8, 8, 8), np.float32) + np.linspace(0, 1, 8)[:, None, None], 5.0, axis)
    # an explicit density level is taken as it is
    values, level = surface_values(np.ones(3), np.full(3, 0.5), 0.1, 7.0)
    assert level == 7.0 and np.all(values == 1.0)
    values, level = surface_values(np.ones(3), np.full(3, 0.5), 0.1, None)
    np.testing.assert_allclose(values, 0.05)
    assert level == pytest.approx(np.log(2.0))


def test_small_pieces_are_dropped_and_vertices_renumbered():
    big = trimesh.creation.icosphere(subdivisions=3)  # 1280 faces
    small = trimesh.creation.icosphere(subdivisions=0)  # 20 faces
    small.vertices += 5.0
    vertices = np.concatenate([small.vertices, big.vertices])
    faces = np.concatenate([small.faces, big.faces + len(small.vertices)])
    kept_v, kept_f, used, dropped = drop_small_components(vertices, faces, 64)
    assert dropped == 1 and len(kept_f) == 1280
    np.testing.assert_array_equal(kept_v, big.vertices)
    np.testing.assert_array_equal(kept_f, big.faces)
    np.testing.assert_array_equal(vertices[used], kept_v)
    assert drop_small_components(vertices, faces, 0)[3] == 0


def test_frontal_viewdirs_pick_the_camera_facing_the_surface():
    vertices = np.array([[0.0, 0.0, 0.0], [0.0, 0.0, 0.0]])
    normals = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    centres = np.array([[5.0, 1.0, 0.0], [0.0, 3.0, 3.0], [0.1, 0.0, 9.0]])
    dirs = frontal_viewdirs(vertices, normals, centres)
    np.testing.assert_allclose(dirs[0], -centres[0] / np.linalg.norm(centres[0]))
    np.testing.assert_allclose(dirs[1], -centres[2] / np.linalg.norm(centres[2]))


def test_backprojected_true_depth_lands_on_the_true_surfaces():
    camtoworld = synthetic.ring_cameras(4, seed=0)[1]
    width, height, focal, factor = 160, 128, 0.9 * 160, 4
    depth = synthetic.render_depth(camtoworld, focal, width, height, factor)  # z-depth, world units
    intrinsics = np.array(
        [focal / factor, focal / factor, width / 2 / factor, height / 2 / factor, 0, 0, 0, 0]
    )
    rays = camera_rays(camtoworld, intrinsics, width // factor, height // factor, 0.2, 1e6)
    points = backproject(rays["origins"], rays["directions"], depth).reshape(-1, 3)
    assert points.shape == (40 * 32, 3)
    # Every pixel sees the ground, an object or the sky: all on a surface (SDF ~ 0).
    assert np.max(synthetic.surface_distance(points)) < 1e-3 * (1 + np.max(depth))


def test_region_accumulation_counts_only_intervals_inside_the_radius():
    origins = jnp.array([[0.0, 0.0, 0.0], [-3.0, 0.0, 0.0]])
    directions = jnp.array([[1.0, 0.0, 0.0], [2.0, 0.0, 0.0]])
    tdist = jnp.array([[0.0, 0.5, 0.9, 1.2, 5.0], [0.0, 1.0, 1.4, 2.0, 3.0]])
    weights = jnp.array([[0.1, 0.2, 0.3, 0.4], [0.1, 0.2, 0.3, 0.4]])
    # ray 0 midpoints at x = 0.25, 0.7, 1.05, 3.1; ray 1 at -2, -0.6, 0.4, 2.
    acc = region_accumulation(weights, tdist, origins, directions, 1.0)
    np.testing.assert_allclose(np.asarray(acc), [0.3, 0.5], rtol=1e-6)
    keep = confident(
        np.array([[0.5, 0.0, 0.0], [0.5, 0.0, 0.0], [2.0, 0.0, 0.0], [np.nan, 0, 0]]),
        np.array([0.95, 0.5, 0.95, 0.95]),
        0.9,
        1.0,
    )
    np.testing.assert_array_equal(keep, [True, False, False, False])


def test_spread_views_are_even_and_capped():
    np.testing.assert_array_equal(spread_views(np.arange(1, 11), 3), [1, 5, 10])
    np.testing.assert_array_equal(spread_views(np.arange(5), None), np.arange(5))
    np.testing.assert_array_equal(spread_views(np.arange(5), 9), np.arange(5))


def test_the_colmap_frame_undoes_the_normalisation(scene):
    loaded = load_scene(scene, 4)
    points = np.random.default_rng(4).normal(size=(100, 3))
    world = to_frame(points, loaded.transform, "colmap")
    np.testing.assert_allclose(transform_points(loaded.transform, world), points, atol=1e-9)
    np.testing.assert_array_equal(to_frame(points, loaded.transform, "normalised"), points)
    # The normalised camera centres go back to where make-scene put them (COLMAP world).
    true_centres = synthetic.ring_cameras(SCENE["num_images"], seed=0)[:, :, 3]
    centres = to_frame(loaded.camtoworlds[:, :, 3], loaded.transform, "colmap")
    np.testing.assert_allclose(centres, true_centres, atol=1e-5)
    with pytest.raises(RaynerfError, match="unknown frame"):
        to_frame(points, loaded.transform, "opengl")


def test_ply_files_read_back(tmp_path: Path):
    rng = np.random.default_rng(5)
    xyz = rng.normal(size=(50, 3))
    rgb = to_uint8(rng.uniform(-0.1, 1.1, size=(50, 3)))
    write_points_ply(tmp_path / "points.ply", xyz, rgb)
    vertex = plyfile.PlyData.read(str(tmp_path / "points.ply"))["vertex"]
    assert [p.name for p in vertex.properties] == ["x", "y", "z", "red", "green", "blue"]
    np.testing.assert_allclose(np.stack([vertex[a] for a in "xyz"], -1), xyz, rtol=1e-6)
    np.testing.assert_array_equal(np.stack([vertex[c] for c in ("red", "green", "blue")], -1), rgb)

    sphere = trimesh.creation.icosphere(subdivisions=1)
    colours = to_uint8(rng.uniform(size=(len(sphere.vertices), 3)))
    write_mesh_ply(tmp_path / "mesh.ply", sphere.vertices, sphere.faces, colours)
    back = trimesh.load(tmp_path / "mesh.ply", process=False)
    np.testing.assert_allclose(back.vertices, sphere.vertices, rtol=1e-6)
    np.testing.assert_array_equal(back.faces, sphere.faces)
    np.testing.assert_array_equal(back.visual.vertex_colors[:, :3], colours)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mesh.ply", "points.ply"]  # no leftovers
