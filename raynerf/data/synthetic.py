"""``raynerf make-scene``: a procedural unbounded 360 scene in the real capture layout.

The world (COLMAP world frame, z up, units of about a metre): a textured ground
disc, two spheres and two boxes near the origin, and a far textured sky sphere
(radius 40) so that scene contraction matters. Images are rendered by exact
analytic ray casting (vectorised numpy) from cameras on a wavy ring looking at
the centre (a full orbit, or an arc of it: ``arc_degrees``). ``images/`` is rendered
once (``supersample**2`` rays per pixel, default 1) and ``images_2/4/8`` are
box-filtered from it, so a pixel of ``images_<f>/`` averages at least f x f rays
(anti-aliased). Written alongside:

* ``sparse/0/{cameras,images,points3D}.bin`` via pycolmap: one PINHOLE camera (or,
  with ``focal_spread`` or ``max_k1``, one camera per image with its own focal length
  and SIMPLE_RADIAL distortion, as phone captures have), every pose, and points
  sampled on the objects with their visible observations.
* ``depth_<factor>/<stem>.npy`` for factors 4 and 8: float32 [H, W] ground-truth
  **z-depth** (distance along the optical axis, COLMAP world units) at the pixel
  centres of ``images_<factor>/``.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image

from raynerf.data.cameras import distort, undistort
from raynerf.data.colmap_lib import pycolmap
from raynerf.data.images import folder_name

FACTORS = (1, 2, 4, 8)
SKY_RADIUS = 40.0
BOUND_RADIUS = 1.8  # every sphere and box lies inside this sphere about the origin
DEPTH_FACTORS = (4, 8)  # factors with ground-truth depth maps
GROUND_RADIUS = 3.0
LIGHT = np.array([0.4, 0.3, 1.0]) / np.linalg.norm([0.4, 0.3, 1.0])
LOOK_AT = np.array([0.0, 0.0, 0.4])
SCENE_VERSION = "1"


@dataclasses.dataclass(frozen=True)
class World:
    """The scene's analytic geometry (object ids: 0 sky, 1 ground, 2.. spheres, then boxes)."""

    sphere_centres: np.ndarray = dataclasses.field(
        default_factory=lambda: np.array([[0.0, 0.0, 0.55], [1.0, -0.7, 0.3]])
    )
    sphere_radii: np.ndarray = dataclasses.field(default_factory=lambda: np.array([0.55, 0.3]))
    box_mins: np.ndarray = dataclasses.field(
        default_factory=lambda: np.array([[-1.25, 0.25, 0.0], [0.15, 0.85, 0.0]])
    )
    box_maxs: np.ndarray = dataclasses.field(
        default_factory=lambda: np.array([[-0.55, 0.75, 0.7], [0.55, 1.25, 0.4]])
    )


WORLD = World()


# --- ray casting -----------------------------------------------------------------


def _dot(a, b):
    """Row-wise dot product of [..., 3] arrays (faster than a reduction over 3)."""
    return a[..., 0] * b[..., 0] + a[..., 1] * b[..., 1] + a[..., 2] * b[..., 2]


def _hit_spheres(origins, dirs, centres, radii):
    """Nearest positive hit of unit-direction rays [M, 3] with spheres: t [S, M], inf if none."""
    out = np.full((len(radii), len(origins)), np.inf)
    for s, (centre, radius) in enumerate(zip(centres, radii)):
        oc = origins - centre
        b = _dot(oc, dirs)
        disc = b * b - (_dot(oc, oc) - radius**2)
        root = np.sqrt(np.maximum(disc, 0.0))
        t = -b - root
        t = np.where(t > 1e-6, t, -b + root)
        out[s] = np.where((disc >= 0) & (t > 1e-6), t, np.inf)
    return out


