"""Checks of the three training losses: Charbonnier data loss, proposal (interlevel)
loss and distortion loss."""

import jax
import jax.numpy as jnp
import numpy as np

from raynerf.model import stepfun
from raynerf.training import losses as _losses


class losses:  # noqa: N801 - the module's functions, jitted (much faster than eager on CPU)
    charbonnier_loss = jax.jit(_losses.charbonnier_loss)
    interlevel_loss = jax.jit(_losses.interlevel_loss)
    distortion_loss = jax.jit(_losses.distortion_loss)


def test_charbonnier_is_abs_for_large_residuals_and_padding_at_zero():
    rng = np.random.default_rng(0)
    target = jnp.asarray(rng.uniform(size=(64, 3)), jnp.float32)
    np.testing.assert_allclose(losses.charbonnier_loss(target, target, 0.001), 0.001, rtol=1e-6)
    residual = rng.choice([-1.0, 1.0], size=(64, 3)) * rng.uniform(0.1, 1.0, size=(64, 3))
    value = losses.charbonnier_loss(target + residual, target, 0.001)
    np.testing.assert_allclose(value, np.abs(residual).mean(), rtol=1e-4)
    grad = jax.grad(_losses.charbonnier_loss)(target, target, 0.001)
    np.testing.assert_array_equal(grad, 0.0)  # smooth at zero residual


def _histogram(rng, batch, n):
    t = np.sort(rng.uniform(0, 1, size=(batch, n + 1)), axis=-1)
    t[:, 0], t[:, -1] = 0.0, 1.0
    w = rng.uniform(size=(batch, n))
    return t, w / w.sum(-1, keepdims=True)


def test_interlevel_loss_zero_under_an_upper_envelope_positive_otherwise():
    rng = np.random.default_rng(1)
    t_nerf, w_nerf = _histogram(rng, 8, 32)
    t_prop, w_prop = _histogram(rng, 8, 64)
    # Any histogram bounds a finer histogram of itself from above: split every proposal
    # interval at the NeRF knots and give each piece its share of the mass.
    as_args = lambda *a: [jnp.asarray(x, jnp.float32) for x in a]  # noqa: E731
    t_fine = np.sort(np.concatenate([t_prop, t_nerf], axis=-1), axis=-1)
    cdf = np.stack(
        [np.interp(t_fine[i], t_prop[i], np.concatenate([[0], np.cumsum(w_prop[i])])) for i in range(8)]
    )
    w_fine = np.diff(cdf, axis=-1)
    zero = losses.interlevel_loss(
        *as_args(t_fine, w_fine), [jnp.asarray(t_prop, jnp.float32)], [jnp.asarray(w_prop, jnp.float32)]
    )
    np.testing.assert_allclose(zero, 0.0, atol=1e-6)
    # A proposal that is uniform cannot bound a peaked NeRF histogram.
    w_peak = np.zeros((8, 32))
    w_peak[:, 10] = 1.0
    t_uniform = jnp.broadcast_to(jnp.linspace(0.0, 1.0, 65), (8, 65))
    w_uniform = jnp.full((8, 64), 1 / 64)
    positive = losses.interlevel_loss(*as_args(t_nerf, w_peak), [t_uniform], [w_uniform])
    assert float(positive) > 0.01
    # Levels add up.
    both = losses.interlevel_loss(
        *as_args(t_nerf, w_peak),
        [t_uniform, jnp.asarray(t_prop, jnp.float32)],
        [w_uniform, jnp.asarray(w_prop, jnp.float32)],
    )
    single = losses.interlevel_loss(
        *as_args(t_nerf, w_peak), [jnp.asarray(t_prop, jnp.float32)], [jnp.asarray(w_prop, jnp.float32)]
    )
    np.testing.assert_allclose(both, positive + single, rtol=1e-5)


def test_interlevel_loss_matches_its_definition():
    rng = np.random.default_rng(2)
    t_nerf, w_nerf = _histogram(rng, 4, 6)
    t_prop, w_prop = _histogram(rng, 4, 9)
    value = losses.interlevel_loss(
        jnp.asarray(t_nerf, jnp.float32),
        jnp.asarray(w_nerf, jnp.float32),
        [jnp.asarray(t_prop, jnp.float32)],
        [jnp.asarray(w_prop, jnp.float32)],
    )
    expected = []
    for r in range(4):
        for i in range(6):
            a, b = t_nerf[r, i], t_nerf[r, i + 1]
            touching = (t_prop[r, 1:] > a) & (t_prop[r, :-1] < b)
            outer = w_prop[r][touching].sum()
            expected.append(max(0.0, w_nerf[r, i] - outer) ** 2 / (w_nerf[r, i] + np.finfo(np.float32).eps))
    np.testing.assert_allclose(value, np.mean(expected), rtol=1e-4, atol=1e-8)


def test_interlevel_gradient_reaches_only_the_proposal_weights():
    rng = np.random.default_rng(3)
    t_nerf, _ = _histogram(rng, 4, 16)
    w_nerf = np.zeros((4, 16))
    w_nerf[:, 5] = 1.0
    t_prop, w_prop = _histogram(rng, 4, 8)

    def loss(wn, wp):
        return _losses.interlevel_loss(
            jnp.asarray(t_nerf, jnp.float32), wn, [jnp.asarray(t_prop, jnp.float32)], [wp]
        )

    g_nerf, g_prop = jax.jit(jax.grad(loss, argnums=(0, 1)))(
        jnp.asarray(w_nerf, jnp.float32), jnp.asarray(w_prop, jnp.float32)
    )
    np.testing.assert_array_equal(g_nerf, 0.0)
    assert np.all(np.isfinite(g_prop)) and np.any(
        np.asarray(g_prop) < 0
    )  # more envelope mass lowers the loss


def test_distortion_loss_is_the_mean_over_rays():
    rng = np.random.default_rng(4)
    t, w = _histogram(rng, 6, 10)
    value = losses.distortion_loss(jnp.asarray(t, jnp.float32), jnp.asarray(w, jnp.float32))
    per_ray = stepfun.lossfun_distortion(jnp.asarray(t, jnp.float32), jnp.asarray(w, jnp.float32))
    np.testing.assert_allclose(value, np.mean(per_ray), rtol=1e-6)
    # Concentrating the mass lowers it: a spread-out histogram has more distortion.
    spread = losses.distortion_loss(jnp.linspace(0.0, 1.0, 11)[None], jnp.full((1, 10), 0.1))
    peaked = losses.distortion_loss(jnp.linspace(0.0, 1.0, 11)[None], jax.nn.one_hot(jnp.array([3]), 10))
    np.testing.assert_allclose(spread, 1 / 3, rtol=1e-5)  # E|U - U'| = 1/3 for uniform U on [0, 1]
    np.testing.assert_allclose(peaked, 0.1 / 3, rtol=1e-5)
