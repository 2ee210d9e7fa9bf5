"""Checks of alpha compositing against the analytic attenuation of a homogeneous medium
and of the rendered outputs on histograms whose answers are known."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from raynerf.model import volume

alpha_weights = jax.jit(volume.compute_alpha_weights, static_argnames=("opaque_background",))
render = jax.jit(volume.volumetric_rendering)


def test_constant_density_matches_exponential_attenuation():
    rng = np.random.default_rng(0)
    sigma, dir_norm = 0.7, 2.5
    tdist = np.concatenate([[0.2], np.sort(rng.uniform(0.2, 3.0, 30)), [3.0]])
    d = rng.normal(size=3)
    d *= dir_norm / np.linalg.norm(d)
    weights, alpha, trans = alpha_weights(
        jnp.full((31,), sigma),
        jnp.asarray(tdist, jnp.float32),
        jnp.asarray(d, jnp.float32),
        opaque_background=False,
    )
    # Light survives a homogeneous slab of length L with probability exp(-sigma L); the
    # path length of [t0, t1] is (t1 - t0) |d|.
    survive = np.exp(-sigma * dir_norm * (tdist - tdist[0]))
    np.testing.assert_allclose(trans, survive[:-1], rtol=1e-5)
    np.testing.assert_allclose(weights, survive[:-1] - survive[1:], rtol=1e-4, atol=1e-7)
    np.testing.assert_allclose(alpha, 1 - np.exp(-sigma * dir_norm * np.diff(tdist)), rtol=1e-4, atol=1e-7)
    out = render(None, weights, jnp.asarray(tdist, jnp.float32), 0.0)
    assert "rgb" not in out
    np.testing.assert_allclose(out["acc"], 1 - survive[-1], rtol=1e-5)
    assert float(out["acc"]) <= 1.0


def test_weights_sum_to_acc_below_one_and_one_when_opaque():
    rng = np.random.default_rng(1)
    density = jnp.asarray(rng.exponential(0.05, size=(16, 24)), jnp.float32)
    tdist = jnp.asarray(np.sort(rng.uniform(0.2, 5.0, size=(16, 25)), axis=-1), jnp.float32)
    dirs = jnp.asarray(rng.normal(size=(16, 3)), jnp.float32)
    weights, _, _ = alpha_weights(density, tdist, dirs, opaque_background=False)
    acc = np.asarray(render(None, weights, tdist, 0.0)["acc"])
    np.testing.assert_allclose(acc, np.asarray(weights).sum(-1), rtol=1e-6)
    assert np.all(np.asarray(weights) >= 0) and np.all(acc <= 1.0 + 1e-6) and np.all(acc < 1.0)
    weights, alpha, _ = alpha_weights(density, tdist, dirs, opaque_background=True)
    np.testing.assert_allclose(np.asarray(weights).sum(-1), 1.0, rtol=1e-5)
    np.testing.assert_array_equal(alpha[:, -1], 1.0)


def test_single_opaque_interval_gives_its_colour_and_distance():
    rng = np.random.default_rng(2)
    tdist = jnp.asarray(np.sort(rng.uniform(0.5, 4.0, 11)), jnp.float32)
    density = jnp.zeros(10).at[6].set(1e6)
    rgb = jnp.asarray(rng.uniform(size=(10, 3)), jnp.float32)
    weights, _, _ = alpha_weights(density, tdist, jnp.array([0.0, 0.0, 1.0]), opaque_background=True)
    out = render(rgb, weights, tdist, jnp.array([1.0, 0.0, 1.0]))
    np.testing.assert_allclose(out["rgb"], rgb[6], rtol=1e-5)
    np.testing.assert_allclose(out["acc"], 1.0, rtol=1e-6)
    t0, t1 = float(tdist[6]), float(tdist[7])
    assert t0 <= float(out["distance_median"]) <= t1
    assert t0 <= float(out["distance_mean"]) <= t1


def test_empty_space_shows_the_background():
    tdist = jnp.linspace(0.2, 3.0, 9)
    weights, _, _ = alpha_weights(jnp.zeros(8), tdist, jnp.array([1.0, 0.0, 0.0]), opaque_background=False)
    out = render(jnp.full((8, 3), 0.3), weights, tdist, jnp.array([0.1, 0.5, 0.9]))
    np.testing.assert_allclose(out["acc"], 0.0, atol=1e-7)
    np.testing.assert_allclose(out["rgb"], [0.1, 0.5, 0.9], rtol=1e-6)
    assert np.isfinite(out["distance_mean"]) and np.isfinite(out["distance_median"])


def test_median_of_one_interval_is_inside_it():
    rng = np.random.default_rng(3)
    tdist = jnp.asarray(np.sort(rng.uniform(0.2, 10.0, size=(20, 9)), axis=-1), jnp.float32)
    k = rng.integers(0, 8, size=20)
    weights = jax.nn.one_hot(k, 8) * 0.8
    median = np.asarray(render(None, weights, tdist, 0.0)["distance_median"])
    lo = np.take_along_axis(np.asarray(tdist), k[:, None], -1)[:, 0]
    hi = np.take_along_axis(np.asarray(tdist), k[:, None] + 1, -1)[:, 0]
    np.testing.assert_allclose(median, 0.5 * (lo + hi), rtol=1e-5)  # uniform within the interval


@pytest.mark.parametrize("location", [0.25, 5.0, 3e4])
def test_distance_mean_of_a_spike_is_its_location_even_with_far_1e6(location):
    tdist = jnp.array([0.2, location, location * 1.0001, 1e5, 1e6])
    weights = jnp.array([0.0, 0.9, 0.0, 0.0])
    out = render(None, weights, tdist, 0.0)
    np.testing.assert_allclose(out["distance_mean"], location * 1.00005, rtol=1e-5)
    np.testing.assert_allclose(out["distance_median"], location * 1.00005, rtol=1e-5)


def test_distance_mean_is_the_weighted_geometric_mean_of_midpoints():
    rng = np.random.default_rng(4)
    tdist = np.sort(rng.uniform(0.2, 100.0, size=(5, 13)), axis=-1)
    weights = rng.uniform(size=(5, 12))
    weights /= 1.5 * weights.sum(-1, keepdims=True)  # acc = 2/3
    mids = 0.5 * (tdist[:, 1:] + tdist[:, :-1])
    expected = np.exp((weights * np.log(mids)).sum(-1) / weights.sum(-1))
    out = render(None, jnp.asarray(weights, jnp.float32), jnp.asarray(tdist, jnp.float32), 0.0)
    np.testing.assert_allclose(out["distance_mean"], expected, rtol=1e-4)


def test_weight_gradients_are_finite_with_opaque_background():
    tdist = jnp.array([0.2, 0.2, 0.5, 1e5, 1e6])
    grad = jax.grad(
        lambda sigma: jnp.sum(
            volume.compute_alpha_weights(sigma, tdist, jnp.array([0.0, 1.0, 0.0]), True)[0] * jnp.arange(4.0)
        )
    )(jnp.array([1.0, 2.0, 0.0, 3.0]))
    assert np.all(np.isfinite(grad))
    assert grad[-1] == 0.0  # the opaque background does not depend on the last density
