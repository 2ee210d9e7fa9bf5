"""Camera paths for rendering videos, and their JSON import / export.

Pose convention (the same as the rest of raynerf): camera-to-world matrices
``[N, 3, 4]`` in the normalised scene frame, ``[R | c]`` with camera centre ``c`` and
the columns of ``R`` the camera axes in the OpenCV / COLMAP convention: x right,
y down, z the viewing direction.

Nothing here assumes which world axis is "up": it is derived from the input cameras
(see :func:`world_up`: the normal of the plane the cameras circle in, signed to agree
with their mean up vector, i.e. their mean -y axis). For a normalised 360 capture it
is close to +z, and the camera positions' principal axes within the plane
perpendicular to it are close to x and y; the ellipse path is built in that frame.
All math is numpy float64 on the host.

Default paths: :func:`default_path` picks the ellipse around a 360 capture, an arc
(:func:`arc_path`) or a spiral (:func:`spiral_path`) among the views of a capture from
one side. Path files: raynerf's own JSON (:func:`save_path_json`, :func:`load_path_json`)
and nerfstudio's camera_path.json, told apart by :func:`load_camera_path`; nerfstudio's
dataparser_transforms.json (:func:`load_dataparser_transforms`) maps its frame back to the
capture's COLMAP world.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from raynerf.errors import RaynerfError
from raynerf.storage import atomic_path

PATH_JSON_VERSION = 1
PATH_CONVENTION = "opencv camera-to-world, normalised scene frame"
INTRINSIC_KEYS = ("width", "height", "fx", "fy", "cx", "cy")
_ROTATION_TOLERANCE = 1e-4


def _normalize(v: np.ndarray) -> np.ndarray:
    """Unit vectors along the last axis: [..., 3] -> [..., 3]."""
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


def _check_poses(camtoworlds: np.ndarray, minimum: int = 1) -> np.ndarray:
    camtoworlds = np.asarray(camtoworlds, np.float64)
    if camtoworlds.ndim != 3 or camtoworlds.shape[1:] != (3, 4) or len(camtoworlds) < minimum:
        raise ValueError(
            f"expected at least {minimum} camera-to-world matrices [N, 3, 4], got {camtoworlds.shape}"
        )
    return camtoworlds


def world_up(camtoworlds: np.ndarray) -> np.ndarray:
    """The scene's up direction, derived from the cameras: [N, 3, 4] -> unit [3].

    Starts from the cameras' mean up vector (their -y axes). When the camera centres lie
    close to a plane (the normal's spread is under a tenth of the in-plane spread) whose
    normal is within 45 degrees of that mean, the normal (signed to agree with it) is
    returned instead: for a capture circling the scene it is the exact axis of the
    circle, where the mean up vector tilts towards the side with more cameras.
    """
    camtoworlds = _check_poses(camtoworlds)
    mean_up = -camtoworlds[:, :, 1].sum(axis=0)
    norm = np.linalg.norm(mean_up)
    if norm < 1e-6 * len(camtoworlds):
        raise RaynerfError(
            "the cameras' up vectors cancel out, so no 'up' direction can be derived for the path"
        )
    mean_up = mean_up / norm
    if len(camtoworlds) < 3:
        return mean_up
    centred = camtoworlds[:, :, 3] - camtoworlds[:, :, 3].mean(axis=0)
    values, vectors = np.linalg.eigh(centred.T @ centred)
    normal = vectors[:, 0]
    agreement = float(normal @ mean_up)
    if values[0] <= 0.1 * values[1] and abs(agreement) >= np.cos(np.pi / 4):
        return normal * np.sign(agreement)
    return mean_up


def focus_point(camtoworlds: np.ndarray) -> np.ndarray:
    """The point nearest to all optical axes in the least-squares sense: [N, 3, 4] -> [3].

    Minimises the sum over cameras of the squared distance from the point to the line
    through the camera centre along its z axis.
    """
    camtoworlds = _check_poses(camtoworlds, minimum=2)
    axes = _normalize(camtoworlds[:, :, 2])
    centres = camtoworlds[:, :, 3]
    # Projectors onto the plane perpendicular to each axis: [N, 3, 3].
    projectors = np.eye(3) - axes[:, :, None] * axes[:, None, :]
    system = projectors.sum(axis=0)
    rhs = np.einsum("nij,nj->i", projectors, centres)
    if np.linalg.eigvalsh(system)[0] < 1e-6 * len(camtoworlds):
        raise RaynerfError(
            "the cameras' optical axes are (nearly) parallel, so they have no focus point; "
            "use a spline path through keyframes or a path JSON file instead"
        )
    return np.linalg.solve(system, rhs)


def look_at(positions: np.ndarray, targets: np.ndarray, up: np.ndarray) -> np.ndarray:
    """Cameras at ``positions`` looking at ``targets``, rolled so -y points along ``up``.

    Args:
      positions, targets: [N, 3]; ``up``: [3] or [N, 3].
    Returns:
      [N, 3, 4] camera-to-world matrices (OpenCV axes, rotations with det +1).
    """
    forward = targets - positions
    if np.any(np.linalg.norm(forward, axis=-1) < 1e-9):
        raise ValueError("a camera sits on the point it should look at")
    z = _normalize(forward)
    x = np.cross(z, np.broadcast_to(up, z.shape))
    if np.any(np.linalg.norm(x, axis=-1) < 1e-6):
        raise RaynerfError("a path camera looks straight along the up direction, so its roll is undefined")
    x = _normalize(x)
    y = np.cross(z, x)
    return np.stack([x, y, z, positions], axis=-1)


def _plane_axes(offsets: np.ndarray, up: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Principal axes of ``offsets`` [N, 3] within the plane perpendicular to ``up`` [3].

    Returns (e1, e2), unit [3] each, with (e1, e2, up) right-handed; e1 is the direction
    of largest spread, signed so that its largest component is positive.
    """
    flat = offsets - np.outer(offsets @ up, up)
    _, vectors = np.linalg.eigh(flat.T @ flat)
    e1 = vectors[:, 2] - (vectors[:, 2] @ up) * up
    e1 = _normalize(e1)
    e1 = e1 * np.sign(e1[np.argmax(np.abs(e1))])
    return e1, np.cross(up, e1)


def ellipse_path(
    camtoworlds: np.ndarray,
    n_frames: int,
    z_variation: float = 0.0,
    z_phase: float = 0.0,
) -> np.ndarray:
    """An elliptical orbit around the focus point, every camera looking at it.

    The ellipse lies in the plane perpendicular to the up direction (:func:`world_up`)
    at the cameras' mean height, centred on the focus point; its axes follow the
    principal axes of the camera positions in that plane, each semi-axis sqrt(2) times
    the RMS offset along it (exact for cameras spread evenly on an ellipse). The height
    is ``mean + z_variation * sin(theta + z_phase) * spread``, where ``spread`` is the
    smaller distance from the mean height to the lowest or highest camera, so any
    ``|z_variation| <= 1`` stays within the cameras' height range. Frames go once round,
    counter-clockwise seen from above, without repeating the first frame at the end.

    Args:
      camtoworlds: [N, 3, 4] input cameras (N >= 2).
      n_frames: number of frames.
      z_variation, z_phase: height oscillation amplitude (fraction of the spread) and
        phase (radians).
    Returns:
      [n_frames, 3, 4].
    """
    camtoworlds = _check_poses(camtoworlds, minimum=2)
    if n_frames < 1:
        raise ValueError(f"n_frames must be positive, got {n_frames}")
    up = world_up(camtoworlds)
    focus = focus_point(camtoworlds)
    positions = camtoworlds[:, :, 3]
    heights = positions @ up
    mean_height = heights.mean()
    spread = min(heights.max() - mean_height, mean_height - heights.min())

    offsets = positions - focus
    e1, e2 = _plane_axes(offsets, up)
    semi_axes = np.sqrt(2.0 * np.mean((offsets @ np.stack([e1, e2], axis=1)) ** 2, axis=0))

    theta = np.linspace(0.0, 2.0 * np.pi, n_frames, endpoint=False)
    height = mean_height + z_variation * spread * np.sin(theta + z_phase)
    centre = focus - (focus @ up) * up
    path = (
        centre
        + semi_axes[0] * np.cos(theta)[:, None] * e1
        + semi_axes[1] * np.sin(theta)[:, None] * e2
        + height[:, None] * up
    )
    return look_at(path, np.broadcast_to(focus, path.shape), up)


# --- default paths for captures from one side (Scene.forward_facing) -----------------------

PATH_KINDS = ("ellipse", "arc", "spiral")
ARC_COVERAGE = 0.9  # the arc path spans this fraction of the cameras' azimuth range
ARC_MIN_SPREAD_DEGREES = 10.0  # viewing directions closer than this to their mean: a spiral
SPIRAL_PERCENTILE = 90.0  # spiral radii: this percentile of the cameras' offsets
SPIRAL_MIN_POINTS = 8  # sparse points in front needed to take the look-at depth from them
SPIRAL_DEPTH_MULTIPLE = 10.0  # otherwise the look-at depth is this multiple of the radii


def level_up(camtoworlds: np.ndarray) -> np.ndarray:
    """Up for cameras held level, i.e. with horizontal x axes: [N, 3, 4] -> unit [3].

    The direction most nearly perpendicular to every camera's x axis (the smallest
    principal direction of the x axes), signed to agree with the mean -y axis. For
    cameras on an arc around a scene it is the arc's axis even where the mean -y axis
    leans towards the arc's centre. Falls back to :func:`world_up` when the x axes do not
    span a plane (they are nearly parallel, as in a capture from one spot) or the
    direction is more than 45 degrees from the mean -y axis.
    """
    camtoworlds = _check_poses(camtoworlds)
    xs = _normalize(camtoworlds[:, :, 0])
    values, vectors = np.linalg.eigh(xs.T @ xs)
    normal = vectors[:, 0]
    mean_up = -camtoworlds[:, :, 1].sum(axis=0)
    mean_up = mean_up / max(float(np.linalg.norm(mean_up)), 1e-12)
    agreement = float(normal @ mean_up)
    if values[1] < 10.0 * values[0] or values[1] < 1e-4 * len(xs) or abs(agreement) < np.cos(np.pi / 4):
        return world_up(camtoworlds)
    return normal * np.sign(agreement)


def viewing_spread_degrees(camtoworlds: np.ndarray) -> float:
    """The largest angle, in degrees, between a camera's viewing direction (z axis) and
    the cameras' mean viewing direction: [N, 3, 4] -> float."""
    camtoworlds = _check_poses(camtoworlds)
    axes = _normalize(camtoworlds[:, :, 2])
    mean = axes.sum(axis=0)
    if np.linalg.norm(mean) < 1e-9:
        return 180.0
    cosines = np.clip(axes @ _normalize(mean), -1.0, 1.0)
    return float(np.degrees(np.arccos(cosines.min())))


def forward_facing_kind(camtoworlds: np.ndarray) -> str:
    """Which path suits cameras facing the scene from one side: ``"arc"`` or ``"spiral"``.

    An arc when the viewing directions spread by at least
    :data:`ARC_MIN_SPREAD_DEGREES` and converge on a focus point in front of every
    camera (cameras on an arc around an object); a spiral when they are (nearly)
    parallel, as in an LLFF-style capture.
    """
    camtoworlds = _check_poses(camtoworlds)
    if len(camtoworlds) < 3 or viewing_spread_degrees(camtoworlds) < ARC_MIN_SPREAD_DEGREES:
        return "spiral"
    try:
        focus = focus_point(camtoworlds)
    except RaynerfError:
        return "spiral"
    depths = np.einsum("ni,ni->n", focus - camtoworlds[:, :, 3], camtoworlds[:, :, 2])
    return "arc" if depths.min() > 0 else "spiral"


def default_path_kind(camtoworlds: np.ndarray, forward_facing: bool) -> str:
    """The default path's kind (one of :data:`PATH_KINDS`): for a capture from one side
    (``forward_facing``, see ``Scene.forward_facing``) :func:`forward_facing_kind`; else
    the ellipse, unless the viewing directions are (nearly) parallel, which no capture
    around a scene has (exactly parallel axes give no focus point to place a capture by):
    then the spiral."""
    if forward_facing:
        return forward_facing_kind(camtoworlds)
    if viewing_spread_degrees(camtoworlds) < ARC_MIN_SPREAD_DEGREES:
        return "spiral"
    return "ellipse"


def _azimuth_range(azimuths: np.ndarray) -> tuple[float, float]:
    """(lo, hi) radians, hi - lo < 2 pi: the smallest interval covering ``azimuths`` [N]
    (radians) on the circle, i.e. the circle minus its largest gap between neighbours."""
    ordered = np.sort(np.mod(azimuths, 2.0 * np.pi))
    gaps = np.diff(np.concatenate([ordered, ordered[:1] + 2.0 * np.pi]))
    start = ordered[(int(np.argmax(gaps)) + 1) % len(ordered)]
    return float(start), float(start + np.mod(ordered - start, 2.0 * np.pi).max())


def arc_path(
    camtoworlds: np.ndarray, n_frames: int, z_variation: float = 0.0, z_phase: float = 0.0
) -> np.ndarray:
    """There and back along the arc the cameras were on, every frame looking at their focus.

    Around the axis through the focus point (:func:`focus_point`) along the up direction
    (:func:`level_up`), the path keeps the cameras' mean distance from the axis and their
    mean height, and sweeps the central :data:`ARC_COVERAGE` of their azimuth range: it
    starts in the middle, goes to one end, back to the other and returns, easing at the
    ends (the azimuth is a sine of the frame index), so the video loops seamlessly.
    ``z_variation`` and ``z_phase`` add a height wave as in :func:`ellipse_path`.

    Args:
      camtoworlds: [N, 3, 4] input cameras (N >= 2) whose optical axes converge.
      n_frames: number of frames.
    Returns:
      [n_frames, 3, 4]; the first frame is not repeated at the end.
    """
    camtoworlds = _check_poses(camtoworlds, minimum=2)
    if n_frames < 1:
        raise ValueError(f"n_frames must be positive, got {n_frames}")
    up = level_up(camtoworlds)
    focus = focus_point(camtoworlds)
    offsets = camtoworlds[:, :, 3] - focus
    heights = offsets @ up
    flat = offsets - heights[:, None] * up
    e1, e2 = _plane_axes(offsets, up)
    lo, hi = _azimuth_range(np.arctan2(flat @ e2, flat @ e1))
    radius = float(np.linalg.norm(flat, axis=1).mean())

    # An eighth of a frame's offset keeps the turning points off the midpoint between two
    # frames, where two frames in a row would be the same (for any n_frames).
    theta = 2.0 * np.pi * (np.arange(n_frames) + 0.125) / n_frames
    azimuth = 0.5 * (lo + hi) + 0.5 * ARC_COVERAGE * (hi - lo) * np.sin(theta)
    spread = min(heights.max() - heights.mean(), heights.mean() - heights.min())
    height = heights.mean() + z_variation * spread * np.sin(theta + z_phase)
    path = (
        focus
        + radius * (np.cos(azimuth)[:, None] * e1 + np.sin(azimuth)[:, None] * e2)
        + height[:, None] * up
    )
    return look_at(path, np.broadcast_to(focus, path.shape), up)


def _look_depth(points: np.ndarray | None, centre: np.ndarray, forward: np.ndarray, radius: float) -> float:
    """How far ahead of ``centre`` [3] along ``forward`` [3] the spiral's cameras look: the
    median depth of the sparse ``points`` [P, 3] in front, else a multiple of ``radius``."""
    if points is not None and len(points):
        depths = (np.asarray(points, np.float64) - centre) @ forward
        ahead = depths[depths > 0]
        if len(ahead) >= SPIRAL_MIN_POINTS:
            return float(np.median(ahead))
    return SPIRAL_DEPTH_MULTIPLE * radius if radius > 0 else 1.0


def spiral_path(camtoworlds: np.ndarray, n_frames: int, points: np.ndarray | None = None) -> np.ndarray:
    """An ellipse among (nearly) parallel cameras, all frames looking at one point ahead.

    The ellipse is centred on the mean camera centre, in the plane spanned by the mean
    camera's x axis and up direction (the mean -y axis made perpendicular to the mean
    viewing direction); its semi-axes are the :data:`SPIRAL_PERCENTILE`-th percentile of
    the cameras' distances from the centre along those two axes. Every frame looks at
    the point straight ahead of the centre at the median depth of the scene's sparse
    ``points`` in front of it (or :data:`SPIRAL_DEPTH_MULTIPLE` times the larger
    semi-axis without points), rolled to keep the mean up direction.

    Args:
      camtoworlds: [N, 3, 4] input cameras.
      n_frames: number of frames (once round, the first not repeated at the end).
      points: [P, 3] the scene's sparse points in the same frame, or None.
    Returns:
      [n_frames, 3, 4].
    """
    camtoworlds = _check_poses(camtoworlds)
    if n_frames < 1:
        raise ValueError(f"n_frames must be positive, got {n_frames}")
    forward = camtoworlds[:, :, 2].sum(axis=0)
    up = -camtoworlds[:, :, 1].sum(axis=0)
    if np.linalg.norm(forward) < 1e-9 or np.linalg.norm(np.cross(forward, up)) < 1e-9:
        raise RaynerfError("the cameras' mean viewing direction or up vector is undefined; give a path file")
    forward = _normalize(forward)
    up = _normalize(up - (up @ forward) * forward)
    right = np.cross(forward, up)
    centre = camtoworlds[:, :, 3].mean(axis=0)
    offsets = camtoworlds[:, :, 3] - centre
    semi_right, semi_up = np.percentile(
        np.abs(offsets @ np.stack([right, up], axis=1)), SPIRAL_PERCENTILE, axis=0
    )
    target = centre + _look_depth(points, centre, forward, max(semi_right, semi_up)) * forward

    theta = np.linspace(0.0, 2.0 * np.pi, n_frames, endpoint=False)
    path = centre + semi_right * np.cos(theta)[:, None] * right + semi_up * np.sin(theta)[:, None] * up
    return look_at(path, np.broadcast_to(target, path.shape), up)


def default_path(
    camtoworlds: np.ndarray,
    n_frames: int,
    forward_facing: bool,
    points: np.ndarray | None = None,
    z_variation: float = 0.0,
    z_phase: float = 0.0,
) -> np.ndarray:
    """The path rendered when none is asked for, of :func:`default_path_kind`:
    [N, 3, 4] cameras (and [P, 3] sparse points, for the spiral) -> [n_frames, 3, 4]."""
    kind = default_path_kind(camtoworlds, forward_facing)
    if kind == "ellipse":
        return ellipse_path(camtoworlds, n_frames, z_variation, z_phase)
    if kind == "arc":
        return arc_path(camtoworlds, n_frames, z_variation, z_phase)
    return spiral_path(camtoworlds, n_frames, points)


def catmull_rom(points: np.ndarray, u: np.ndarray, closed: bool) -> np.ndarray:
    """A uniform Catmull-Rom spline through ``points`` evaluated at parameters ``u``.

    Args:
      points: [K, D] control points; the curve passes through point k at u = k.
      u: [M] parameters in [0, K - 1] (open) or [0, K) (closed; wraps back to point 0).
      closed: whether the curve returns from the last point to the first.
    Returns:
      [M, D].
    """
    k = len(points)
    if closed:
        padded = np.concatenate([points[-1:], points, points[:2]])
        segment = np.clip(np.floor(u).astype(int), 0, k - 1)
    else:
        # Phantom end points continue the first and last segments in a straight line.
        padded = np.concatenate([2 * points[:1] - points[1:2], points, 2 * points[-1:] - points[-2:-1]])
        segment = np.clip(np.floor(u).astype(int), 0, k - 2)
    t = (u - segment)[:, None]
    p0, p1, p2, p3 = (padded[segment + i] for i in range(4))
    return 0.5 * (
        2 * p1 + (p2 - p0) * t + (2 * p0 - 5 * p1 + 4 * p2 - p3) * t**2 + (3 * p1 - p0 - 3 * p2 + p3) * t**3
    )


def spline_path(
    camtoworlds: np.ndarray,
    keyframe_indices: Sequence[int],
    n_frames: int,
    closed: bool = False,
) -> np.ndarray:
    """A smooth path through the poses of chosen keyframe cameras.

    Camera centres, viewing directions and up vectors each follow a Catmull-Rom
    spline through the keyframes' values (so position and orientation change with
    continuous velocity); the rotation is re-orthonormalised from the interpolated
    viewing direction and up vector, so at each keyframe it equals that camera's.
    Frames are spaced evenly by distance travelled (evenly in parameter if the
    keyframes share one position). An open path starts at the first keyframe and ends
    at the last; a closed one returns to the first without repeating it.

    Args:
      camtoworlds: [N, 3, 4] cameras to pick keyframes from.
      keyframe_indices: indices into ``camtoworlds``; at least 2 (open) or 3 (closed).
      n_frames: number of frames.
      closed: loop back to the first keyframe.
    Returns:
      [n_frames, 3, 4].
    """
    camtoworlds = _check_poses(camtoworlds)
    keys = camtoworlds[np.asarray(keyframe_indices, dtype=int)]
    if len(keys) < (3 if closed else 2):
        raise RaynerfError(
            f"a {'closed' if closed else 'open'} spline path needs at least {3 if closed else 2} keyframes"
        )
    if n_frames < 1:
        raise ValueError(f"n_frames must be positive, got {n_frames}")
    # One spline over [centre, view direction, up] per keyframe: [K, 9].
    controls = np.concatenate([keys[:, :, 3], keys[:, :, 2], -keys[:, :, 1]], axis=1)
    u_max = float(len(keys) if closed else len(keys) - 1)

    dense_u = np.linspace(0.0, u_max, 64 * len(keys) + 1)
    dense = catmull_rom(controls[:, :3], dense_u, closed)
    travelled = np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(dense, axis=0), axis=1))])
    fraction = np.linspace(0.0, 1.0, n_frames, endpoint=not closed and n_frames > 1)
    if travelled[-1] > 1e-9:
        u = np.interp(fraction * travelled[-1], travelled, dense_u)
    else:
        u = fraction * u_max

    values = catmull_rom(controls, u, closed)
    positions, forward, up = values[:, :3], values[:, 3:6], values[:, 6:]
    return look_at(positions, positions + _normalize(forward), up)


