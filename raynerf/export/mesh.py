"""A coloured triangle mesh from the NeRF level's density, by marching cubes.

**The grid.** ``resolution``^3 points, evenly spaced over a cube, in one of two spaces:

* ``"metric"``: the cube [-1, 1]^3 of the normalised frame (where the cameras are);
  voxel length ``h = 2 / (resolution - 1)`` normalised units.
* ``"contracted"``: the cube [-2, 2]^3 of contracted coordinates, i.e. all of space
  as the model sees it, with the far field ever coarser in metric terms. A grid point
  ``y`` stands for the metric point :func:`uncontract` ``(y)``; points beyond
  ``2 - h`` (``h = 4 / (resolution - 1)``) stand for nothing (density 0), so the
  map back stays finite.

**The samples.** The MLP was trained on Gaussians the size of a pixel's footprint,
and its integrated positional encoding damps the frequencies finer than the Gaussian
it is asked about. Each grid point is queried as the Gaussian of a cube of side
``max(h, footprint)`` in the grid's space: isotropic there with per-axis variance
``side^2 / 12`` (the variance of a uniform distribution over the side), pushed back to
metric space through the inverse of the contraction's Jacobian in contracted space.
The field is so averaged at the scale the grid resolves, rather than point-sampled and
aliased, and never asked about detail finer than a pixel of the training views,
which the model was never shown. ``footprint`` (:func:`pixel_footprint`) is the
size of a training pixel at the scene's centre: the median over the training views
of the camera's distance to the origin over its focal length in pixels.

**The threshold.** By default the surface is where the field becomes half opaque
over one pixel footprint: ``density * footprint * stretch = ln 2``, where ``stretch``
(1 inside the unit ball; :func:`contraction_stretch`) scales the footprint by how much
the contraction coarsens space there (the model's resolution is even in contracted
space). At the scene's centre that is the density ``ln 2 / footprint``. It does not
depend on the grid: a finer ``resolution`` gives the same surface in more detail. (A
threshold tied to the voxel, ``ln 2 / h``, would move the surface inwards as the grid
gets finer, wherever a model's density rises gradually.) ``density=D`` instead takes
the density level ``D`` itself, per unit length of the normalised frame.

**Marching cubes** is scikit-image's (:func:`skimage.measure.marching_cubes`);
components of fewer than ``min_faces`` faces (floaters) are dropped.

**Vertex colours.** The field's colour depends on the view direction, so one has to
be chosen. Each vertex is looked at from the training camera that faces its surface
most squarely (the largest cosine between the vertex normal and the direction to the
camera): a direction the model was trained on near that point, and one from which the
surface is seen rather than grazed. (A fixed direction such as the inward normal
asks about directions no camera looked from, e.g. straight down onto the ground of a
capture walked around at eye level.) The colour is queried at the vertex's grid-sized
Gaussian with that direction.

The mesh is written with trimesh as a binary PLY (vertex colours as uint8 RGBA), in
the COLMAP world frame unless ``frame="normalised"`` (see :mod:`raynerf.export`).
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import skimage.measure
import trimesh
from jax.sharding import Mesh
from tqdm.auto import tqdm

from raynerf import storage
from raynerf.data.scene import Scene
from raynerf.errors import RaynerfError
from raynerf.export import TrainedRun, check_frame, to_frame
from raynerf.mesh import batch_sharding, join_micro_batches, pass_rays, replicated, split_micro_batches
from raynerf.model.coords import contract_jacobian_inverse, uncontract
from raynerf.model.mipnerf360 import MipNerf360
from raynerf.model.render_chunks import map_chunks
from raynerf.render.images import to_uint8

SPACES = ("metric", "contracted")
SPACE_HALF_WIDTH = {"metric": 1.0, "contracted": 2.0}
DEFAULT_RESOLUTION = 256
DEFAULT_MIN_FACES = 64
FOOTPRINT_OPACITY = 0.5  # the default surface: one pixel footprint this opaque
FIELD_BATCH = 1 << 15  # points per compiled call
CPU_PASS_POINTS = 2048  # points per device per pass on the CPU (activations stay in cache)


def check_space(space: str) -> str:
    if space not in SPACES:
        raise RaynerfError(f"unknown space {space!r}: choose one of {', '.join(SPACES)}")
    return space


def grid_axis(resolution: int, space: str) -> tuple[np.ndarray, float]:
    """The grid's coordinates along each axis [resolution] (float32) and its spacing
    ``h`` in the grid's space."""
    half = SPACE_HALF_WIDTH[check_space(space)]
    if resolution < 2:
        raise RaynerfError(f"--resolution must be at least 2, got {resolution}")
    return np.linspace(-half, half, resolution, dtype=np.float32), 2.0 * half / (resolution - 1)


