"""A coloured point cloud from the training views: each confident pixel's rendered
colour at its rendered distance.

Every training view (or ``views`` of them, evenly spaced) is rendered with the final
level at test-time sampling. A pixel gives the point ``origin + distance * direction``
with ``distance = distance_median``: the distance at which the ray's compositing
weight reaches half its total. Unlike ``distance_mean`` it does not average a
foreground and the background behind it at silhouettes (which would put points in
the empty space between them): the median always falls inside an interval that
carries weight, i.e. on something the model made opaque.

A pixel is kept when the model is confident about it:

* its *accumulation in the bounded region*, the compositing weight of the intervals
  whose midpoints lie within ``radius`` of the normalised frame's origin, is at least
  ``min_acc``. (The plain accumulation is 1 for every ray of a model with an opaque
  background, so it tells nothing; this one is low for rays that pass the scene
  and end on the background, and for silhouette pixels shared with it.)
* and its point lies within ``radius`` too (default 1: the unit ball, where the
  contraction is the identity and the model has its full resolution).

Of the pixels kept, ``points`` are drawn uniformly without replacement (a fixed seed,
so the same run exports the same file). The file is a binary PLY written with
plyfile: ``x, y, z`` float32 and ``red, green, blue`` uint8, in the COLMAP world frame
unless ``frame="normalised"`` (see :mod:`raynerf.export`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Literal

import jax.numpy as jnp
import numpy as np
import plyfile
from jax.sharding import Mesh
from tqdm.auto import tqdm

from raynerf import storage
from raynerf.errors import RaynerfError
from raynerf.export import TrainedRun, check_frame, to_frame
from raynerf.model.mipnerf360 import MipNerf360
from raynerf.model.rays import RAY_FIELDS, Rays
from raynerf.model.render_chunks import choose_chunk, chunk_unit, make_render_fn, render_rays
from raynerf.render.images import to_uint8

DEFAULT_POINTS = 1_000_000
DEFAULT_MIN_ACC = 0.9
DEFAULT_RADIUS = 1.0
SAMPLE_SEED = 0


def backproject(origins: np.ndarray, directions: np.ndarray, distance: np.ndarray) -> np.ndarray:
    """Points at ``distance`` along rays: ``origins`` [..., 3] + ``distance`` [...] *
    ``directions`` [..., 3] -> [..., 3] (``directions`` as the rays carry them: the
    rendered distance is measured in their units, not necessarily unit length)."""
    return np.asarray(origins) + np.asarray(distance)[..., None] * np.asarray(directions)


def region_accumulation(
    weights: jnp.ndarray, tdist: jnp.ndarray, origins: jnp.ndarray, directions: jnp.ndarray, radius: float
) -> jnp.ndarray:
    """The compositing weight of the intervals whose midpoints lie within ``radius`` of
    the origin: weights [..., n], tdist [..., n + 1], origins and directions [..., 3]
    -> [...]."""
    mids = 0.5 * (tdist[..., :-1] + tdist[..., 1:])
    points = origins[..., None, :] + mids[..., None] * directions[..., None, :]
    inside = jnp.sum(points * points, axis=-1) <= radius * radius
    return jnp.sum(jnp.where(inside, weights, 0.0), axis=-1)


def make_point_fn(
    model: MipNerf360, mesh: Mesh, radius: float, passes: int | Literal["auto"] = "auto"
) -> Callable:
    """``(params, rays: dict [chunk, k]) -> {rgb [chunk, 3], distance [chunk], acc
    [chunk]}`` of the final level at test-time sampling: the colour, ``distance_median``
    and the accumulation within ``radius`` (:func:`region_accumulation`), rendered as
    :func:`raynerf.model.render_chunks.make_render_fn` renders."""

    def select(renderings: list[dict], rays: Rays) -> dict:
        final = renderings[-1]
        acc = region_accumulation(final["weights"], final["tdist"], rays.origins, rays.directions, radius)
        return {"rgb": final["rgb"], "distance": final["distance_median"], "acc": acc}

    return make_render_fn(model, mesh, passes, select=select)


def confident(points: np.ndarray, acc: np.ndarray, min_acc: float, radius: float) -> np.ndarray:
    """Which pixels to keep: points [..., 3] within ``radius`` of the origin whose
    region accumulation ``acc`` [...] is at least ``min_acc`` (NaNs are dropped) -> [...] bool."""
    inside = np.sum(np.square(points), axis=-1) <= radius * radius
    return inside & (acc >= min_acc) & np.all(np.isfinite(points), axis=-1)


def spread_views(indices: np.ndarray, views: int | None) -> np.ndarray:
    """``views`` of ``indices``, evenly spaced (all of them for None or more)."""
    indices = np.asarray(indices)
    if views is None or views >= len(indices):
        return indices
    return indices[np.unique(np.round(np.linspace(0, len(indices) - 1, views)).astype(int))]


@dataclasses.dataclass(frozen=True)
class PointCloudOptions:
    """See the module docstring; ``views`` None: every training view."""

    points: int = DEFAULT_POINTS
    views: int | None = None
    min_acc: float = DEFAULT_MIN_ACC
    radius: float = DEFAULT_RADIUS
    frame: str = "colmap"

    def check(self) -> None:
        if self.points < 1:
            raise RaynerfError(f"--points must be positive, got {self.points}")
        if self.views is not None and self.views < 1:
            raise RaynerfError(f"--views must be positive, got {self.views}")
        if not 0.0 <= self.min_acc <= 1.0:
            raise RaynerfError(f"--min-acc must be in [0, 1], got {self.min_acc}")
        if not self.radius > 0.0:
            raise RaynerfError(f"--radius must be positive, got {self.radius}")
        check_frame(self.frame)


@dataclasses.dataclass(frozen=True)
class PointCloud:
    """Points [P, 3] float64 in the output frame, colours [P, 3] uint8, and what was kept."""

    xyz: np.ndarray
    rgb: np.ndarray
    pixels: int  # pixels rendered
    kept: int  # pixels that passed the confidence test (``xyz`` holds a sample of them)
    views: int


def point_cloud(
    run: TrainedRun, options: PointCloudOptions = PointCloudOptions(), show_progress: bool = True
) -> PointCloud:
    """Renders the training views of ``run`` and returns the sampled confident points."""
    options.check()
    scene, config = run.scene, run.config
    indices = spread_views(scene.train_indices, options.views)
    if len(indices) == 0:
        raise RaynerfError(f"{scene.path} has no training views")
    point_fn = make_point_fn(MipNerf360(config.model), run.mesh, options.radius)
    largest = max(int(scene.widths[i]) * int(scene.heights[i]) for i in indices)
    chunk = choose_chunk(config.render.chunk_size, largest, chunk_unit(run.mesh), config.model)
    xyz, rgb = [], []
    pixels = 0
    for index in tqdm(indices, desc="pointcloud", unit="view", disable=not show_progress):
        rays = scene.image_rays(int(index), config.model.near, config.model.far)
        flat = {name: rays[name].reshape(-1, rays[name].shape[-1]) for name in RAY_FIELDS}
        out = render_rays(point_fn, run.params, flat, chunk, run.mesh)
        points = backproject(flat["origins"], flat["directions"], out["distance"])
        keep = confident(points, out["acc"], options.min_acc, options.radius)
        xyz.append(points[keep].astype(np.float32))
        rgb.append(to_uint8(out["rgb"][keep]))
        pixels += len(keep)
    xyz_all, rgb_all = np.concatenate(xyz), np.concatenate(rgb)
    kept = len(xyz_all)
    if kept == 0:
        raise RaynerfError(
            f"no pixel of the {len(indices)} views rendered has accumulation >= {options.min_acc} "
            f"within radius {options.radius}: lower --min-acc or widen --radius (or train longer)"
        )
    if options.points < kept:
        chosen = np.sort(np.random.default_rng(SAMPLE_SEED).choice(kept, options.points, replace=False))
        xyz_all, rgb_all = xyz_all[chosen], rgb_all[chosen]
    return PointCloud(
        xyz=to_frame(xyz_all, scene.transform, options.frame),
        rgb=rgb_all,
        pixels=pixels,
        kept=kept,
        views=len(indices),
    )


def write_points_ply(path: Path, xyz: np.ndarray, rgb: np.ndarray) -> None:
    """A binary little-endian PLY of ``vertex`` elements (x, y, z float32; red, green,
    blue uint8), written atomically (a reader sees the old file or the whole new one)."""
    vertex = np.empty(
        len(xyz),
        dtype=[("x", "f4"), ("y", "f4"), ("z", "f4"), ("red", "u1"), ("green", "u1"), ("blue", "u1")],
    )
    for axis, name in enumerate("xyz"):
        vertex[name] = xyz[:, axis]
    for channel, name in enumerate(("red", "green", "blue")):
        vertex[name] = rgb[:, channel]
    element = plyfile.PlyElement.describe(vertex, "vertex")
    with storage.atomic_path(path) as tmp:
        plyfile.PlyData([element], text=False, byte_order="<").write(str(tmp))
