"""Gaussian approximations of the conical frusta that the intervals of a cone-traced
ray sweep out (mip-NeRF's cone casting)."""

from __future__ import annotations

import jax.numpy as jnp

Array = jnp.ndarray
_TINY = float(jnp.finfo(jnp.float32).tiny)


def conical_frustum_to_gaussian(
    directions: Array, t0: Array, t1: Array, base_radius: Array
) -> tuple[Array, Array]:
    """Mean and covariance of a point drawn uniformly from each conical frustum.

    A frustum holds the points ``t * d + e`` with ``t`` in ``[t0, t1]`` and ``e``
    perpendicular to ``d`` with ``|e| <= base_radius * t`` (the cross-section radius
    does not scale with ``|d|``). The moments of ``t`` (density ~ ``t^2``) are written
    with the interval centre ``c`` and half-width ``h`` through ``q = h^2 / (3c^2 + h^2)``
    so that zero-width intervals and huge distances stay finite:
    ``E[t] = c (1 + 2q)``, ``Var[t] = h^2 (1/3 - 16/15 q + 4/3 q^2)`` and the variance of
    each perpendicular coordinate is ``r^2 E[t^2] / 4 = r^2 (c^2/4 + 5/12 h^2 - 4/15 h^2 q)``.

    Args:
      directions: [..., 3] ray directions ``d`` (any length).
      t0, t1: [..., n] interval ends along the ray.
      base_radius: [..., 1] cone radius at ``t = 1``.

    Returns:
      means: [..., n, 3], relative to the ray origin.
      covs: [..., n, 3, 3].
    """
    center = 0.5 * (t0 + t1)
    half = 0.5 * (t1 - t0)
    half_sq = half * half
    denom = 3.0 * center * center + half_sq
    q = jnp.where(denom > 0, half_sq / jnp.where(denom > 0, denom, 1.0), 0.0)
    t_mean = center * (1.0 + 2.0 * q)
    t_var = half_sq * (1.0 / 3.0 - (16.0 / 15.0) * q + (4.0 / 3.0) * q * q)
    r_var = base_radius**2 * (0.25 * center * center + (5.0 / 12.0) * half_sq - (4.0 / 15.0) * half_sq * q)

    d = directions[..., None, :]  # [..., 1, 3]
    means = t_mean[..., None] * d
    d_outer = d[..., :, None] * d[..., None, :]  # [..., 1, 3, 3]
    d_sq = jnp.maximum(jnp.sum(d * d, axis=-1), _TINY)[..., None, None]
    perp = jnp.eye(3, dtype=d.dtype) - d_outer / d_sq
    covs = t_var[..., None, None] * d_outer + r_var[..., None, None] * perp
    return means, covs


def cast_rays(tdist: Array, origins: Array, directions: Array, radii: Array) -> tuple[Array, Array]:
    """Gaussians of the frusta between consecutive distances.

    Args:
      tdist: [..., n + 1] metric distances along each ray.
      origins, directions: [..., 3]; radii: [..., 1].

    Returns:
      means: [..., n, 3] in world coordinates; covs: [..., n, 3, 3].
    """
    means, covs = conical_frustum_to_gaussian(directions, tdist[..., :-1], tdist[..., 1:], radii)
    return means + origins[..., None, :], covs
