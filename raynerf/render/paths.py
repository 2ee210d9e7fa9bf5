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
    rotation = pose[:, :3]
    if not np.allclose(rotation.T @ rotation, np.eye(3), atol=_ROTATION_TOLERANCE):
        raise RaynerfError(
            f"{where}: the rotation part of 'camtoworld' is not orthonormal (scaled or sheared)"
        )
    if np.linalg.det(rotation) < 0:
        raise RaynerfError(
            f"{where}: the rotation has determinant -1 (a mirror); "
            "the camera axes must be OpenCV's x right, y down, z forward"
        )
    return pose


def load_path_json(path: str | os.PathLike) -> tuple[np.ndarray, dict[str, Any]]:
    """Reads a camera path written by :func:`save_path_json` (or by hand).

    Returns:
      (camtoworlds [N, 3, 4] float64, intrinsics dict with width, height, fx, fy, cx, cy).
    Raises:
      RaynerfError naming the file and what is wrong with it.
    """
    path = Path(path)
    try:
        document = json.loads(path.read_text())
    except FileNotFoundError:
        raise RaynerfError(f"{path}: path file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise RaynerfError(f"{path}: cannot read the path file ({exc})") from None
    except json.JSONDecodeError as exc:
        raise RaynerfError(
            f"{path}: not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg})"
        ) from None
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