def _hit_boxes(origins, dirs, mins, maxs):
    """Nearest positive hit of rays [M, 3] with axis-aligned boxes: t [K, M], inf if none."""
    out = np.full((len(mins), len(origins)), np.inf)
    with np.errstate(divide="ignore", invalid="ignore"):
        inv = 1.0 / dirs
        for k, (lo, hi) in enumerate(zip(mins, maxs)):
            t_near, t_far = np.full(len(origins), -np.inf), np.full(len(origins), np.inf)
            for axis in range(3):
                t1 = (lo[axis] - origins[:, axis]) * inv[:, axis]
                t2 = (hi[axis] - origins[:, axis]) * inv[:, axis]
                t_near = np.maximum(t_near, np.minimum(t1, t2))
                t_far = np.minimum(t_far, np.maximum(t1, t2))
            out[k] = np.where((t_far >= t_near) & (t_near > 1e-6), t_near, np.inf)
    return out


def _hit_ground(origins, dirs):
    """Hit of rays [M, 3] with the ground disc (z = 0): t [M], inf if none."""
    with np.errstate(divide="ignore", invalid="ignore"):
        t = -origins[:, 2] / dirs[:, 2]
        x = origins[:, 0] + t * dirs[:, 0]
        y = origins[:, 1] + t * dirs[:, 1]
    return np.where((t > 1e-6) & (x * x + y * y < GROUND_RADIUS**2), t, np.inf)


def _hit_sky(origins, dirs):
    """Exit distance of rays [M, 3] (starting inside) through the sky sphere: t [M]."""
    b = _dot(origins, dirs)
    return -b + np.sqrt(b * b - (_dot(origins, origins) - SKY_RADIUS**2))


def cast(origins: np.ndarray, dirs: np.ndarray, world: World = WORLD) -> tuple[np.ndarray, np.ndarray]:
    """First hit of unit-direction rays [M, 3]: (distance t [M], object id [M])."""
    num_objects = 2 + len(world.sphere_radii) + len(world.box_mins)
    candidates = np.full((num_objects, len(origins)), np.inf)
    candidates[0] = _hit_sky(origins, dirs)
    candidates[1] = _hit_ground(origins, dirs)
    # Only rays that meet the objects' bounding sphere can hit a sphere or a box.
    near = np.isfinite(_hit_spheres(origins, dirs, np.zeros((1, 3)), np.array([BOUND_RADIUS]))[0])
    near |= _dot(origins, origins) < BOUND_RADIUS**2
    o, d = origins[near], dirs[near]
    candidates[2:, near] = np.concatenate(
        [
            _hit_spheres(o, d, world.sphere_centres, world.sphere_radii),
            _hit_boxes(o, d, world.box_mins, world.box_maxs),
        ]
    )
    ids = np.argmin(candidates, axis=0)
    return np.take_along_axis(candidates, ids[None], 0)[0], ids


def _normals(points, ids, world):
    """Outward unit normals [M, 3] of hit points of solid objects (ids >= 1)."""
    normals = np.zeros_like(points)
    normals[ids == 1] = [0.0, 0.0, 1.0]
    num_spheres = len(world.sphere_radii)
    for s in range(num_spheres):
        sel = ids == 2 + s
        normals[sel] = (points[sel] - world.sphere_centres[s]) / world.sphere_radii[s]
    for k in range(len(world.box_mins)):
        sel = ids == 2 + num_spheres + k
        centre = 0.5 * (world.box_mins[k] + world.box_maxs[k])
        half = 0.5 * (world.box_maxs[k] - world.box_mins[k])
        rel = (points[sel] - centre) / half
        axis = np.argmax(np.abs(rel), axis=-1)
        normals[sel, axis] = np.sign(rel[np.arange(len(axis)), axis])
    return normals


def _checker(*coords):
    return (np.sum([np.floor(c) for c in coords], axis=0) % 2).astype(np.float64)[:, None]


def _mix(a, b, w):
    return np.asarray(a) * (1 - w) + np.asarray(b) * w