def _atomic_write_text(path: Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def save_path_json(path: str | os.PathLike, camtoworlds: np.ndarray, intrinsics: Mapping[str, Any]) -> None:
    """Writes a camera path as JSON (atomically), readable by :func:`load_path_json`.

    Layout: ``{"version": 1, "convention": ..., "intrinsics": {width, height, fx, fy,
    cx, cy}, "frames": [{"camtoworld": 3x4 rows}, ...]}``; floats are written with
    full precision, so a round trip is exact.
    """
    camtoworlds = _check_poses(camtoworlds)
    missing = [k for k in INTRINSIC_KEYS if k not in intrinsics]
    if missing:
        raise ValueError(f"intrinsics lack {missing}")
    document = {
        "version": PATH_JSON_VERSION,
        "convention": PATH_CONVENTION,
        "axes": "camera x right, y down, z viewing direction; camtoworld = [R | centre], 3 rows of 4",
        "intrinsics": {
            k: int(intrinsics[k]) if k in ("width", "height") else float(intrinsics[k])
            for k in INTRINSIC_KEYS
        },
        "frames": [{"camtoworld": pose.tolist()} for pose in camtoworlds],
    }
    _atomic_write_text(Path(path), json.dumps(document, indent=1))


def _validate_intrinsics(raw: Any, where: str) -> dict[str, Any]:
    if not isinstance(raw, dict):
        raise RaynerfError(f"{where}: 'intrinsics' must be an object with keys {list(INTRINSIC_KEYS)}")
    missing = [k for k in INTRINSIC_KEYS if k not in raw]
    if missing:
        raise RaynerfError(f"{where}: 'intrinsics' lacks {missing}")
    out: dict[str, Any] = {}
    for key in INTRINSIC_KEYS:
        value = raw[key]
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not np.isfinite(value):
            raise RaynerfError(f"{where}: intrinsics '{key}' must be a finite number, got {value!r}")
        if key in ("width", "height"):
            if int(value) != value or value < 1:
                raise RaynerfError(f"{where}: intrinsics '{key}' must be a positive integer, got {value!r}")
            out[key] = int(value)
            continue
        if key in ("fx", "fy") and value <= 0:
            raise RaynerfError(f"{where}: intrinsics '{key}' must be positive, got {value!r}")
        out[key] = float(value)
    return out


def _check_rotation(rotation: np.ndarray, where: str, mirror_hint: str) -> None:
    """Raises unless ``rotation`` [3, 3] is orthonormal with determinant +1."""
    if not np.allclose(rotation.T @ rotation, np.eye(3), atol=_ROTATION_TOLERANCE):
        raise RaynerfError(f"{where}: the rotation part is not orthonormal (scaled or sheared)")
    if np.linalg.det(rotation) < 0:
        raise RaynerfError(f"{where}: the rotation has determinant -1 (a mirror); {mirror_hint}")


def _validate_pose(raw: Any, where: str) -> np.ndarray:
    try:
        pose = np.asarray(raw, dtype=np.float64)
    except (TypeError, ValueError):
        raise RaynerfError(f"{where}: 'camtoworld' must be 3 rows of 4 numbers") from None
    if pose.shape == (4, 4) and np.allclose(pose[3], [0, 0, 0, 1]):
        pose = pose[:3]
    if pose.shape != (3, 4):
        raise RaynerfError(f"{where}: 'camtoworld' must be 3 rows of 4 numbers, got shape {pose.shape}")
    if not np.all(np.isfinite(pose)):
        raise RaynerfError(f"{where}: 'camtoworld' holds non-finite values")
    _check_rotation(
        pose[:, :3], f"{where}: 'camtoworld'", "the camera axes must be OpenCV's x right, y down, z forward"
    )
    return pose


def _read_json(path: Path, what: str) -> Any:
    """The parsed JSON document in ``path``; every failure is a RaynerfError naming it."""
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise RaynerfError(f"{path}: {what} not found") from None
    except IsADirectoryError:
        raise RaynerfError(f"{path}: is a folder, not a {what}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise RaynerfError(f"{path}: cannot read the {what} ({exc})") from None
    except json.JSONDecodeError as exc:
        raise RaynerfError(
            f"{path}: not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg})"
        ) from None


def _raynerf_path(document: Any, path: Path) -> tuple[np.ndarray, dict[str, Any]]:
    """Poses [N, 3, 4] and intrinsics of a parsed raynerf v1 path document."""
    if not isinstance(document, dict):
        raise RaynerfError(
            f"{path}: expected a JSON object with 'version', 'convention', 'intrinsics', 'frames'"
        )
    if document.get("version") != PATH_JSON_VERSION:
        raise RaynerfError(
            f"{path}: unsupported path file version {document.get('version')!r} "
            f"(expected {PATH_JSON_VERSION})"
        )
    if document.get("convention") != PATH_CONVENTION:
        raise RaynerfError(
            f"{path}: 'convention' is {document.get('convention')!r}; raynerf reads paths in "
            f"{PATH_CONVENTION!r} (convert the poses and set that value)"
        )
    intrinsics = _validate_intrinsics(document.get("intrinsics"), str(path))
    frames = document.get("frames")
    if not isinstance(frames, list) or not frames:
        raise RaynerfError(f"{path}: 'frames' must be a non-empty list of {{\"camtoworld\": ...}} entries")
    poses = []
    for i, frame in enumerate(frames):
        if not isinstance(frame, dict) or "camtoworld" not in frame:
            raise RaynerfError(f"{path}: frame {i} has no 'camtoworld'")
        poses.append(_validate_pose(frame["camtoworld"], f"{path}: frame {i}"))
    return np.stack(poses), intrinsics


def load_path_json(path: str | os.PathLike) -> tuple[np.ndarray, dict[str, Any]]:
    """Reads a camera path written by :func:`save_path_json` (or by hand).

    Returns:
      (camtoworlds [N, 3, 4] float64, intrinsics dict with width, height, fx, fy, cx, cy).
    Raises:
      RaynerfError naming the file and what is wrong with it.
    """
    path = Path(path)
    return _raynerf_path(_read_json(path, "path file"), path)


# --- nerfstudio's camera_path.json --------------------------------------------------------
#
# What nerfstudio's viewer writes (and `ns-render camera-path` reads): an object with
# "render_width", "render_height" (pixels), "camera_type" ("perspective" when absent),
# "fps", "seconds" and "camera_path", a list of frames, each with "camera_to_world" (the
# 16 entries of a 4x4 camera-to-world matrix, row by row, camera axes as in OpenGL:
# x right, y up, z pointing backwards, away from what the camera sees), "fov" (the
# vertical field of view in degrees; focal length in pixels = H / 2 / tan(fov / 2), the
# same for x and y, principal point at the image centre) and "aspect" (W / H). Poses are
# in the frame of nerfstudio's dataparser output (see :func:`load_dataparser_transforms`).

# Camera axes: OpenGL (x right, y up, z backwards) <-> OpenCV (x right, y down, z forward).
OPENGL_TO_OPENCV = np.diag([1.0, -1.0, -1.0])
_FOV_TOLERANCE = 1e-3  # degrees: a path's frames must share one field of view


def opengl_to_opencv(camtoworlds: np.ndarray) -> np.ndarray:
    """Flips the camera y and z axes: [N, 3, 4] OpenGL-axes poses -> OpenCV axes (and back)."""
    out = np.array(camtoworlds, np.float64)
    out[:, :, :3] = out[:, :, :3] @ OPENGL_TO_OPENCV
    return out


def focal_from_fov(fov_degrees: float, height: int) -> float:
    """Focal length in pixels of a pinhole camera with vertical field of view ``fov_degrees``
    over ``height`` pixels."""
    return 0.5 * height / np.tan(np.radians(fov_degrees) / 2.0)


def is_nerfstudio_path(document: Any) -> bool:
    """Whether a parsed JSON document looks like nerfstudio's camera_path.json."""
    return isinstance(document, dict) and "camera_path" in document


def _positive_int(document: dict, key: str, where: str) -> int:
    value = document.get(key)
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not np.isfinite(value)
        or int(value) != value
        or value < 1
    ):
        raise RaynerfError(f"{where}: '{key}' must be a positive whole number of pixels, got {value!r}")
    return int(value)


def _nerfstudio_matrix(raw: Any, where: str) -> np.ndarray:
    """A 'camera_to_world' entry (16 numbers, row by row, or 4 rows of 4) -> [3, 4]."""
    expected = f"{where}: 'camera_to_world' must be 16 numbers (a 4x4 matrix, row by row)"
    try:
        matrix = np.asarray(raw, dtype=np.float64)
    except (TypeError, ValueError):
        raise RaynerfError(expected) from None
    if matrix.shape not in ((16,), (4, 4)):
        raise RaynerfError(f"{expected}, got shape {matrix.shape}")
    matrix = matrix.reshape(4, 4)
    if not np.all(np.isfinite(matrix)):
        raise RaynerfError(f"{where}: 'camera_to_world' holds non-finite values")
    if not np.allclose(matrix[3], [0.0, 0.0, 0.0, 1.0], atol=_ROTATION_TOLERANCE):
        raise RaynerfError(
            f"{where}: the last row of 'camera_to_world' is {matrix[3].tolist()}, not [0, 0, 0, 1] "
            "(the 16 numbers must be a camera-to-world matrix written row by row)"
        )
    _check_rotation(
        matrix[:3, :3],
        f"{where}: 'camera_to_world'",
        "nerfstudio's camera axes are x right, y up, z backwards",
    )
    return matrix[:3]


def _nerfstudio_fov(raw: Any, where: str) -> float:
    if isinstance(raw, bool) or not isinstance(raw, (int, float)) or not 0.0 < raw < 180.0:
        raise RaynerfError(
            f"{where}: 'fov' must be the vertical field of view in degrees (0 to 180), got {raw!r}"
        )
    return float(raw)


def parse_nerfstudio_path(document: Any, where: str) -> tuple[np.ndarray, dict[str, Any]]:
    """A parsed nerfstudio camera_path.json -> poses as written and pinhole intrinsics.

    Returns:
      (camtoworlds [N, 3, 4] in nerfstudio's frame with OpenCV camera axes,
      intrinsics {width, height, fx, fy, cx, cy}).
    Raises:
      RaynerfError (prefixed with ``where``) for anything raynerf cannot render as given:
      a missing key, a camera type other than perspective, a pose that is not a rigid
      motion, or a field of view that changes along the path.
    """
    if not is_nerfstudio_path(document):
        raise RaynerfError(f"{where}: a nerfstudio camera path needs a 'camera_path' list")
    camera_type = document.get("camera_type", "perspective")
    if not isinstance(camera_type, str) or camera_type.lower() != "perspective":
        raise RaynerfError(
            f"{where}: camera_type {camera_type!r} is not supported; raynerf renders perspective cameras only"
        )
    width = _positive_int(document, "render_width", where)
    height = _positive_int(document, "render_height", where)
    frames = document["camera_path"]
    if not isinstance(frames, list) or not frames:
        raise RaynerfError(f"{where}: 'camera_path' must be a non-empty list of frames")
    poses, fovs = [], []
    for i, frame in enumerate(frames):
        here = f"{where}: camera_path[{i}]"
        if not isinstance(frame, dict):
            raise RaynerfError(f"{here} is not an object with 'camera_to_world' and 'fov'")
        for key in ("camera_to_world", "fov"):
            if key not in frame:
                raise RaynerfError(f"{here} has no '{key}'")
        poses.append(_nerfstudio_matrix(frame["camera_to_world"], here))
        fovs.append(_nerfstudio_fov(frame["fov"], here))
    if max(fovs) - min(fovs) > _FOV_TOLERANCE:
        raise RaynerfError(
            f"{where}: the field of view changes along the path ({min(fovs):g} to {max(fovs):g} degrees); "
            "raynerf renders a path with one focal length, so give every frame the same 'fov'"
        )
    focal = focal_from_fov(float(np.mean(fovs)), height)
    intrinsics = {
        "width": width,
        "height": height,
        "fx": focal,
        "fy": focal,
        "cx": width / 2,
        "cy": height / 2,
    }
    return opengl_to_opencv(np.stack(poses)), intrinsics


def transform_camtoworlds(transform: np.ndarray, camtoworlds: np.ndarray) -> np.ndarray:
    """Moves cameras [N, 3, 4] by a similarity [4, 4] (``x -> s R x + t``, s > 0): centres
    move as points, camera axes turn by R (so they stay orthonormal)."""
    scale = float(np.cbrt(np.linalg.det(transform[:3, :3])))
    rotation = transform[:3, :3] / scale
    out = np.empty(camtoworlds.shape, np.float64)
    out[:, :, :3] = rotation @ camtoworlds[:, :, :3]
    out[:, :, 3] = scale * camtoworlds[:, :, 3] @ rotation.T + transform[:3, 3]
    return out


def load_dataparser_transforms(path: str | os.PathLike) -> np.ndarray:
    """Reads nerfstudio's dataparser_transforms.json and returns the map back out of its frame.

    The file holds ``transform`` (3x4 ``[R | t]``) and ``scale`` (s): nerfstudio's
    dataparser moved a point x of the capture's original (COLMAP) world frame to
    ``s * (R x + t)``, where the rotation R includes the axis change nerfstudio applied to
    COLMAP's world when it read or converted the reconstruction.

    Returns:
      [4, 4] the similarity from nerfstudio's frame to the COLMAP world frame:
      ``y -> R^T (y / s - t)``.
    """
    path = Path(path)
    document = _read_json(path, "dataparser transforms file")
    if not isinstance(document, dict) or "transform" not in document or "scale" not in document:
        raise RaynerfError(
            f"{path}: expected nerfstudio's dataparser_transforms.json, an object with "
            "'transform' (3x4) and 'scale'"
        )
    try:
        matrix = np.asarray(document["transform"], dtype=np.float64)
    except (TypeError, ValueError):
        matrix = np.zeros(0)
    if matrix.shape == (4, 4) and np.allclose(matrix[3], [0, 0, 0, 1]):
        matrix = matrix[:3]
    if matrix.shape != (3, 4) or not np.all(np.isfinite(matrix)):
        raise RaynerfError(f"{path}: 'transform' must be 3 rows of 4 finite numbers")
    rotation, translation = matrix[:, :3], matrix[:, 3]
    _check_rotation(rotation, f"{path}: 'transform'", "expected a rotation")
    scale = document["scale"]
    if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not np.isfinite(scale) or scale <= 0:
        raise RaynerfError(f"{path}: 'scale' must be a positive number, got {scale!r}")
    back = np.eye(4)
    back[:3, :3] = rotation.T / scale
    back[:3, 3] = -rotation.T @ translation
    return back


def load_camera_path(
    path: str | os.PathLike, nerfstudio_to_scene: np.ndarray | None = None
) -> tuple[np.ndarray, dict[str, Any]]:
    """Reads a camera path file in raynerf's format (v1) or nerfstudio's camera_path.json.

    The format is told by its keys: nerfstudio's has ``camera_path``, raynerf's
    ``version`` and ``frames``. raynerf's poses are in the normalised scene frame as
    written. nerfstudio's poses are taken to be in the normalised scene frame too, unless
    ``nerfstudio_to_scene`` ([4, 4] similarity, e.g. the scene's ``transform`` times
    :func:`load_dataparser_transforms`) maps them there.

    Returns:
      (camtoworlds [N, 3, 4] float64 with OpenCV camera axes, intrinsics dict).
    Raises:
      RaynerfError naming the file and what is wrong with it.
    """
    path = Path(path)
    document = _read_json(path, "path file")
    if is_nerfstudio_path(document):
        camtoworlds, intrinsics = parse_nerfstudio_path(document, str(path))
        if nerfstudio_to_scene is not None:
            camtoworlds = transform_camtoworlds(nerfstudio_to_scene, camtoworlds)
        return camtoworlds, intrinsics
    if isinstance(document, dict) and ("version" in document or "frames" in document):
        if nerfstudio_to_scene is not None:
            raise RaynerfError(
                f"{path}: a raynerf path file is already in the scene's frame; "
                "--path-transforms applies to nerfstudio camera paths only"
            )
        return _raynerf_path(document, path)
    raise RaynerfError(
        f"{path}: not a camera path raynerf knows: expected raynerf's path JSON ('version', 'frames') "
        "or nerfstudio's camera_path.json ('camera_path', 'render_width', 'render_height')"
    )
