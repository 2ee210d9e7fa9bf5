"""Checks of the frustum Gaussians against rejection sampling of the frustum itself and
against exact rational moments."""

from fractions import Fraction

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from raynerf.model import gaussians

frustum_to_gaussian = jax.jit(gaussians.conical_frustum_to_gaussian)
cast_rays = jax.jit(gaussians.cast_rays)


def _sample_frustum(rng, d, t0, t1, radius, num_proposals):
    """Points uniform in the frustum {t d + e : t0 <= t <= t1, e . d = 0, |e| <= radius t},
    by rejection from an axis-aligned bounding box."""
    corners = [t * d for t in (t0, t1)]
    reach = radius * t1
    lo = np.minimum(*corners) - reach
    hi = np.maximum(*corners) + reach
    p = rng.uniform(lo, hi, size=(num_proposals, 3))
    t = p @ d / (d @ d)
    perp = np.linalg.norm(p - t[:, None] * d, axis=-1)
    keep = (t >= t0) & (t <= t1) & (perp <= radius * t)
    return p[keep]


@pytest.mark.parametrize(
    "d,t0,t1,radius",
    [
        (np.array([0.3, -0.5, 0.8]), 1.0, 2.0, 0.3),
        (np.array([2.0, 1.0, -1.5]), 0.5, 0.7, 0.4),  # non-unit direction, |d| ~ 2.7
        (np.array([0.0, 0.0, 0.4]), 0.0, 3.0, 0.25),  # from the apex, short direction along an axis
    ],
)
def test_frustum_moments_match_monte_carlo(d, t0, t1, radius):
    rng = np.random.default_rng(0)
    pts = _sample_frustum(rng, d, t0, t1, radius, 1_500_000)
    assert len(pts) > 50_000
    mc_mean, mc_cov = pts.mean(0), np.cov(pts.T)
    mean, cov = frustum_to_gaussian(
        jnp.asarray(d, jnp.float32),
        jnp.array([t0], jnp.float32),
        jnp.array([t1], jnp.float32),
        jnp.array([radius], jnp.float32),
    )
    assert mean.shape == (1, 3) and cov.shape == (1, 3, 3)
    scale = np.sqrt(np.linalg.norm(mc_cov))
    np.testing.assert_allclose(mean[0], mc_mean, atol=0.01 * scale)
    assert np.linalg.norm(np.asarray(cov[0]) - mc_cov) < 0.02 * np.linalg.norm(mc_cov)


def _exact_moments(t0: float, t1: float):
    """E[t] and Var[t] for density ~ t^2 on [t0, t1], and E[t^2], in exact arithmetic."""
    a, b = Fraction(t0), Fraction(t1)
    m3 = b**3 - a**3
    e1 = Fraction(3, 4) * (b**4 - a**4) / m3
    e2 = Fraction(3, 5) * (b**5 - a**5) / m3
    return float(e1), float(e2 - e1 * e1), float(e2)


@pytest.mark.parametrize(
    "t0,t1",
    [(0.2, 0.21), (1.0, 1.0 + 2**-12), (1e3, 1e3 + 1.0), (1e5, 1e6), (3e5, 1e6), (0.2, 1e6)],
)
def test_stable_moments_match_exact_arithmetic(t0, t1):
    t0, t1 = float(np.float32(t0)), float(np.float32(t1))
    d = np.array([0.0, 0.0, 1.0])  # exactly unit in float32, so the moments read off directly
    radius = 0.01
    mean, cov = frustum_to_gaussian(
        jnp.asarray(d, jnp.float32), jnp.array([t0]), jnp.array([t1]), jnp.array([radius])
    )
    e_t, var_t, e_t2 = _exact_moments(t0, t1)
    np.testing.assert_allclose(np.asarray(mean[0]) @ d, e_t, rtol=1e-5)
    np.testing.assert_allclose(d @ np.asarray(cov[0], np.float64) @ d, var_t, rtol=1e-4)
    perp = np.array([1.0, 0.0, 0.0])
    np.testing.assert_allclose(perp @ np.asarray(cov[0], np.float64) @ perp, radius**2 * e_t2 / 4, rtol=1e-5)


def test_zero_width_and_huge_intervals_are_finite():
    d = jnp.array([[1.0, 0.0, 0.0], [0.0, 0.0, -2.0]])
    tdist = jnp.array([[0.2, 0.2, 5.0, 5.0, 1e5, 1e6, 1e6], [0.2, 0.2, 5.0, 5.0, 1e5, 1e6, 1e6]])
    mean, cov = frustum_to_gaussian(d, tdist[:, :-1], tdist[:, 1:], jnp.array([[0.001], [0.001]]))
    assert np.all(np.isfinite(mean)) and np.all(np.isfinite(cov))
    # A zero-width interval is a flat disk: mean on the ray, no spread along it.
    np.testing.assert_allclose(mean[0, 2], [5.0, 0.0, 0.0], rtol=1e-6)
    np.testing.assert_allclose(cov[0, 2], np.diag([0.0, 1.0, 1.0]) * 0.001**2 * 25 / 4, rtol=1e-5, atol=1e-12)
    eigenvalues = np.linalg.eigvalsh(np.asarray(cov, np.float64))
    assert np.all(eigenvalues >= -1e-6 * np.abs(eigenvalues).max(axis=-1, keepdims=True))


def test_cast_rays_adds_the_origin_and_keeps_batch_shape():
    rng = np.random.default_rng(1)
    origins = jnp.asarray(rng.normal(size=(2, 4, 3)), jnp.float32)
    directions = jnp.asarray(rng.normal(size=(2, 4, 3)), jnp.float32)
    radii = jnp.full((2, 4, 1), 0.002)
    tdist = jnp.broadcast_to(jnp.linspace(0.5, 3.0, 6), (2, 4, 6))
    means, covs = cast_rays(tdist, origins, directions, radii)
    assert means.shape == (2, 4, 5, 3) and covs.shape == (2, 4, 5, 3, 3)
    rel_means, rel_covs = frustum_to_gaussian(directions, tdist[..., :-1], tdist[..., 1:], radii)
    np.testing.assert_allclose(means, rel_means + origins[..., None, :], rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(covs, rel_covs)