def contracted_limit(voxel: float) -> float:
    """The largest contracted radius a grid point of spacing ``voxel`` may stand for."""
    return 2.0 - voxel


def contraction_stretch(x: jnp.ndarray) -> jnp.ndarray:
    """How much the contraction coarsens space at metric points ``x`` [..., 3] -> [...]:
    the cube root of the volume a unit of contracted volume stands for there
    (``det(J^-1)^(1/3)``); 1 inside the unit ball."""
    return jnp.cbrt(jnp.linalg.det(contract_jacobian_inverse(x)))


def sample_gaussians(
    points: jnp.ndarray, space: str, side: float
) -> tuple[jnp.ndarray, jnp.ndarray, jnp.ndarray]:
    """The Gaussians of cubes of side ``side`` (in the grid's space) centred at grid
    points [..., 3] of ``space``.

    Returns:
      means [..., 3] and covariances [..., 3, 3] in the metric (normalised) frame, and
      :func:`contraction_stretch` at the means [...].
    """
    variance = side * side / 12.0
    if check_space(space) == "metric":
        covs = jnp.broadcast_to(variance * jnp.eye(3, dtype=points.dtype), points.shape + (3,))
        return points, covs, contraction_stretch(points)
    means = uncontract(points)
    inverse = contract_jacobian_inverse(means)
    covs = variance * jnp.matmul(inverse, jnp.swapaxes(inverse, -1, -2))
    return means, covs, jnp.cbrt(jnp.linalg.det(inverse))


def pixel_footprint(scene: Scene) -> float:
    """The size of a training pixel at the normalised frame's origin (normalised units):
    the median over the training views of the camera centre's distance to the origin
    over the focal length in pixels (at the run's factor)."""
    train = scene.train_indices
    distance = np.linalg.norm(scene.camtoworlds[train, :3, 3].astype(np.float64), axis=-1)
    focal = np.sqrt(scene.intrinsics[train, 0] * scene.intrinsics[train, 1])
    return float(np.median(distance / focal))