def _sky_colour(dirs):
    elevation = np.arcsin(np.clip(dirs[:, 2], -1, 1))
    azimuth = np.arctan2(dirs[:, 1], dirs[:, 0])
    sky = _mix([0.75, 0.85, 0.95], [0.2, 0.35, 0.75], np.clip(elevation / 1.2, 0, 1)[:, None])
    clouds = (0.5 + 0.5 * np.sin(7 * azimuth + 3 * np.sin(9 * elevation))) * np.clip(
        np.sin(4 * elevation), 0, 1
    )
    sky = _mix(sky, [1.0, 1.0, 1.0], 0.6 * clouds[:, None] ** 2)
    ridge = 0.08 + 0.06 * np.sin(5 * azimuth) + 0.03 * np.sin(17 * azimuth + 1.0)
    stripes = 0.5 + 0.5 * np.sin(60 * azimuth)[:, None]
    hills = _mix([0.25, 0.35, 0.2], [0.45, 0.4, 0.3], stripes)
    return np.where((elevation < ridge)[:, None], hills, sky)


def _ground_albedo(p, world):
    checker = _checker(p[:, 0] / 0.3, p[:, 1] / 0.3)
    rings = 0.85 + 0.15 * np.cos(6 * np.hypot(p[:, 0], p[:, 1]))
    return _mix([0.8, 0.75, 0.6], [0.3, 0.28, 0.22], checker) * rings[:, None]


def _striped_sphere_albedo(p, world):
    rel = p - world.sphere_centres[0]
    stripes = 0.5 + 0.5 * np.sin(10 * np.arctan2(rel[:, 1], rel[:, 0]) + 8 * rel[:, 2])
    return _mix([0.9, 0.15, 0.1], [1.0, 0.85, 0.2], stripes[:, None])


def _checker_sphere_albedo(p, world):
    rel = (p - world.sphere_centres[1]) / world.sphere_radii[1]
    lon, lat = np.arctan2(rel[:, 1], rel[:, 0]), np.arcsin(np.clip(rel[:, 2], -1, 1))
    return _mix([0.1, 0.2, 0.8], [0.95, 0.95, 0.95], _checker(lon * 4 / np.pi, lat * 4 / np.pi))


def _checker_box_albedo(p, world):
    return _mix([0.1, 0.5, 0.15], [0.6, 0.85, 0.3], _checker(p[:, 0] * 6, p[:, 1] * 6, p[:, 2] * 6))


def _banded_box_albedo(p, world):
    bands = 0.5 + 0.5 * np.sin(40 * p[:, 2] + 4 * p[:, 0])
    return _mix([0.45, 0.1, 0.55], [1.0, 0.6, 0.1], bands[:, None])


# albedo function of each solid object id (1 ground, 2-3 spheres, 4-5 boxes)
ALBEDOS = {
    1: _ground_albedo,
    2: _striped_sphere_albedo,
    3: _checker_sphere_albedo,
    4: _checker_box_albedo,
    5: _banded_box_albedo,
}


def _albedo(points, ids, world):
    """Surface colour [M, 3] of points [M, 3] on solid objects ``ids`` [M]."""
    colour = np.zeros_like(points)
    for object_id, albedo in ALBEDOS.items():
        sel = ids == object_id
        if sel.any():
            colour[sel] = albedo(points[sel], world)
    return colour


def shade(origins: np.ndarray, dirs: np.ndarray, world: World = WORLD) -> tuple[np.ndarray, np.ndarray]:
    """Colour [M, 3] in [0, 1] and hit distance t [M] of unit-direction rays [M, 3]."""
    t, ids = cast(origins, dirs, world)
    colour = np.empty_like(dirs)
    sky = ids == 0
    colour[sky] = _sky_colour(dirs[sky])
    solid = ~sky
    points = origins[solid] + t[solid, None] * dirs[solid]
    light = 0.35 + 0.65 * np.clip(_normals(points, ids[solid], world) @ LIGHT, 0, 1)
    colour[solid] = _albedo(points, ids[solid], world) * light[:, None]
    return np.clip(colour, 0, 1), t


