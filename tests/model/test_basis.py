"""Checks of the icosahedral projection basis against the icosahedron's symmetry axes."""

import itertools

import numpy as np

from raynerf.model.basis import icosahedron_basis

GOLDEN = (1 + 5**0.5) / 2


def _axes_as_lines(vectors: np.ndarray) -> set:
    """Directions up to sign, as a set of rounded tuples."""
    v = vectors / np.linalg.norm(vectors, axis=-1, keepdims=True)
    lines = set()
    for row in v:
        first = next(c for c in row if abs(c) > 1e-6)
        lines.add(tuple(np.round(row * np.sign(first), 5) + 0.0))
    return lines


def _cyclic(vectors):
    return [np.roll(v, k) for v in vectors for k in range(3)]


def _symmetry_axes() -> set:
    """The 6 five-fold and 15 two-fold rotation axes of the icosahedron with vertices
    at the cyclic permutations of (0, +-1, +-golden) (edge midpoints: of
    (+-1/golden, +-golden, +-1) / 2): the frequency-2 tessellation puts
    a point on every vertex and every edge midpoint, which lie on exactly these axes."""
    signs = [(a, b) for a in (-1, 1) for b in (-1, 1)]
    five_fold = _cyclic([np.array([0.0, a, b * GOLDEN]) for a, b in signs])
    two_fold = list(np.eye(3)) + _cyclic(
        [np.array([s / GOLDEN, b * GOLDEN, a]) for a, b in signs for s in (-1, 1)]
    )
    return _axes_as_lines(np.array(five_fold)), _axes_as_lines(np.array(two_fold))


def test_shape_unit_length_and_determinism():
    basis = icosahedron_basis(2)
    assert basis.shape == (3, 21)
    np.testing.assert_allclose(np.linalg.norm(basis, axis=0), 1.0, atol=1e-6)
    np.testing.assert_array_equal(basis, icosahedron_basis.__wrapped__(2))
    assert not basis.flags.writeable


def test_no_two_directions_parallel_or_antiparallel():
    basis = icosahedron_basis(2).astype(np.float64)
    cosines = np.abs(basis.T @ basis)
    np.fill_diagonal(cosines, 0.0)
    assert cosines.max() < 0.9


def test_directions_are_the_icosahedral_symmetry_axes():
    five_fold, two_fold = _symmetry_axes()
    assert len(five_fold) == 6 and len(two_fold) == 15
    assert _axes_as_lines(icosahedron_basis(2).T.astype(np.float64)) == five_fold | two_fold


def test_angle_structure_is_icosahedral():
    basis = icosahedron_basis(2).astype(np.float64)
    angles = np.degrees(np.arccos(np.clip(np.abs(basis.T @ basis), 0, 1)))
    np.fill_diagonal(angles, np.nan)
    half_edge = np.degrees(np.arctan(1 / GOLDEN))  # vertex to neighbouring edge midpoint
    expected = {
        round(half_edge, 2),  # 31.72
        36.0,  # between two-fold axes of one face
        round(90 - half_edge, 2),  # 58.28
        60.0,
        round(np.degrees(np.arctan(2)), 2),  # 63.43, between neighbouring vertices
        72.0,
        90.0,
    }
    assert set(np.round(angles[~np.isnan(angles)], 2)) == expected
    nearest = np.nanmin(angles, axis=1)
    num_nearest = np.sum(np.isclose(angles, nearest[:, None], atol=1e-3), axis=1)
    # Each vertex axis has its 5 edge-midpoint axes nearest; each edge-midpoint axis its 2 vertex axes.
    assert sorted(num_nearest.tolist()) == [2] * 15 + [5] * 6
    np.testing.assert_allclose(nearest, half_edge, atol=1e-3)


def test_rank_three_and_tight_frame():
    basis = icosahedron_basis(2).astype(np.float64)
    assert np.linalg.matrix_rank(basis) == 3
    # Icosahedral symmetry makes the frame tight: sum of d d^T is (21 / 3) I.
    np.testing.assert_allclose(basis @ basis.T, 7.0 * np.eye(3), atol=1e-5)


def test_other_frequencies():
    # Frequency 1: the 6 vertex axes; frequency 3: (10 * 9 + 2) / 2 = 46 points.
    assert icosahedron_basis(1).shape == (3, 6)
    assert icosahedron_basis(3).shape == (3, 46)
    for a, b in itertools.combinations(icosahedron_basis(3).T, 2):
        assert abs(np.dot(a, b)) < 0.999