def make_field_fn(
    model: MipNerf360, mesh: Mesh, space: str, side: float, with_rgb: bool
) -> Callable[..., dict[str, jax.Array]]:
    """``(params, {"points": [B, 3] of the grid's space, "viewdirs": [B, 3]}) -> {"density" [B],
    "stretch" [B]}`` (and ``"rgb"`` [B, 3] ``with_rgb``): the NeRF level's field at the
    points' Gaussians (:func:`sample_gaussians` of cubes of side ``side``). ``B`` must be a multiple of
    :func:`field_batch_unit`; on the CPU the batch runs as passes of
    :data:`CPU_PASS_POINTS` points per device inside the call."""

    def forward(params, batch: dict) -> dict:
        means, covs, stretch = sample_gaussians(batch["points"], space, side)
        density, rgb = model.apply(
            {"params": params},
            means[:, None, :],
            covs[:, None, :, :],
            batch["viewdirs"],
            method=MipNerf360.nerf_field,
        )
        out = {"density": density[:, 0], "stretch": stretch}
        if with_rgb:
            out["rgb"] = rgb[:, 0]
        return out

    def field(params, batch: dict) -> dict:
        per_device = batch["points"].shape[0] // mesh.devices.size
        passes = max(1, per_device // CPU_PASS_POINTS) if pass_rays(mesh) else 1
        if passes == 1:
            return forward(params, batch)
        outputs = jax.lax.map(functools.partial(forward, params), split_micro_batches(batch, passes, mesh))
        return join_micro_batches(outputs, mesh)

    sharding = batch_sharding(mesh)
    in_shardings = (replicated(mesh), {"points": sharding, "viewdirs": sharding})
    return jax.jit(field, in_shardings=in_shardings, out_shardings=replicated(mesh))


def field_batch_unit(mesh: Mesh) -> int:
    """What a field batch's size must be a multiple of: a pass of every device."""
    return mesh.devices.size * (CPU_PASS_POINTS if pass_rays(mesh) else 1)


def query_field(
    field_fn: Callable,
    params,
    points: np.ndarray,
    viewdirs: np.ndarray,
    batch: int,
    mesh: Mesh,
    progress=None,
) -> dict[str, np.ndarray]:
    """``field_fn`` over points [M, 3] and viewdirs [M, 3] in batches of ``batch``
    (:func:`raynerf.model.render_chunks.map_chunks`) -> dict of [M, ...] numpy arrays.
    ``progress``: a tqdm bar advanced by the points done."""
    inputs = {"points": points, "viewdirs": viewdirs}
    return map_chunks(field_fn, params, inputs, batch, mesh, progress)


def grid_points(axis: np.ndarray, flat_indices: np.ndarray) -> np.ndarray:
    """The grid points [M, 3] at flat (C-order) indices [M] of the ``len(axis)``^3 grid."""
    n = len(axis)
    i, j, k = np.unravel_index(flat_indices, (n, n, n))
    return np.stack([axis[i], axis[j], axis[k]], axis=-1)


def ball_indices(axis: np.ndarray, radius: float) -> np.ndarray:
    """Flat (C-order) indices of the grid points within ``radius`` of the origin."""
    sq = axis.astype(np.float64) ** 2
    r2 = sq[:, None, None] + sq[None, :, None] + sq[None, None, :]
    return np.flatnonzero(r2.ravel() <= radius * radius)


def surface_values(
    density: np.ndarray, stretch: np.ndarray, footprint: float, level: float | None
) -> tuple[np.ndarray, float]:
    """What marching cubes runs on, and at which level: the optical thickness of a pixel
    footprint, ``density * footprint * stretch``, at ``-ln(1 - FOOTPRINT_OPACITY)``
    (``level`` None); else the density itself at ``level``."""
    if level is None:
        return density * (footprint * stretch), -math.log(1.0 - FOOTPRINT_OPACITY)
    return density, float(level)


def marching_cubes(volume: np.ndarray, level: float, axis: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The ``level`` iso-surface of ``volume`` [R, R, R] (sampled at ``axis`` [R] along each
    of x, y, z, in that index order), higher values inside.

    Returns:
      vertices [V, 3] float64 in the coordinates of ``axis``, faces [F, 3] int64 wound
      so that their normals point out of the high-valued region.
    """
    finite = volume[np.isfinite(volume)]
    if finite.size == 0 or not finite.min() < level < finite.max():
        low, high = (float(finite.min()), float(finite.max())) if finite.size else (math.nan, math.nan)
        raise RaynerfError(
            f"no surface at level {level:g}: the field's values over the grid lie in "
            f"[{low:.4g}, {high:.4g}]; choose a --density within them (or train longer)"
        )
    volume = np.nan_to_num(volume, nan=0.0, posinf=np.finfo(np.float32).max)
    spacing = float(axis[1] - axis[0])
    # With "ascent", scikit-image winds the faces so that their normals point out of the
    # high-valued region (tests/export check it by a sphere's signed volume).
    verts, faces, _, _ = skimage.measure.marching_cubes(
        volume, level=level, spacing=(spacing,) * 3, gradient_direction="ascent", allow_degenerate=False
    )
    return verts.astype(np.float64) + float(axis[0]), faces.astype(np.int64)


def drop_small_components(
    vertices: np.ndarray, faces: np.ndarray, min_faces: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """Removes the edge-connected pieces of fewer than ``min_faces`` faces.

    Returns:
      (vertices [V', 3], faces [F', 3] renumbered, the kept vertices' old indices [V'],
      the number of pieces dropped).
    """
    if min_faces <= 1 or len(faces) == 0:
        return vertices, faces, np.arange(len(vertices)), 0
    adjacency = trimesh.graph.face_adjacency(faces)
    labels = trimesh.graph.connected_component_labels(adjacency, node_count=len(faces))
    sizes = np.bincount(labels)
    keep_face = sizes[labels] >= min_faces
    used = np.unique(faces[keep_face])
    remap = np.full(len(vertices), -1, np.int64)
    remap[used] = np.arange(len(used))
    return vertices[used], remap[faces[keep_face]], used, int(np.sum(sizes < min_faces))


def frontal_viewdirs(
    vertices: np.ndarray, normals: np.ndarray, centres: np.ndarray, chunk: int = 1 << 14
) -> np.ndarray:
    """For each vertex [V, 3] with outward unit normal [V, 3], the unit direction [V, 3]
    from the camera centre (of ``centres`` [C, 3]) that faces it most squarely (the
    largest cosine between the normal and the direction to the camera) towards it."""
    out = np.empty_like(vertices, dtype=np.float64)
    for start in range(0, len(vertices), chunk):
        v, n = vertices[start : start + chunk], normals[start : start + chunk]
        to_camera = centres[None, :, :] - v[:, None, :]  # [v, C, 3]
        to_camera /= np.maximum(np.linalg.norm(to_camera, axis=-1, keepdims=True), 1e-12)
        best = np.argmax(np.einsum("vcd,vd->vc", to_camera, n), axis=-1)
        out[start : start + chunk] = -to_camera[np.arange(len(v)), best]
    return out


@dataclasses.dataclass(frozen=True)
class MeshOptions:
    """See the module docstring; ``density`` None: half opaque over a pixel footprint."""

    resolution: int = DEFAULT_RESOLUTION
    space: str = "metric"
    density: float | None = None
    min_faces: int = DEFAULT_MIN_FACES
    frame: str = "colmap"
    batch: int = FIELD_BATCH

    def check(self) -> None:
        check_space(self.space)
        check_frame(self.frame)
        if self.resolution < 8:
            raise RaynerfError(f"--resolution must be at least 8, got {self.resolution}")
        if self.density is not None and not self.density > 0:
            raise RaynerfError(f"--density must be positive, got {self.density}")
        if self.min_faces < 0:
            raise RaynerfError(f"--min-faces must be >= 0, got {self.min_faces}")


@dataclasses.dataclass(frozen=True)
class ColouredMesh:
    """vertices [V, 3] float64 in the output frame, faces [F, 3], colours [V, 3] uint8."""

    vertices: np.ndarray
    faces: np.ndarray
    colours: np.ndarray
    density: float  # the surface's density (at the scene's centre, for the default level)
    footprint: float  # a training pixel's size at the centre (normalised units)
    dropped: int  # pieces of fewer than min_faces faces removed


def extract_mesh(
    run: TrainedRun, options: MeshOptions = MeshOptions(), show_progress: bool = True
) -> ColouredMesh:
    """Samples ``run``'s density on the grid, runs marching cubes and colours the vertices."""
    options.check()
    axis, voxel = grid_axis(options.resolution, options.space)
    footprint = pixel_footprint(run.scene)
    side = max(voxel, footprint)
    model = MipNerf360(run.config.model)
    unit = field_batch_unit(run.mesh)
    batch = -(-options.batch // unit) * unit
    n = options.resolution
    if options.space == "contracted":
        indices = ball_indices(axis, contracted_limit(voxel))
    else:
        indices = np.arange(n**3)
    density = np.zeros(n**3, np.float32)
    stretch = np.ones(n**3, np.float32)
    density_fn = make_field_fn(model, run.mesh, options.space, side, with_rgb=False)
    with tqdm(
        total=len(indices), desc="density", unit="pt", unit_scale=True, disable=not show_progress
    ) as bar:
        for start in range(0, len(indices), 1 << 22):  # a few million points at a time
            chunk = indices[start : start + (1 << 22)]
            points = grid_points(axis, chunk)
            viewdirs = np.broadcast_to(np.float32([0.0, 0.0, 1.0]), points.shape)  # (unused by density)
            out = query_field(density_fn, run.params, points, viewdirs, batch, run.mesh, bar)
            density[chunk], stretch[chunk] = out["density"], out["stretch"]
    values, level = surface_values(density, stretch, footprint, options.density)
    vertices_grid, faces = marching_cubes(values.reshape(n, n, n), level, axis)
    if options.space == "contracted":  # vertices between a kept point and a dropped one
        limit = contracted_limit(voxel)
        norm = np.linalg.norm(vertices_grid, axis=-1, keepdims=True)
        vertices_grid = vertices_grid * np.minimum(1.0, limit / np.maximum(norm, 1e-12))
    vertices_grid, faces, _, dropped = drop_small_components(vertices_grid, faces, options.min_faces)
    if len(faces) == 0:
        raise RaynerfError(
            f"every piece of the surface has fewer than {options.min_faces} faces; lower --min-faces"
        )
    vertices = np.asarray(uncontract(vertices_grid)) if options.space == "contracted" else vertices_grid
    normals = trimesh.Trimesh(vertices, faces, process=False).vertex_normals
    centres = run.scene.camtoworlds[run.scene.train_indices][:, :3, 3].astype(np.float64)
    viewdirs = frontal_viewdirs(vertices, normals, centres)
    colour_fn = make_field_fn(model, run.mesh, options.space, side, with_rgb=True)
    rgb = query_field(colour_fn, run.params, vertices_grid, viewdirs, batch, run.mesh)["rgb"]
    return ColouredMesh(
        vertices=to_frame(vertices, run.scene.transform, options.frame),
        faces=faces,
        colours=to_uint8(rgb),
        density=level / footprint if options.density is None else level,
        footprint=footprint,
        dropped=dropped,
    )


def write_mesh_ply(path: Path, vertices: np.ndarray, faces: np.ndarray, colours: np.ndarray) -> None:
    """A binary PLY of the mesh with per-vertex colours (trimesh), written atomically."""
    alpha = np.full((len(colours), 1), 255, np.uint8)
    mesh = trimesh.Trimesh(
        vertices=np.asarray(vertices, np.float64),
        faces=faces,
        vertex_colors=np.concatenate([colours, alpha], axis=-1),
        process=False,
    )
    with storage.atomic_path(path) as tmp:
        mesh.export(str(tmp), file_type="ply", encoding="binary")
