"""Camera models: COLMAP intrinsics, lens (un)distortion, and pixels -> rays.

Conventions (shared by every ray raynerf casts):

* Pixel ``(x, y)`` (integer column, row) has its centre at continuous image
  coordinates ``(x + 0.5, y + 0.5)``, as in COLMAP.
* Camera axes follow OpenCV/COLMAP: x right, y down, z the viewing direction.
  ``camtoworld`` [3, 4] maps camera coordinates to world: ``X = R @ x_cam + t``.
* Every supported COLMAP model is stored as one row of 8 numbers
  ``(fx, fy, cx, cy, k1, k2, p1, p2)``, the OPENCV model with zeros where a
  simpler model has no such term (SIMPLE_PINHOLE, PINHOLE, SIMPLE_RADIAL, RADIAL
  and OPENCV are all special cases of it).
* Ray ``directions`` have unit depth along the optical axis (camera-frame
  ``(u, v, 1)`` rotated to world), so a ray's ``t`` is the z-depth.
* ``radii`` = 2 / sqrt(12) x the distance between the direction of a pixel and
  that of its right-hand neighbour (the cone radius at ``t = 1``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Protocol

import numpy as np

from raynerf.errors import RaynerfError

SUPPORTED_MODELS = ("SIMPLE_PINHOLE", "PINHOLE", "SIMPLE_RADIAL", "RADIAL", "OPENCV")
RADIUS_SCALE = 2.0 / np.sqrt(12.0)
NEWTON_STEPS = 12


@dataclasses.dataclass(frozen=True)
class Intrinsics:
    """One camera's intrinsics at some image resolution.

    ``distortion`` is ``(k1, k2, p1, p2)`` of the OPENCV model (zeros where the
    COLMAP model has no such term).
    """

    model: str
    width: int
    height: int
    fx: float
    fy: float
    cx: float
    cy: float
    distortion: tuple[float, float, float, float] = (0.0, 0.0, 0.0, 0.0)

    def as_array(self) -> np.ndarray:
        """``[8]`` float64: ``(fx, fy, cx, cy, k1, k2, p1, p2)``."""
        return np.array([self.fx, self.fy, self.cx, self.cy, *self.distortion], np.float64)

    def scaled(self, width: int, height: int) -> Intrinsics:
        """The same camera for an image resized to ``width x height`` pixels.

        The x terms scale by ``width / self.width`` and the y terms by
        ``height / self.height`` (the actual ratios, not 1 / factor).
        """
        sx, sy = width / self.width, height / self.height
        return dataclasses.replace(
            self,
            width=width,
            height=height,
            fx=self.fx * sx,
            fy=self.fy * sy,
            cx=self.cx * sx,
            cy=self.cy * sy,
        )


def intrinsics_from_colmap(
    model: str, width: int, height: int, params: Sequence[float], source: str = "the COLMAP model"
) -> Intrinsics:
    """COLMAP ``(model name, params)`` -> :class:`Intrinsics`; other models are errors."""
    p = [float(v) for v in params]
    if model == "SIMPLE_PINHOLE":
        f, cx, cy = p
        return Intrinsics(model, width, height, f, f, cx, cy)
    if model == "PINHOLE":
        fx, fy, cx, cy = p
        return Intrinsics(model, width, height, fx, fy, cx, cy)
    if model == "SIMPLE_RADIAL":
        f, cx, cy, k = p
        return Intrinsics(model, width, height, f, f, cx, cy, (k, 0.0, 0.0, 0.0))
    if model == "RADIAL":
        f, cx, cy, k1, k2 = p
        return Intrinsics(model, width, height, f, f, cx, cy, (k1, k2, 0.0, 0.0))
    if model == "OPENCV":
        fx, fy, cx, cy, k1, k2, p1, p2 = p
        return Intrinsics(model, width, height, fx, fy, cx, cy, (k1, k2, p1, p2))
    raise RaynerfError(
        f"{source} uses camera model {model}, which raynerf does not support "
        f"(supported: {', '.join(SUPPORTED_MODELS)}); undistort the images with "
        "`colmap image_undistorter` and use the undistorted model"
    )


def distort(uv: np.ndarray, dist: np.ndarray) -> np.ndarray:
    """Applies OPENCV lens distortion to normalised camera coordinates.

    Args:
      uv: [..., 2] ideal (undistorted) normalised coordinates ``(x/z, y/z)``.
      dist: [..., 4] ``(k1, k2, p1, p2)``, broadcast against ``uv``.
    Returns:
      [..., 2] distorted normalised coordinates.
    """
    u, v = uv[..., 0], uv[..., 1]
    k1, k2, p1, p2 = (dist[..., i] for i in range(4))
    r2 = u * u + v * v
    radial = k1 * r2 + k2 * r2 * r2
    du = u * radial + 2 * p1 * u * v + p2 * (r2 + 2 * u * u)
    dv = v * radial + 2 * p2 * u * v + p1 * (r2 + 2 * v * v)
    return np.stack([u + du, v + dv], axis=-1)


def _distort_jacobian(uv: np.ndarray, dist: np.ndarray) -> np.ndarray:
    """``d distort / d uv``: [..., 2, 2] (rows: output u, v; columns: input u, v)."""
    u, v = uv[..., 0], uv[..., 1]
    k1, k2, p1, p2 = (dist[..., i] for i in range(4))
    r2 = u * u + v * v
    radial = k1 * r2 + k2 * r2 * r2
    dradial_dr2 = k1 + 2 * k2 * r2
    duu = 1 + radial + 2 * u * u * dradial_dr2 + 2 * p1 * v + 6 * p2 * u
    duv = 2 * u * v * dradial_dr2 + 2 * p1 * u + 2 * p2 * v
    dvu = 2 * u * v * dradial_dr2 + 2 * p2 * v + 2 * p1 * u
    dvv = 1 + radial + 2 * v * v * dradial_dr2 + 2 * p2 * u + 6 * p1 * v
    return np.stack([np.stack([duu, duv], -1), np.stack([dvu, dvv], -1)], -2)


def undistort(uv_distorted: np.ndarray, dist: np.ndarray, steps: int = NEWTON_STEPS) -> np.ndarray:
    """Inverts :func:`distort` by Newton's method, starting from the distorted point.

    Args:
      uv_distorted: [..., 2] distorted normalised coordinates.
      dist: [..., 4] ``(k1, k2, p1, p2)``.
    Returns:
      [..., 2] ideal normalised coordinates ``uv`` with ``distort(uv) == uv_distorted``.
    """
    uv_distorted = np.asarray(uv_distorted, np.float64)
    dist = np.broadcast_to(np.asarray(dist, np.float64), uv_distorted.shape[:-1] + (4,))
    uv = uv_distorted.copy()
    for _ in range(steps):
        residual = distort(uv, dist) - uv_distorted
        jac = _distort_jacobian(uv, dist)
        det = jac[..., 0, 0] * jac[..., 1, 1] - jac[..., 0, 1] * jac[..., 1, 0]
        det = np.where(np.abs(det) < 1e-12, 1e-12, det)
        step_u = (jac[..., 1, 1] * residual[..., 0] - jac[..., 0, 1] * residual[..., 1]) / det
        step_v = (jac[..., 0, 0] * residual[..., 1] - jac[..., 1, 0] * residual[..., 0]) / det
        uv = uv - np.stack([step_u, step_v], -1)
    return uv


def camera_directions(intrinsics: np.ndarray, px: np.ndarray, py: np.ndarray) -> np.ndarray:
    """Camera-frame directions ``(u, v, 1)`` through continuous image points.

    Args:
      intrinsics: [..., 8] ``(fx, fy, cx, cy, k1, k2, p1, p2)``.
      px, py: [...] continuous image coordinates (a pixel centre is ``index + 0.5``).
    Returns:
      [..., 3] float64 directions with unit z.
    """
    intrinsics = np.asarray(intrinsics, np.float64)
    fx, fy, cx, cy = (intrinsics[..., i] for i in range(4))
    uv = np.stack([(px - cx) / fx, (py - cy) / fy], axis=-1)
    dist = intrinsics[..., 4:8]
    if np.any(dist != 0):
        uv = undistort(uv, np.broadcast_to(dist, uv.shape[:-1] + (4,)))
    return np.concatenate([uv, np.ones_like(uv[..., :1])], axis=-1)


class CameraArrays(Protocol):
    """Anything with per-image ``camtoworlds`` [N, 3, 4] and ``intrinsics`` [N, 8]."""

    camtoworlds: np.ndarray
    intrinsics: np.ndarray


def rays_from_pixels(
    camtoworlds: np.ndarray, intrinsics: np.ndarray, x: np.ndarray, y: np.ndarray, near: float, far: float
) -> dict[str, np.ndarray]:
    """Rays through pixels, one camera per pixel.

    Args:
      camtoworlds: [..., 3, 4] each pixel's camera-to-world pose.
      intrinsics: [..., 8] each pixel's intrinsics.
      x, y: [...] pixel indices (column, row); the ray goes through the centre
        ``(x + 0.5, y + 0.5)``.
      near, far: distance bounds written into every ray.
    Returns:
      dict of float32 arrays: origins, directions, viewdirs [..., 3]; radii, near,
      far [..., 1].
    """
    px = np.asarray(x, np.float64) + 0.5
    py = np.asarray(y, np.float64) + 0.5
    here = camera_directions(intrinsics, px, py)
    right = camera_directions(intrinsics, px + 1.0, py)
    rotation = np.asarray(camtoworlds, np.float64)[..., :3, :3]
    directions = np.einsum("...ij,...j->...i", rotation, here)
    # Rotation keeps lengths, so the pixel spacing is measured in the camera frame.
    spacing = np.linalg.norm(right - here, axis=-1, keepdims=True)
    origins = np.broadcast_to(np.asarray(camtoworlds)[..., :3, 3], directions.shape)
    ones = np.ones(directions.shape[:-1] + (1,), np.float32)
    return {
        "origins": origins.astype(np.float32),
        "directions": directions.astype(np.float32),
        "viewdirs": (directions / np.linalg.norm(directions, axis=-1, keepdims=True)).astype(np.float32),
        "radii": (RADIUS_SCALE * spacing).astype(np.float32),
        "near": ones * np.float32(near),
        "far": ones * np.float32(far),
    }


def pixel_rays(
    cameras: CameraArrays, image_idx: np.ndarray, x: np.ndarray, y: np.ndarray, near: float, far: float
) -> dict[str, np.ndarray]:
    """Rays for a batch of ``(image, column, row)`` triples: dict of [B, 3] / [B, 1]."""
    image_idx = np.asarray(image_idx)
    return rays_from_pixels(cameras.camtoworlds[image_idx], cameras.intrinsics[image_idx], x, y, near, far)


def camera_rays(
    camtoworld: np.ndarray,
    intrinsics: Intrinsics | np.ndarray,
    width: int,
    height: int,
    near: float,
    far: float,
) -> dict[str, np.ndarray]:
    """Every pixel's ray of one ``width x height`` image: dict of [H, W, 3] / [H, W, 1]."""
    params = intrinsics.as_array() if isinstance(intrinsics, Intrinsics) else np.asarray(intrinsics)
    y, x = np.meshgrid(np.arange(height), np.arange(width), indexing="ij")
    pose = np.broadcast_to(np.asarray(camtoworld), (height, width, 3, 4))
    return rays_from_pixels(pose, np.broadcast_to(params, (height, width, 8)), x, y, near, far)


def project(points_world: np.ndarray, camtoworld: np.ndarray, intrinsics: np.ndarray) -> np.ndarray:
    """Continuous image coordinates of world points (with lens distortion).

    Args:
      points_world: [P, 3].
      camtoworld: [3, 4].
      intrinsics: [8].
    Returns:
      [P, 2] image coordinates ``(x, y)`` (pixel centres at ``index + 0.5``).
    """
    rotation, centre = camtoworld[:3, :3], camtoworld[:3, 3]
    cam = (points_world - centre) @ rotation  # R^T (X - c), row-wise
    uv = distort(cam[:, :2] / cam[:, 2:3], intrinsics[4:8])
    return uv * intrinsics[0:2] + intrinsics[2:4]
