"""360 pose normalisation against a capture whose focus point is known by construction."""

import numpy as np
import pytest

from raynerf.data import poses
from raynerf.data.synthetic import LOOK_AT, ring_cameras
from raynerf.errors import RaynerfError


def _random_similarity(rng):
    q, _ = np.linalg.qr(rng.normal(size=(3, 3)))
    q *= np.sign(np.linalg.det(q))
    return poses.similarity(q, rng.normal(size=3), 2.7)


def test_focus_point_is_the_look_at_point():
    np.testing.assert_allclose(poses.focus_point(ring_cameras(24, 0)), LOOK_AT, atol=1e-9)


def test_normalise_recovers_centre_scale_and_up():
    rng = np.random.default_rng(3)
    cams = ring_cameras(30, 1)
    garble = _random_similarity(rng)  # the same capture in an arbitrary world frame
    cams_world = poses.transform_poses(garble, cams)
    normalised, transform = poses.normalise_360(cams_world)
    # the look-at point goes to the origin
    np.testing.assert_allclose(
        poses.transform_points(transform, poses.transform_points(garble, LOOK_AT)), 0, atol=1e-9
    )
    assert np.abs(normalised[:, :, 3]).max() == pytest.approx(1.0)
    # the ring's axis (world z of the generator) becomes +z
    up = poses.transform_points(transform @ garble, np.array([0.0, 0.0, 1.0])) - poses.transform_points(
        transform @ garble, np.zeros(3)
    )
    assert up[2] / np.linalg.norm(up) > 0.99
    # poses map consistently: camera centres are transformed points, rotations orthonormal
    np.testing.assert_allclose(
        normalised[:, :, 3], poses.transform_points(transform, cams_world[:, :, 3]), atol=1e-9
    )
    rot = normalised[:, :, :3]
    np.testing.assert_allclose(rot @ rot.transpose(0, 2, 1), np.broadcast_to(np.eye(3), rot.shape), atol=1e-9)
    assert np.allclose(np.linalg.det(rot), 1.0)


def test_recentre_on_the_cameras_puts_their_mean_at_the_origin():
    rng = np.random.default_rng(5)
    cams = ring_cameras(30, 2)
    garble = _random_similarity(rng)
    cams_world = poses.transform_poses(garble, cams)
    normalised, transform = poses.normalise_360(cams_world, recentre="cameras")
    np.testing.assert_allclose(normalised[:, :, 3].mean(0), 0, atol=1e-9)
    assert np.abs(normalised[:, :, 3]).max() == pytest.approx(1.0)
    # Brute force: the scale is 1 / the largest |coordinate| of the centres about their
    # mean, in the frame of their principal axes (the eigenvectors of their scatter).
    offsets = cams[:, :, 3] - cams[:, :, 3].mean(0)
    _, vectors = np.linalg.eigh(offsets.T @ offsets)
    scale = 1 / np.abs(offsets @ vectors).max()
    assert poses.transform_scale(transform) == pytest.approx(scale / 2.7)  # garble scaled by 2.7
    # The look-at point lies below the origin along the smallest-spread axis (up), by its
    # offset from the mean centre along that axis, scaled.
    up = vectors[:, 0] * np.sign(vectors[2, 0])
    look_at = poses.transform_points(transform, poses.transform_points(garble, LOOK_AT))
    drop = (cams[:, :, 3].mean(0) - LOOK_AT) @ up
    np.testing.assert_allclose(look_at[2], -drop * scale, rtol=1e-9)
    with pytest.raises(RaynerfError, match="data.recentre"):
        poses.normalise_360(cams_world, recentre="middle")


def test_surround_versus_forward_facing():
    assert poses.surrounds_scene(ring_cameras(20, 0))
    half_ring = ring_cameras(40, 0)[:12]  # cameras over a 108 degree arc only
    assert not poses.surrounds_scene(half_ring)


def test_orbit_kinds_and_azimuth_gap():
    """Evenly spaced cameras leave gaps of about 360 / N degrees; an arc leaves the rest."""
    assert poses.largest_azimuth_gap(ring_cameras(36, 0)) == pytest.approx(10.0, abs=10 * 0.6 + 1)
    assert poses.orbit_kind(ring_cameras(36, 0)) == "full orbit"
    for arc, kind in ((240.0, "partial orbit"), (180.0, "partial orbit"), (30.0, "forward-facing")):
        cams = ring_cameras(24, 1, arc_degrees=arc)
        assert poses.orbit_kind(cams) == kind
    # The arc's first and last cameras: their azimuths differ by the arc (+- jitter of 0.3 spacing).
    cams = ring_cameras(11, 2, arc_degrees=180.0)
    ends = cams[[0, -1], :2, 3]
    span = np.degrees(np.arccos(ends[0] @ ends[1] / np.prod(np.linalg.norm(ends, axis=-1))))
    assert span == pytest.approx(180.0, abs=2 * 0.3 * 18 + 1e-9)