def surface_distance(points: np.ndarray, world: World = WORLD) -> np.ndarray:
    """Unsigned distance [M] from points [M, 3] to the nearest surface (exact SDFs).

    An independent description of the geometry (distance functions, not ray
    intersections) for checking rendered depth.
    """
    spheres = np.abs(np.linalg.norm(points[:, None] - world.sphere_centres, axis=-1) - world.sphere_radii)
    centres = 0.5 * (world.box_mins + world.box_maxs)
    half = 0.5 * (world.box_maxs - world.box_mins)
    q = np.abs(points[:, None] - centres) - half
    boxes = np.abs(np.linalg.norm(np.maximum(q, 0), axis=-1) + np.minimum(q.max(-1), 0))
    ring = np.maximum(np.hypot(points[:, 0], points[:, 1]) - GROUND_RADIUS, 0)
    ground = np.hypot(np.abs(points[:, 2]), ring)
    sky = np.abs(np.linalg.norm(points, axis=-1) - SKY_RADIUS)
    return np.min(np.concatenate([spheres, boxes, ground[:, None], sky[:, None]], -1), axis=-1)


# --- cameras ------------------------------------------------------------------------


def ring_cameras(num_images: int, seed: int, arc_degrees: float = 360.0) -> np.ndarray:
    """[N, 3, 4] OpenCV camtoworlds on a wavy ring, each looking at the scene centre:
    evenly around it, or over an arc of ``arc_degrees`` (both ends included)."""
    rng = np.random.default_rng(seed)
    arc = np.radians(arc_degrees)
    full = arc_degrees >= 360.0
    azimuth = np.linspace(0, arc, num_images, endpoint=not full)
    spacing = arc / (num_images if full else num_images - 1)
    azimuth = azimuth + rng.uniform(-0.3, 0.3, num_images) * spacing
    radius = 3.6 + 0.3 * np.sin(3 * azimuth) + rng.uniform(-0.1, 0.1, num_images)
    height = 1.4 + 0.5 * np.sin(2 * azimuth + 0.5) + rng.uniform(-0.1, 0.1, num_images)
    centres = np.stack([radius * np.cos(azimuth), radius * np.sin(azimuth), height], -1)
    forward = LOOK_AT - centres
    forward /= np.linalg.norm(forward, axis=-1, keepdims=True)
    right = np.cross(forward, [0.0, 0.0, 1.0])
    right /= np.linalg.norm(right, axis=-1, keepdims=True)
    down = np.cross(forward, right)
    return np.stack([right, down, forward, centres], axis=-1)


