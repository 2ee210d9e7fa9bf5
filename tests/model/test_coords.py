"""Checks of the s-space warp, the scene contraction and the encodings against
float64 numpy references, finite differences and Monte Carlo."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from raynerf.model import coords as _coords
from raynerf.model.basis import icosahedron_basis


class coords:  # noqa: N801 - the module's functions, jitted (much faster than eager on CPU)
    contract = jax.jit(_coords.contract)
    contract_jacobian = jax.jit(_coords.contract_jacobian)
    contract_gaussians = jax.jit(_coords.contract_gaussians)
    lift_gaussians = jax.jit(_coords.lift_gaussians, static_argnames=("min_deg", "max_deg"))
    damped_sin_cos = jax.jit(_coords.damped_sin_cos)
    integrated_pos_enc = jax.jit(_coords.integrated_pos_enc, static_argnames=("min_deg", "max_deg"))
    pos_enc = jax.jit(_coords.pos_enc, static_argnames=("min_deg", "max_deg", "append_identity"))
    construct_ray_warps = staticmethod(_coords.construct_ray_warps)


def _contract_np(x: np.ndarray) -> np.ndarray:
    """Reference contraction, float64."""
    r = np.linalg.norm(x, axis=-1, keepdims=True)
    return np.where(r <= 1, x, (2 - 1 / np.maximum(r, 1)) * x / np.maximum(r, 1e-300))


def _random_points(rng, n, log10_min, log10_max):
    dirs = rng.normal(size=(n, 3))
    dirs /= np.linalg.norm(dirs, axis=-1, keepdims=True)
    return dirs * 10 ** rng.uniform(log10_min, log10_max, size=(n, 1))


# ----------------------------------------------------------------------------- warps


def test_warp_round_trip_and_endpoints():
    rng = np.random.default_rng(0)
    near = rng.uniform(0.05, 1.0, size=(50, 1)).astype(np.float32)
    far = np.full_like(near, 1e6)
    t = near * np.exp(rng.uniform(0, np.log(50.0), size=(50, 7))).astype(np.float32)
    t_to_s, s_to_t = coords.construct_ray_warps(jnp.asarray(near), jnp.asarray(far))
    s = t_to_s(t)
    assert np.all((s >= 0) & (s <= 1))
    np.testing.assert_allclose(s_to_t(s), t, rtol=1e-4)
    # The endpoints map to 0 and 1 and back.
    np.testing.assert_allclose(t_to_s(near), 0.0, atol=1e-6)
    np.testing.assert_allclose(t_to_s(far), 1.0, atol=1e-6)
    np.testing.assert_allclose(s_to_t(jnp.zeros_like(near)), near, rtol=1e-6)
    np.testing.assert_allclose(s_to_t(jnp.ones_like(near)), far, rtol=1e-5)


def test_warp_spreads_s_evenly_in_disparity():
    near, far = 0.2, 1e3
    t_to_s, s_to_t = coords.construct_ray_warps(jnp.array([near]), jnp.array([far]))
    s = jnp.linspace(0.0, 1.0, 11)
    disparity = 1.0 / np.asarray(s_to_t(s), np.float64)
    expected = np.linspace(1 / near, 1 / far, 11)
    np.testing.assert_allclose(disparity, expected, rtol=1e-4, atol=1e-6)
    # And monotone increasing in t.
    assert np.all(np.diff(np.asarray(t_to_s(jnp.linspace(near, far, 100)))) > 0)


# ----------------------------------------------------------------------- contraction


def test_contract_identity_inside_unit_ball():
    x = _random_points(np.random.default_rng(1), 500, -6, 0).astype(np.float32)
    x[0] = 0.0
    np.testing.assert_array_equal(coords.contract(jnp.asarray(x)), x)


def test_contract_outside_matches_reference_and_stays_in_radius_two():
    x = _random_points(np.random.default_rng(2), 500, 0, 6)
    y = np.asarray(coords.contract(jnp.asarray(x, jnp.float32)))
    np.testing.assert_allclose(y, _contract_np(x), rtol=1e-5, atol=1e-6)
    assert np.all(np.linalg.norm(y, axis=-1) < 2.0 + 1e-6)


def test_contract_huge_points_are_finite_with_finite_gradients():
    x = jnp.array(
        [[1e6, 0, 0], [0, -1e10, 0], [3e25, -4e25, 1e20], [1e30, 1e30, 1e30], [0, 0, 0]], jnp.float32
    )
    y = coords.contract(x)
    assert np.all(np.isfinite(y))
    np.testing.assert_allclose(np.linalg.norm(y[:4], axis=-1), 2.0, rtol=1e-5)
    np.testing.assert_allclose(y[2], [1.2, -1.6, 0.0], atol=1e-5)
    grads = jax.jit(jax.vmap(jax.jacfwd(_coords.contract)))(x)
    assert np.all(np.isfinite(grads))
    grad_sum = jax.jit(jax.grad(lambda p: jnp.sum(_coords.contract(p))))(x)
    assert np.all(np.isfinite(grad_sum))
    np.testing.assert_array_equal(grad_sum[4], [1.0, 1.0, 1.0])


def test_contract_is_continuous_across_the_sphere():
    u = _random_points(np.random.default_rng(3), 200, 0, 0).astype(np.float32)
    inside = coords.contract(jnp.asarray(u * (1 - 1e-4)))
    outside = coords.contract(jnp.asarray(u * (1 + 1e-4)))
    np.testing.assert_allclose(inside, outside, atol=5e-4)


def test_contract_jacobian_matches_finite_differences_and_autodiff():
    rng = np.random.default_rng(4)
    x = np.concatenate([_random_points(rng, 40, -2, -0.01), _random_points(rng, 40, 0.01, 3)])
    jac = np.asarray(coords.contract_jacobian(jnp.asarray(x, jnp.float32)))
    # Central differences of the float64 reference, step relative to |x|.
    h = 1e-6 * np.maximum(np.linalg.norm(x, axis=-1), 1.0)[:, None]
    fd = np.stack([(_contract_np(x + h * e) - _contract_np(x - h * e)) / (2 * h) for e in np.eye(3)], axis=-1)
    np.testing.assert_allclose(jac, fd, atol=1e-5, rtol=1e-4)
    autodiff = jax.jit(jax.vmap(jax.jacfwd(_coords.contract)))(jnp.asarray(x, jnp.float32))
    np.testing.assert_allclose(jac, autodiff, atol=1e-5, rtol=1e-4)


def test_contract_gaussians_matches_monte_carlo_push():
    rng = np.random.default_rng(5)
    num_samples = 200_000
    for mean in (np.array([0.3, -0.2, 0.1]), np.array([1.5, -2.0, 0.7]), np.array([0.0, 40.0, -10.0])):
        a = rng.normal(size=(3, 3))
        cov = 1e-3 * np.linalg.norm(mean) ** 2 * 1e-2 * (a @ a.T + 0.1 * np.eye(3))
        pts = rng.multivariate_normal(mean, cov, size=num_samples)
        pushed = _contract_np(pts)
        mc_mean, mc_cov = pushed.mean(0), np.cov(pushed.T)
        new_mean, new_cov = coords.contract_gaussians(
            jnp.asarray(mean, jnp.float32), jnp.asarray(cov, jnp.float32)
        )
        scale = np.linalg.norm(mc_cov)
        np.testing.assert_allclose(
            new_mean, mc_mean, atol=0.05 * np.sqrt(scale)
        )  # linearisation ignores the O(sigma^2) bias
        assert np.linalg.norm(np.asarray(new_cov) - mc_cov) < 0.03 * scale


def test_contract_gaussians_keeps_batch_shapes():
    rng = np.random.default_rng(6)
    means = jnp.asarray(rng.normal(size=(2, 5, 3)) * 3, jnp.float32)
    covs = jnp.broadcast_to(jnp.eye(3), (2, 5, 3, 3)) * 0.01
    new_means, new_covs = coords.contract_gaussians(means, covs)
    assert new_means.shape == (2, 5, 3) and new_covs.shape == (2, 5, 3, 3)
    np.testing.assert_allclose(new_covs, np.swapaxes(new_covs, -1, -2), atol=1e-7)


# ---------------------------------------------------------------------------- lifting


def test_lift_gaussians_scales_each_octave_by_powers_of_two():
    """Column l * K + k against the explicit projection onto b_k, times 2^deg (mean)
    and 4^deg (variance), looped in float64."""
    rng = np.random.default_rng(13)
    means = rng.normal(size=(3, 4, 3))
    a = rng.normal(size=(3, 4, 3, 3)) * 0.2
    covs = a @ np.swapaxes(a, -1, -2)
    basis = rng.normal(size=(3, 5))
    min_deg, max_deg = 2, 6
    lifted_means, lifted_vars = coords.lift_gaussians(
        jnp.asarray(means, jnp.float32),
        jnp.asarray(covs, jnp.float32),
        jnp.asarray(basis, jnp.float32),
        min_deg=min_deg,
        max_deg=max_deg,
    )
    assert lifted_means.shape == lifted_vars.shape == (3, 4, 4 * 5)
    for lvl, deg in enumerate(range(min_deg, max_deg)):
        for k in range(5):
            b = basis[:, k]
            np.testing.assert_allclose(
                lifted_means[..., lvl * 5 + k], 2.0**deg * (means @ b), rtol=1e-5, atol=1e-4
            )
            np.testing.assert_allclose(
                lifted_vars[..., lvl * 5 + k],
                4.0**deg * np.einsum("i,...ij,j->...", b, covs, b),
                rtol=1e-5,
                atol=1e-3,
            )


def _encode(means, covs, basis, min_deg, max_deg):
    """:func:`coords.integrated_pos_enc` in float32, concatenated: [..., 2 * L * K]."""
    halves = coords.integrated_pos_enc(
        jnp.asarray(means, jnp.float32),
        jnp.asarray(covs, jnp.float32),
        jnp.asarray(basis, jnp.float32),
        min_deg=min_deg,
        max_deg=max_deg,
    )
    return np.concatenate([np.asarray(h) for h in halves], axis=-1)


def test_integrated_pos_enc_matches_the_float64_closed_form():
    """Column by column against sin(2^l m_k) exp(-4^l v_k / 2) (and the cosine), with
    m_k, v_k the projection onto direction k, all in float64."""
    rng = np.random.default_rng(14)
    means = rng.uniform(-2, 2, size=(64, 3))
    a = rng.normal(size=(64, 3, 3)) * rng.uniform(1e-4, 0.3, size=(64, 1, 1))
    covs = a @ np.swapaxes(a, -1, -2)
    basis = np.asarray(icosahedron_basis(2), np.float64)
    enc = _encode(means, covs, basis, 0, 12)
    assert enc.shape == (64, 2 * 12 * 21)
    m = means @ basis
    v = np.einsum("ik,nij,jk->nk", basis, covs, basis)
    for lvl in range(12):
        damping = np.exp(-0.5 * 4.0**lvl * v)
        # The float32 projection's rounding (an ulp of |m| <= 2) is scaled by 2^l.
        atol = 1e-6 * 2.0**lvl + 1e-6
        np.testing.assert_allclose(
            enc[:, lvl * 21 : (lvl + 1) * 21], np.sin(2.0**lvl * m) * damping, rtol=0, atol=atol
        )
        np.testing.assert_allclose(
            enc[:, 252 + lvl * 21 : 252 + (lvl + 1) * 21], np.cos(2.0**lvl * m) * damping, rtol=0, atol=atol
        )


def test_integrated_pos_enc_matches_monte_carlo_expectation():
    """E[sin(2^l <b_k, X>)] and E[cos(...)] for X ~ N(mean, cov) in 3-D, sampled."""
    rng = np.random.default_rng(8)
    min_deg, max_deg, num_samples = 0, 4, 400_000
    mean = rng.uniform(-1, 1, size=3)
    a = rng.normal(size=(3, 3)) * 0.2
    cov = a @ a.T
    basis = rng.normal(size=(3, 4))
    basis /= np.linalg.norm(basis, axis=0)
    enc = _encode(mean, cov, basis, min_deg, max_deg)
    x = rng.multivariate_normal(mean, cov, size=num_samples) @ basis  # [samples, K]
    num = (max_deg - min_deg) * 4
    for lvl, deg in enumerate(range(min_deg, max_deg)):
        for k in range(4):
            np.testing.assert_allclose(enc[lvl * 4 + k], np.sin(2**deg * x[:, k]).mean(), atol=5e-3)
            np.testing.assert_allclose(enc[num + lvl * 4 + k], np.cos(2**deg * x[:, k]).mean(), atol=5e-3)


@pytest.mark.parametrize("min_deg,max_deg", [(0, 4), (2, 5)])
def test_pos_enc_matches_explicit_loop(min_deg, max_deg):
    x = np.random.default_rng(10).normal(size=(5, 3))
    enc = np.asarray(coords.pos_enc(jnp.asarray(x, jnp.float32), min_deg, max_deg))
    sines = [np.sin(2.0**deg * x[:, d]) for deg in range(min_deg, max_deg) for d in range(3)]
    cosines = [np.cos(2.0**deg * x[:, d]) for deg in range(min_deg, max_deg) for d in range(3)]
    expected = np.concatenate([x, np.stack(sines, -1), np.stack(cosines, -1)], axis=-1)
    np.testing.assert_allclose(enc, expected, atol=2e-5)


def test_view_direction_encoding_has_27_dims():
    assert coords.pos_enc(jnp.ones((2, 3)), 0, 4).shape == (2, 27)


def test_sin_cos_matches_float64_reference_over_the_encoded_range():
    """The polynomial sine and cosine against numpy's in float64, at the float32 inputs:
    across many periods, at the quadrant boundaries (multiples of pi/4) and at the
    largest argument the encodings form (2 * 2^11)."""
    rng = np.random.default_rng(12)
    quarter = np.pi / 4 * np.arange(-40, 41)
    x = np.concatenate(
        [
            rng.uniform(-4096.0, 4096.0, 200_000),
            rng.uniform(-7.0, 7.0, 20_000),
            quarter,
            np.nextafter(quarter, np.inf),
            np.nextafter(quarter, -np.inf),
            [0.0, 4096.0, -4096.0],
        ]
    ).astype(np.float32)
    sin, cos = jax.jit(_coords.sin_cos)(jnp.asarray(x))
    x64 = x.astype(np.float64)
    np.testing.assert_allclose(np.asarray(sin), np.sin(x64), rtol=0, atol=2e-7)
    np.testing.assert_allclose(np.asarray(cos), np.cos(x64), rtol=0, atol=2e-7)


def test_sin_cos_derivatives_are_cos_and_minus_sin():
    x = jnp.linspace(-20.0, 20.0, 4001)
    d_sin = jax.vmap(jax.grad(lambda v: _coords.sin_cos(v)[0]))(x)
    d_cos = jax.vmap(jax.grad(lambda v: _coords.sin_cos(v)[1]))(x)
    np.testing.assert_allclose(d_sin, np.cos(np.float64(x)), atol=1e-6)
    np.testing.assert_allclose(d_cos, -np.sin(np.float64(x)), atol=1e-6)


def test_octave_sin_cos_matches_float64_reference():
    """Every octave of the plain encoding within a few float32 ulps of exact sin/cos."""
    x = np.random.default_rng(11).uniform(-2.0, 2.0, size=(4096,)).astype(np.float32)
    enc = np.asarray(coords.pos_enc(jnp.asarray(x[:, None]), 0, 12, append_identity=False))
    x64 = x.astype(np.float64)
    for deg in range(12):
        np.testing.assert_allclose(enc[:, deg], np.sin(2.0**deg * x64), atol=2e-6)
        np.testing.assert_allclose(enc[:, 12 + deg], np.cos(2.0**deg * x64), atol=2e-6)
