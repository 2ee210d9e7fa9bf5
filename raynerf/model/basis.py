"""The fixed projection directions of the Mip-NeRF 360 encoding: the vertices of a
tessellated icosahedron, one direction per antipodal pair."""

from __future__ import annotations

import functools
import itertools

import numpy as np

_GOLDEN = (1.0 + np.sqrt(5.0)) / 2.0
_DECIMALS = 6  # rounding used to recognise equal directions


def _rounded(points: np.ndarray) -> np.ndarray:
    """``points`` rounded for comparisons, with -0.0 turned into 0.0."""
    return np.round(points, _DECIMALS) + 0.0


def _icosahedron() -> tuple[np.ndarray, list[tuple[int, int, int]]]:
    """Unit vertices [12, 3] of the regular icosahedron and its 20 triangular faces.

    The vertices are the cyclic permutations of ``(0, +-1, +-golden)``; faces are the
    triples of vertices that are pairwise nearest neighbours.
    """
    base = [(0.0, a, b * _GOLDEN) for a in (-1.0, 1.0) for b in (-1.0, 1.0)]
    verts = np.array([np.roll(v, shift) for shift in range(3) for v in base])
    verts /= np.linalg.norm(verts, axis=-1, keepdims=True)
    dist = np.linalg.norm(verts[:, None] - verts[None], axis=-1)
    edge = dist[dist > 1e-9].min()
    adjacent = np.isclose(dist, edge)
    faces = [
        (i, j, k)
        for i, j, k in itertools.combinations(range(len(verts)), 3)
        if adjacent[i, j] and adjacent[j, k] and adjacent[i, k]
    ]
    return verts, faces


def _tessellate(verts: np.ndarray, faces: list[tuple[int, int, int]], frequency: int) -> np.ndarray:
    """Points on the unit sphere [N, 3] from splitting every face edge into ``frequency``
    parts (barycentric grid ``(i, j, k) / frequency``, projected radially); shared
    points appear once per face that holds them."""
    weights = (
        np.array(
            [(i, j, frequency - i - j) for i in range(frequency + 1) for j in range(frequency + 1 - i)],
            dtype=np.float64,
        )
        / frequency
    )
    points = np.concatenate([weights @ verts[list(face)] for face in faces])
    points /= np.linalg.norm(points, axis=-1, keepdims=True)
    return np.where(np.abs(points) < 1e-12, 0.0, points)


def _canonical_sign(points: np.ndarray) -> np.ndarray:
    """Flips each row so that its first clearly non-zero coordinate is positive, making
    ``d`` and ``-d`` identical."""
    rounded = _rounded(points)
    first = np.argmax(rounded != 0, axis=-1)
    sign = np.sign(rounded[np.arange(len(points)), first])
    return points * sign[:, None]


@functools.cache
def icosahedron_basis(subdivisions: int = 2) -> np.ndarray:
    """Unit directions [3, num_dirs] from the icosahedron tessellated at frequency
    ``subdivisions``, with antipodal duplicates removed (21 directions for 2).

    The result is deterministic (sorted lexicographically by coordinates) and read-only.
    """
    if subdivisions < 1:
        raise ValueError(f"subdivisions must be >= 1, got {subdivisions}")
    verts, faces = _icosahedron()
    points = _canonical_sign(_tessellate(verts, faces, subdivisions))
    _, keep = np.unique(_rounded(points), axis=0, return_index=True)
    directions = points[np.sort(keep)]
    order = np.lexsort(_rounded(directions).T[::-1])
    basis = np.ascontiguousarray(directions[order].T.astype(np.float32))
    basis.flags.writeable = False
    return basis