def _pixel_dirs(camtoworld, focal, width, height, factor, offsets, k1=0.0):
    """Unit world directions [S, H, W, 3] through each factor-pixel, for sub-pixel offsets [S, 2]
    (in factor-pixel units, 0.5 = centre), and the camera-frame z of each unit direction.
    With radial distortion ``k1`` the pixel's (distorted) coordinates are undistorted first."""
    f = focal / factor
    cx, cy = width / (2 * factor), height / (2 * factor)
    ys, xs = np.meshgrid(np.arange(height // factor), np.arange(width // factor), indexing="ij")
    u = (xs[None] + offsets[:, 0, None, None] - cx) / f
    v = (ys[None] + offsets[:, 1, None, None] - cy) / f
    if k1:
        uv = undistort(np.stack([u, v], -1), np.array([k1, 0.0, 0.0, 0.0]))
        u, v = uv[..., 0], uv[..., 1]
    cam = np.stack([u, v, np.ones_like(u)], -1)
    cam /= np.linalg.norm(cam, axis=-1, keepdims=True)
    return cam @ camtoworld[:, :3].T, cam[..., 2]


def render_image(
    camtoworld: np.ndarray, focal: float, width: int, height: int, supersample: int = 1, k1: float = 0.0
) -> np.ndarray:
    """float [H, W, 3] colour at full resolution, ``supersample**2`` rays per pixel."""
    grid = (np.arange(supersample) + 0.5) / supersample
    offsets = np.stack(np.meshgrid(grid, grid, indexing="ij"), -1).reshape(-1, 2)[:, ::-1]
    dirs, _ = _pixel_dirs(camtoworld, focal, width, height, 1, offsets, k1)
    origins = np.broadcast_to(camtoworld[:, 3], (dirs[..., 0].size, 3))
    colour, _ = shade(origins, dirs.reshape(-1, 3))
    return colour.reshape(dirs.shape).mean(0)


def render_depth(
    camtoworld: np.ndarray, focal: float, width: int, height: int, factor: int, k1: float = 0.0
) -> np.ndarray:
    """float32 [H / factor, W / factor] z-depth at the pixel centres of ``images_<factor>``."""
    dirs, zs = _pixel_dirs(camtoworld, focal, width, height, factor, np.array([[0.5, 0.5]]), k1)
    t, _ = cast(np.broadcast_to(camtoworld[:, 3], (dirs[..., 0].size, 3)), dirs.reshape(-1, 3))
    return (t * zs.reshape(-1)).reshape(zs.shape[1:]).astype(np.float32)


def box_filter(image: np.ndarray, factor: int) -> np.ndarray:
    """[H, W, C] -> [H / factor, W / factor, C] by averaging factor x factor blocks."""
    h, w, c = image.shape
    return image.reshape(h // factor, factor, w // factor, factor, c).mean(axis=(1, 3))


# --- sparse model -----------------------------------------------------------------


def surface_points(
    count: int, rng: np.random.Generator, world: World = WORLD
) -> tuple[np.ndarray, np.ndarray]:
    """Points on the objects' and the inner ground's surfaces: (xyz [count, 3], object id [count])."""
    groups = []
    per = count // 5
    for centre, radius in zip(world.sphere_centres, world.sphere_radii):
        d = rng.normal(size=(per, 3))
        groups.append(centre + radius * d / np.linalg.norm(d, axis=-1, keepdims=True))
    for lo, hi in zip(world.box_mins, world.box_maxs):
        p = rng.uniform(lo, hi, size=(per, 3))
        axis = rng.integers(0, 3, per)
        side = rng.integers(0, 2, per)
        p[np.arange(per), axis] = np.where(side == 1, hi[axis], lo[axis])
        groups.append(p)
    rest = count - per * 4
    r = 2.2 * np.sqrt(rng.uniform(size=rest))
    a = rng.uniform(0, 2 * np.pi, rest)
    groups.append(np.stack([r * np.cos(a), r * np.sin(a), np.zeros(rest)], -1))
    ids = np.concatenate([np.full(per, 2 + k) for k in range(4)] + [np.ones(rest, np.int64)])
    return np.concatenate(groups), ids


def observations(
    points: np.ndarray, camtoworld: np.ndarray, focal: float, width: int, height: int, k1: float = 0.0
) -> tuple[np.ndarray, np.ndarray]:
    """Visible points of one camera: (indices [V], image coordinates [V, 2] at full size)."""
    centre = camtoworld[:, 3]
    cam = (points - centre) @ camtoworld[:, :3]
    z = cam[:, 2]
    with np.errstate(divide="ignore", invalid="ignore"):
        uv = distort(cam[:, :2] / z[:, None], np.array([k1, 0.0, 0.0, 0.0]))
        xy = focal * uv + np.array([width / 2, height / 2])
    inside = (z > 0.05) & (xy[:, 0] >= 0) & (xy[:, 0] < width) & (xy[:, 1] >= 0) & (xy[:, 1] < height)
    offset = points - centre
    dist = np.linalg.norm(offset, axis=-1)
    t, _ = cast(np.broadcast_to(centre, points.shape), offset / dist[:, None])
    visible = inside & (np.abs(t - dist) < 1e-6 * (1 + dist))
    return np.nonzero(visible)[0], xy[visible]


def write_model(
    path: Path,
    camtoworlds: np.ndarray,
    names: list[str],
    lenses: Lenses,
    width: int,
    height: int,
    points: np.ndarray,
    colours: np.ndarray,
) -> None:
    """Writes ``path/{cameras,images,points3D}.bin`` with pycolmap: one PINHOLE camera
    shared by every image, or (``lenses.per_image``) one camera per image, SIMPLE_RADIAL
    if any image is distorted, else PINHOLE."""
    recon = pycolmap.Reconstruction()
    model = "SIMPLE_RADIAL" if np.any(lenses.k1s) else "PINHOLE"
    for camera_id in range(1, (len(names) if lenses.per_image else 1) + 1):
        f, k1 = lenses.focals[camera_id - 1], lenses.k1s[camera_id - 1]
        params = [f, width / 2, height / 2, k1] if model == "SIMPLE_RADIAL" else [f, f, width / 2, height / 2]
        camera = pycolmap.Camera(model=model, width=width, height=height, params=params, camera_id=camera_id)
        recon.add_camera_with_trivial_rig(camera)
    tracks: dict[int, list[tuple[int, int]]] = {}
    for image_id, (pose, name) in enumerate(zip(camtoworlds, names), start=1):
        f, k1 = lenses.focals[image_id - 1], lenses.k1s[image_id - 1]
        idx, xy = observations(points, pose, f, width, height, k1)
        rotation = pose[:, :3].T
        cam_from_world = pycolmap.Rigid3d(np.concatenate([rotation, -rotation @ pose[:, 3:]], 1))
        keypoints = pycolmap.Point2DList([pycolmap.Point2D(p) for p in xy])
        camera_id = image_id if lenses.per_image else 1
        image = pycolmap.Image(name=name, points2D=keypoints, camera_id=camera_id, image_id=image_id)
        recon.add_image_with_trivial_frame(image, cam_from_world)
        for point2d_idx, point_idx in enumerate(idx):
            tracks.setdefault(int(point_idx), []).append((image_id, point2d_idx))
    for point_idx, track_elements in sorted(tracks.items()):
        if len(track_elements) < 2:
            continue
        track = pycolmap.Track()
        for image_id, point2d_idx in track_elements:
            track.add_element(image_id, point2d_idx)
        recon.add_point3D(points[point_idx], track, colours[point_idx])
    path.mkdir(parents=True, exist_ok=True)
    recon.write(str(path))


# --- the scene folder -----------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Lenses:
    """Each image's focal length [N] (full-resolution pixels) and radial distortion
    ``k1`` [N]; ``per_image``: one COLMAP camera per image rather than one shared."""

    focals: np.ndarray
    k1s: np.ndarray
    per_image: bool


def draw_lenses(
    num_images: int, width: int, height: int, seed: int, focal_spread: float = 0.0, max_k1: float = 0.0
) -> Lenses:
    """The lenses of a generated scene: focal 0.9 x the longer side, each image's scaled by
    a factor uniform in ``1 +- focal_spread``, and ``k1`` uniform in ``[0, max_k1]`` (the
    first image gets ``max_k1`` itself, so the largest distortion asked for is present).
    With neither, one shared undistorted camera."""
    focal = 0.9 * max(width, height)
    if not focal_spread and not max_k1:
        return Lenses(np.full(num_images, focal), np.zeros(num_images), per_image=False)
    rng = np.random.default_rng([seed, 7])  # apart from the poses' stream: same poses either way
    focals = focal * (1.0 + focal_spread * rng.uniform(-1.0, 1.0, num_images))
    k1s = max_k1 * rng.uniform(0.0, 1.0, num_images)
    k1s[0] = max_k1
    return Lenses(focals, k1s, per_image=True)


def make_scene(
    path: Path | str,
    num_images: int = 64,
    width: int = 640,
    height: int = 480,
    seed: int = 0,
    num_points: int = 2000,
    supersample: int = 1,
    progress: bool = False,
    arc_degrees: float = 360.0,
    focal_spread: float = 0.0,
    max_k1: float = 0.0,
) -> Path:
    """Renders the procedural scene into ``path`` (which must not exist yet, or be empty).

    Writes to a temporary sibling folder and renames it at the end. ``width`` and
    ``height`` must be multiples of 8 so that every factor folder divides evenly (either
    may be the larger: ``height > width`` gives portrait images). ``arc_degrees`` < 360
    puts the cameras on that arc of the ring only (180: a half orbit); ``focal_spread``
    and ``max_k1`` give every image its own camera (:func:`draw_lenses`).
    """
    path = Path(path)
    if width % 8 or height % 8 or width <= 0 or height <= 0:
        raise ValueError(f"width and height must be positive multiples of 8, got {width}x{height}")
    if num_images < 2:
        raise ValueError(f"need at least 2 images, got {num_images}")
    if not 0 < arc_degrees <= 360:
        raise ValueError(f"arc_degrees must be in (0, 360], got {arc_degrees}")
    if not 0 <= focal_spread < 0.5 or not 0 <= max_k1 <= 0.2:
        raise ValueError(f"need 0 <= focal_spread < 0.5 and 0 <= max_k1 <= 0.2, got {focal_spread}, {max_k1}")
    lenses = draw_lenses(num_images, width, height, seed, focal_spread, max_k1)
    camtoworlds = ring_cameras(num_images, seed, arc_degrees)
    names = [f"frame_{i:04d}.JPG" for i in range(num_images)]
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}-", dir=path.parent))
    try:
        for factor in FACTORS:
            (tmp / folder_name(factor)).mkdir()
        for factor in DEPTH_FACTORS:
            (tmp / f"depth_{factor}").mkdir()

        def write_frame(frame: tuple[str, np.ndarray, float, float]) -> None:
            name, pose, focal, k1 = frame
            full = render_image(pose, focal, width, height, supersample, k1)
            for factor in FACTORS:
                pixels = full if factor == 1 else box_filter(full, factor)
                Image.fromarray(np.round(pixels * 255).astype(np.uint8)).save(
                    tmp / folder_name(factor) / name, quality=95
                )
            for factor in DEPTH_FACTORS:
                np.save(
                    tmp / f"depth_{factor}" / f"{Path(name).stem}.npy",
                    render_depth(pose, focal, width, height, factor, k1),
                )

        # numpy and PIL release the GIL on large arrays, so threads use every core.
        with ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1)) as pool:
            done = pool.map(write_frame, zip(names, camtoworlds, lenses.focals, lenses.k1s))
            if progress:
                from tqdm import tqdm

                done = tqdm(done, total=num_images, desc="rendering", unit="image")
            for _ in done:
                pass
        rng = np.random.default_rng(seed + 1)
        points, ids = surface_points(num_points, rng)
        colours = _albedo(points, ids, WORLD)
        write_model(
            tmp / "sparse" / "0",
            camtoworlds,
            names,
            lenses,
            width,
            height,
            points,
            np.round(colours * 255).astype(np.uint8),
        )
        (tmp / "SOURCE.md").write_text(_readme(num_images, width, height, seed, arc_degrees, lenses))
        if path.exists():
            path.rmdir()  # only an empty folder may be replaced
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return path


