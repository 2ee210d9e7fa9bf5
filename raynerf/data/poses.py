"""Pose normalisation for 360 captures, with the similarity transform kept.

The normalised frame: origin at the point all optical axes pass closest to (or,
with ``recentre="cameras"``, at the mean camera centre, as multinerf's PCA
normalisation does), axes along the principal directions of the camera centres
about that origin (z is the smallest spread, signed to point where the cameras'
"up" points), and a uniform scale that puts every camera centre inside the unit
cube [-1, 1]^3. Camera axes stay in the OpenCV/COLMAP convention (x right, y down,
z forward).
"""

from __future__ import annotations

import numpy as np

from raynerf.errors import RaynerfError

RECENTRE_MODES = ("focus", "cameras")


def focus_point(camtoworlds: np.ndarray) -> np.ndarray:
    """The point nearest (least squares) to every camera's optical axis.

    Args:
      camtoworlds: [N, 3, 4] OpenCV-convention poses (column 2 = viewing direction).
    Returns:
      [3] the point minimising the sum of squared distances to the axes.
    """
    origins = camtoworlds[:, :3, 3]
    axes = camtoworlds[:, :3, 2] / np.linalg.norm(camtoworlds[:, :3, 2], axis=-1, keepdims=True)
    projectors = np.eye(3) - axes[:, :, None] * axes[:, None, :]  # [N, 3, 3]
    lhs = projectors.sum(0)
    rhs = np.einsum("nij,nj->i", projectors, origins)
    return np.linalg.lstsq(lhs, rhs, rcond=None)[0]


def similarity(rotation: np.ndarray, centre: np.ndarray, scale: float) -> np.ndarray:
    """[4, 4] ``x -> scale * rotation @ (x - centre)``."""
    transform = np.eye(4)
    transform[:3, :3] = scale * rotation
    transform[:3, 3] = -scale * rotation @ centre
    return transform


def normalise_360(camtoworlds: np.ndarray, recentre: str = "focus") -> tuple[np.ndarray, np.ndarray]:
    """Recentres, rotates to principal axes and scales a 360 capture.

    Args:
      camtoworlds: [N, 3, 4] poses in the COLMAP world frame.
      recentre: the new origin: ``"focus"`` (:func:`focus_point`) or ``"cameras"``
        (the mean camera centre).
    Returns:
      (camtoworlds [N, 3, 4] in the normalised frame, transform [4, 4] that maps
      COLMAP world points to normalised points).
    """
    if recentre not in RECENTRE_MODES:
        raise RaynerfError(f"data.recentre must be one of {', '.join(RECENTRE_MODES)}, got {recentre!r}")
    centre = focus_point(camtoworlds) if recentre == "focus" else camtoworlds[:, :3, 3].mean(0)
    offsets = camtoworlds[:, :3, 3] - centre
    _, vectors = np.linalg.eigh(offsets.T @ offsets)
    rotation = vectors[:, ::-1].T  # rows: largest spread first, smallest (up) last
    mean_up = -camtoworlds[:, :3, 1].mean(0)  # camera y points down
    if rotation[2] @ mean_up < 0:
        rotation[2] = -rotation[2]
    if np.linalg.det(rotation) < 0:
        rotation[1] = -rotation[1]
    extent = np.abs(offsets @ rotation.T).max()
    transform = similarity(rotation, centre, 1.0 / max(extent, 1e-12))
    return transform_poses(transform, camtoworlds), transform


def transform_points(transform: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Applies a [4, 4] similarity to points [..., 3]."""
    return points @ transform[:3, :3].T + transform[:3, 3]


def transform_poses(transform: np.ndarray, camtoworlds: np.ndarray) -> np.ndarray:
    """Applies a [4, 4] similarity to poses [N, 3, 4], keeping rotations orthonormal."""
    scale = np.cbrt(np.linalg.det(transform[:3, :3]))
    rotation = transform[:3, :3] / scale
    out = np.empty_like(camtoworlds, dtype=np.float64)
    out[:, :3, :3] = rotation @ camtoworlds[:, :3, :3]
    out[:, :3, 3] = transform_points(transform, camtoworlds[:, :3, 3])
    return out


def transform_scale(transform: np.ndarray) -> float:
    """The uniform scale factor of a [4, 4] similarity."""
    return float(np.cbrt(np.linalg.det(transform[:3, :3])))


def largest_azimuth_gap(camtoworlds: np.ndarray) -> float:
    """The largest gap, in degrees, between neighbouring camera azimuths around the focus
    point, measured in the plane perpendicular to the cameras' mean up vector: about
    360 / N for N cameras evenly around the scene, 180 or more for a half orbit."""
    up = -camtoworlds[:, :3, 1].mean(0)
    up = up / max(np.linalg.norm(up), 1e-12)
    offsets = camtoworlds[:, :3, 3] - focus_point(camtoworlds)
    helper = np.eye(3)[np.argmin(np.abs(up))]
    e1 = np.cross(up, helper)
    e1 /= np.linalg.norm(e1)
    e2 = np.cross(up, e1)
    azimuth = np.sort(np.degrees(np.arctan2(offsets @ e2, offsets @ e1)))
    gaps = np.diff(np.concatenate([azimuth, azimuth[:1] + 360.0]))
    return float(gaps.max())


def surrounds_scene(camtoworlds: np.ndarray, max_gap_degrees: float = 180.0) -> bool:
    """Whether cameras circle the scene (360) rather than face it from one side: no gap
    between neighbouring azimuths (:func:`largest_azimuth_gap`) exceeds ``max_gap_degrees``."""
    return largest_azimuth_gap(camtoworlds) <= max_gap_degrees


ORBIT_KINDS = ("full orbit", "partial orbit", "forward-facing")
FULL_ORBIT_MAX_GAP = 90.0  # degrees: a full orbit leaves no side of the scene unseen
FORWARD_FACING_MAX_SPAN = 60.0  # degrees of azimuth covered by a capture from one side


def orbit_kind(camtoworlds: np.ndarray) -> str:
    """How the cameras go around the scene (one of :data:`ORBIT_KINDS`): a full orbit
    (largest azimuth gap at most 90 degrees), a forward-facing capture (the cameras
    cover less than 60 degrees of azimuth) or, between the two, a partial orbit (a
    half orbit, as a phone walked around one side of an object gives)."""
    gap = largest_azimuth_gap(camtoworlds)
    if gap <= FULL_ORBIT_MAX_GAP:
        return "full orbit"
    if 360.0 - gap < FORWARD_FACING_MAX_SPAN:
        return "forward-facing"
    return "partial orbit"
