"""The forms the model takes in a program lowered for a TPU (``stepfun.on_tpu``): the
step-function code without gathers, scatters or binary searches, and ``coords``'
tiny matmuls as products. Each against numpy or brute force, the whole sampler and
model against the CPU forms, and the TPU lowering checked to hold no gather."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from raynerf.config import ModelConfig
from raynerf.model import coords, stepfun
from raynerf.model.mipnerf360 import MipNerf360, draw_jitter
from raynerf.model.rays import Rays


@pytest.mark.parametrize("side", ["left", "right"])
def test_count_before_is_numpy_searchsorted_with_ties(side):
    rng = np.random.default_rng(0)
    a = np.sort(rng.integers(0, 10, size=(16, 13)), axis=-1).astype(np.float32)  # many ties
    v = rng.integers(-2, 12, size=(16, 21)).astype(np.float32)  # on knots, and beyond both ends
    v[:, :6] += rng.uniform(0, 1, size=(16, 6)).astype(np.float32)
    found = np.asarray(jax.jit(stepfun._count_before, static_argnums=2)(a, v, side))
    expected = np.stack([np.searchsorted(a[i], v[i], side=side) for i in range(len(a))])
    np.testing.assert_array_equal(found, expected)
    cpu = np.asarray(jax.jit(stepfun._searchsorted, static_argnums=2)(a, v, side))
    np.testing.assert_array_equal(found, cpu)


def test_select_is_take_along_axis_exactly():
    rng = np.random.default_rng(1)
    x = (rng.normal(size=(5, 7, 33)) * 10.0 ** rng.integers(-30, 30, size=(5, 7, 33))).astype(np.float32)
    x[0, 0, 3], x[1, 2, 4] = np.inf, -np.inf  # never picked below: must not leak into the sums
    idx = rng.integers(0, 33, size=(5, 7, 12)).astype(np.int32)
    idx[0, 0] = np.where(idx[0, 0] == 3, 2, idx[0, 0])
    idx[1, 2] = np.where(idx[1, 2] == 4, 5, idx[1, 2])
    np.testing.assert_array_equal(
        np.asarray(jax.jit(stepfun._select)(x, idx)), np.take_along_axis(x, idx, axis=-1)
    )
    ints = rng.integers(-1000, 1000, size=(4, 9)).astype(np.int32)
    pick = rng.integers(0, 9, size=(4, 3)).astype(np.int32)
    np.testing.assert_array_equal(np.asarray(stepfun._select(ints, pick)), np.take_along_axis(ints, pick, -1))


def test_masked_max_is_the_range_maximum():
    rng = np.random.default_rng(2)
    y = rng.uniform(0, 5, size=(6, 40)).astype(np.float32)
    start = rng.integers(0, 41, size=(6, 50)).astype(np.int32)
    stop = np.minimum(start + rng.integers(-3, 20, size=(6, 50)), 40).astype(np.int32)  # some empty
    found = np.asarray(jax.jit(stepfun._masked_max)(y, start, stop))
    expected = np.array(
        [
            [y[r, s:e].max() if e > s else 0.0 for s, e in zip(start[r], stop[r], strict=True)]
            for r in range(len(y))
        ]
    )
    np.testing.assert_array_equal(found, expected)
    np.testing.assert_array_equal(found, np.asarray(jax.jit(stepfun._sparse_table_max)(y, start, stop)))


def _force_tpu_forms(monkeypatch):
    """Every ``on_tpu`` choice takes the TPU form, here on the CPU."""
    for module in (stepfun, coords):
        monkeypatch.setattr(module, "on_tpu", lambda tpu, other, *args: tpu(*args))


def _random_histograms(rng, batch, n):
    t = np.sort(rng.uniform(0, 1, size=batch + (n + 1,)), axis=-1)
    t[..., 3] = t[..., 2]  # a zero-width interval
    w = rng.uniform(0, 1, size=batch + (n,)) ** 4
    w /= w.sum(-1, keepdims=True)
    return t.astype(np.float32), w.astype(np.float32)


def _sampler(t, w, jitter, t_env, w_env):
    dilated_t, dilated_w = stepfun.max_dilate_weights(t, w, 0.02, domain=(0.0, 1.0))
    logits = stepfun.resample_logits(dilated_t, dilated_w, 0.7, 0.0)
    sdist = stepfun.sample_intervals(jitter, dilated_t, logits, 24)
    inner, outer = stepfun.inner_outer(sdist, t_env, w_env)
    median = stepfun.weighted_percentile(t, w, [25.0, 50.0, 90.0])
    return dilated_t, dilated_w, sdist, inner, outer, median


def test_the_sampler_takes_the_same_values_in_both_forms(monkeypatch):
    rng = np.random.default_rng(3)
    t, w = _random_histograms(rng, (4, 8), 64)
    t_env, w_env = _random_histograms(rng, (4, 8), 32)
    jitter = rng.uniform(0, 1, size=(4, 8, 1)).astype(np.float32)
    cpu = jax.jit(_sampler)(t, w, jitter, t_env, w_env)
    _force_tpu_forms(monkeypatch)
    tpu = jax.jit(_sampler)(t, w, jitter, t_env, w_env)
    for a, b in zip(cpu, tpu, strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_the_model_and_its_gradient_match_in_both_forms(monkeypatch):
    config = ModelConfig(
        num_prop_samples=16,
        num_nerf_samples=8,
        prop_net_width=32,
        nerf_net_depth=2,
        nerf_net_width=32,
        bottleneck_width=16,
        viewdir_net_width=16,
        max_deg_point=4,
        stop_level_grad=False,  # the gradient then also passes the dilation and the sampler
    )
    rng = np.random.default_rng(4)
    directions = rng.normal(size=(32, 3)).astype(np.float32)
    rays = Rays(
        origins=rng.normal(size=(32, 3)).astype(np.float32) * 0.1,
        directions=directions,
        viewdirs=directions / np.linalg.norm(directions, axis=-1, keepdims=True),
        radii=np.full((32, 1), 1e-3, np.float32),
        near=np.full((32, 1), 0.2, np.float32),
        far=np.full((32, 1), 1e3, np.float32),
    )
    model = MipNerf360(config)
    jitter = draw_jitter(jax.random.PRNGKey(0), config, (32,))
    params = model.init(jax.random.PRNGKey(1), jitter, rays)["params"]

    def loss(params):
        renderings = model.apply({"params": params}, jitter, rays, 0.5)
        return sum(jnp.sum(r["weights"] * r["sdist"][..., 1:]) for r in renderings) + jnp.sum(
            renderings[-1]["rgb"]
        )

    cpu = jax.jit(jax.value_and_grad(loss))(params)
    _force_tpu_forms(monkeypatch)
    tpu = jax.jit(jax.value_and_grad(loss))(params)
    for a, b in zip(jax.tree.leaves(cpu), jax.tree.leaves(tpu), strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6)


def test_only_the_cpu_lowering_gathers():
    rng = np.random.default_rng(5)
    t, w = _random_histograms(rng, (2, 3), 16)
    t_env, w_env = _random_histograms(rng, (2, 3), 8)
    jitter = rng.uniform(0, 1, size=(2, 3, 1)).astype(np.float32)
    traced = jax.jit(_sampler).trace(t, w, jitter, t_env, w_env)
    tpu = traced.lower(lowering_platforms=("tpu",)).as_text()
    cpu = traced.lower(lowering_platforms=("cpu",)).as_text()
    assert cpu.count("gather") > 0  # take_along_axis and the binary searches' steps
    assert "gather" not in tpu


def test_permute_is_the_inverse_scatter():
    rng = np.random.default_rng(6)
    values = rng.normal(size=(3, 4, 25)).astype(np.float32)
    place = np.argsort(rng.uniform(size=(3, 4, 25)), axis=-1).astype(np.int32)
    expected = np.zeros_like(values)
    np.put_along_axis(expected, place, values, axis=-1)
    np.testing.assert_array_equal(np.asarray(jax.jit(stepfun._permute)(values, place)), expected)


def test_dilated_knots_match_in_both_forms(monkeypatch):
    rng = np.random.default_rng(7)
    t, _ = _random_histograms(rng, (5, 6), 20)
    t[..., 7] = t[..., 6] + 0.02  # a knot that lands on a moved end: a tie across the lists
    cpu = jax.jit(stepfun.dilated_knots)(t, 0.01)
    _force_tpu_forms(monkeypatch)
    tpu = jax.jit(stepfun.dilated_knots)(t, 0.01)
    for a, b in zip(cpu, tpu, strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_the_covariance_sandwich_is_the_same_by_products():
    rng = np.random.default_rng(8)
    jac = rng.normal(size=(4, 5, 3, 3)).astype(np.float32)
    a = rng.normal(size=(4, 5, 3, 3))
    covs = (a @ np.swapaxes(a, -1, -2)).astype(np.float32)
    expected = np.einsum("...ij,...jl,...kl->...ik", jac.astype(np.float64), covs, jac)
    by_products = np.asarray(jax.jit(coords._sandwich_by_products)(jac, covs))
    by_matmuls = np.asarray(jax.jit(coords._sandwich_by_matmuls)(jac, covs))
    np.testing.assert_allclose(by_products, expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(by_products, by_matmuls, rtol=1e-5, atol=1e-5)


def test_the_projection_by_products_is_the_matmul():
    rng = np.random.default_rng(9)
    x = rng.normal(size=(6, 7, 9)).astype(np.float32)
    basis = (rng.normal(size=(9, 40)) * 2.0 ** rng.integers(0, 12, size=(1, 40))).astype(np.float32)
    expected = x.astype(np.float64) @ basis.astype(np.float64)
    found = np.asarray(jax.jit(coords._project_by_products)(x, basis))
    np.testing.assert_allclose(found, expected, rtol=2e-6, atol=2e-6 * np.abs(expected).max())