def _readme(num_images: int, width: int, height: int, seed: int, arc_degrees: float, lenses: Lenses) -> str:
    ring = "a ring" if arc_degrees >= 360 else f"a {arc_degrees:g} degree arc of a ring"
    if lenses.per_image:
        cameras = (
            f"One camera per image: focal {lenses.focals.min():.1f} to {lenses.focals.max():.1f} px, "
            f"k1 up to {lenses.k1s.max():g}. "
        )
    else:
        cameras = "One PINHOLE camera. "
    return (
        "# raynerf synthetic scene\n\n"
        f"Generated by `raynerf make-scene` (version {SCENE_VERSION}, seed {seed}): "
        f"{num_images} images of {width}x{height} on {ring} around textured objects, "
        f"with a sky sphere of radius {SKY_RADIUS:g}. {cameras}"
        "`depth_4/`, `depth_8/` hold ground-truth z-depth (`<stem>.npy`) (along the optical axis, "
        "COLMAP world units) at the pixel centres of `images_4/`, `images_8/`.\n"
    )


def default_scene(cache_root: Path | str) -> Path:
    """The embedded default scene (for ``raynerf demo`` and tests), built once under
    ``cache_root`` and reused."""
    path = Path(cache_root) / f"synthetic-v{SCENE_VERSION}"
    if (path / "sparse" / "0" / "images.bin").is_file():
        return path
    try:
        return make_scene(path)
    except OSError:
        if (path / "sparse" / "0" / "images.bin").is_file():  # another process won the race
            return path
        raise
