"""Gradients of the training-time math stay finite on the inputs that break naive
formulas: rays along the axes, rays from the origin, distances from near = 0.2 to
far = 1e6, zero-width intervals and zero weights."""

import jax
import jax.numpy as jnp
import numpy as np

from raynerf.model import basis, coords, gaussians, stepfun, volume

AXIS_DIRECTIONS = jnp.array(
    [[1.0, 0.0, 0.0], [0.0, -1.0, 0.0], [0.0, 0.0, 1.0], [0.0, 0.0, -2.0], [0.577, 0.577, 0.577]]
)
TDIST = jnp.array([0.2, 0.2, 0.2001, 0.5, 1.0, 1.0, 10.0, 1e5, 1e6, 1e6])


def _all_finite(tree) -> bool:
    return all(bool(jnp.all(jnp.isfinite(leaf))) for leaf in jax.tree_util.tree_leaves(tree))


def test_encoding_composite_has_finite_gradients():
    num_rays = AXIS_DIRECTIONS.shape[0]
    origins = jnp.zeros((num_rays, 3)).at[1].set(jnp.array([0.3, 0.0, 0.0]))
    radii = jnp.full((num_rays, 1), 0.001)
    tdist = jnp.broadcast_to(TDIST, (num_rays, TDIST.shape[0]))
    icosahedron = jnp.asarray(basis.icosahedron_basis(2))

    def encode(origins, directions, radii, tdist):
        means, covs = gaussians.cast_rays(tdist, origins, directions, radii)
        means, covs = coords.contract_gaussians(means, covs)
        return jnp.concatenate(coords.integrated_pos_enc(means, covs, icosahedron, 0, 12), axis=-1)

    features = jax.jit(encode)(origins, AXIS_DIRECTIONS, radii, tdist)
    assert features.shape == (num_rays, TDIST.shape[0] - 1, 2 * 21 * 12)
    assert _all_finite(features)
    grads = jax.jit(jax.grad(lambda *a: jnp.sum(encode(*a)), argnums=(0, 1, 2, 3)))(
        origins, AXIS_DIRECTIONS, radii, tdist
    )
    assert _all_finite(grads)


def test_contract_gaussians_gradient_at_the_origin_and_far_away():
    means = jnp.array([[0.0, 0.0, 0.0], [1e6, 0.0, 0.0], [0.0, -1e6, 1e6], [1.0, 0.0, 0.0]])
    covs = jnp.broadcast_to(jnp.eye(3), (4, 3, 3)) * jnp.array([1e-6, 1e10, 1e10, 1e-4])[:, None, None]

    def total(m, c):
        new_means, new_covs = coords.contract_gaussians(m, c)
        return jnp.sum(new_means) + jnp.sum(new_covs)

    assert _all_finite(jax.jit(jax.grad(total, argnums=(0, 1)))(means, covs))


def test_step_function_losses_have_finite_gradients():
    t_to_s, _ = coords.construct_ray_warps(jnp.array([0.2]), jnp.array([1e6]))
    sdist = t_to_s(TDIST)
    n = sdist.shape[0] - 1
    weights = jnp.zeros(n).at[jnp.array([2, 3, 6, 8])].set(jnp.array([0.4, 0.3, 0.2, 0.1]))
    env_s = jnp.concatenate([jnp.zeros(1), jnp.linspace(0.0, 1.0, 7), jnp.ones(1)])
    env_w = jnp.array([0.0, 0.5, 0.1, 0.0, 0.2, 0.2, 0.0, 0.0])

    g_dist = jax.jit(jax.grad(stepfun.lossfun_distortion, argnums=(0, 1)))(sdist, weights)
    assert _all_finite(g_dist)
    g_outer = jax.jit(
        jax.grad(lambda w, we: jnp.sum(stepfun.lossfun_outer(sdist, w, env_s, we)), argnums=(0, 1))
    )(weights, env_w)
    assert _all_finite(g_outer)
    assert np.any(np.asarray(g_outer[1]) != 0)


def test_rendering_gradients_are_finite():
    density = jnp.array([0.0, 5.0, 1.0, 0.0, 0.0, 2.0, 0.0, 1e-3, 3.0])
    rgb = jnp.full((9, 3), 0.5)

    def rendered(density, rgb):
        weights, _, _ = volume.compute_alpha_weights(density, TDIST, AXIS_DIRECTIONS[3], True)
        out = volume.volumetric_rendering(rgb, weights, TDIST, jnp.ones(3))
        return sum(jnp.sum(v) for v in out.values())

    assert _all_finite(jax.jit(jax.grad(rendered, argnums=(0, 1)))(density, rgb))
