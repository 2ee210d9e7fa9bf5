"""ConcatDense: a Dense layer on a concatenation, without building the concatenation."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from raynerf.model.mlp import ConcatDense, _narrow_groups


def _reference(params, parts):
    """nn.Dense on the parts broadcast to one shape and concatenated."""
    shape = jnp.broadcast_shapes(*(p.shape[:-1] for p in parts))
    joined = jnp.concatenate([jnp.broadcast_to(p, shape + p.shape[-1:]) for p in parts], axis=-1)
    return nn.Dense(params["kernel"].shape[-1]).apply({"params": params}, joined)


@pytest.mark.parametrize(
    "shapes",
    [
        [(40, 7)],  # one part: a plain Dense
        [(40, 7), (40, 5)],  # the skip connection: activations and the encoding
        [(6, 9, 7), (6, 1, 5)],  # the view layer: per-sample bottleneck, per-ray view code
        [(40, 3), (40, 4), (40, 4)],  # narrow parts, joined before the product
        [(40, 11), (40, 3), (40, 4)],  # a skip layer: activations alone, the halves joined
        [(6, 9, 3), (6, 1, 2), (6, 9, 4)],  # narrow, but of different leading shapes
    ],
)
def test_concat_dense_equals_dense_on_the_concatenation(shapes):
    rng = np.random.default_rng(0)
    parts = [jnp.asarray(rng.normal(size=s), jnp.float32) for s in shapes]
    layer = ConcatDense(11)
    params = layer.init(jax.random.PRNGKey(1), *parts)["params"]
    width = sum(s[-1] for s in shapes)
    assert jax.tree.map(jnp.shape, params) == {"kernel": (width, 11), "bias": (11,)}
    # The same initial values as nn.Dense with He-uniform kernels on the full width.
    dense = nn.Dense(11, kernel_init=jax.nn.initializers.he_uniform()).init(
        jax.random.PRNGKey(1), jnp.zeros((1, width))
    )["params"]
    np.testing.assert_array_equal(params["kernel"], dense["kernel"])
    params = {"kernel": params["kernel"], "bias": jnp.asarray(rng.normal(size=11), jnp.float32)}

    def loss(fn, params, parts):
        out = fn(params, parts)
        return jnp.sum(jnp.sin(out)), out

    ours = lambda p, xs: layer.apply({"params": p}, *xs)
    (_, got), got_grads = jax.value_and_grad(loss, argnums=(1, 2), has_aux=True)(ours, params, parts)
    (_, want), want_grads = jax.value_and_grad(loss, argnums=(1, 2), has_aux=True)(_reference, params, parts)
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    for g, w in zip(jax.tree.leaves(got_grads), jax.tree.leaves(want_grads)):
        assert g.shape == w.shape
        np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-4)


def test_concat_dense_multiplies_in_the_compute_dtype():
    rng = np.random.default_rng(2)
    parts = [
        jnp.asarray(rng.normal(size=(4, 3)), jnp.float32),
        jnp.asarray(rng.normal(size=(4, 2)), jnp.float32),
    ]
    layer = ConcatDense(5, dtype="bfloat16")
    params = layer.init(jax.random.PRNGKey(0), *parts)
    assert all(p.dtype == jnp.float32 for p in jax.tree.leaves(params))
    out = layer.apply(params, *parts)
    assert out.dtype == jnp.bfloat16
    # bf16 keeps 8 mantissa bits: within a few parts in 256 of the float32 reference.
    want = _reference(params["params"], parts)
    np.testing.assert_allclose(np.asarray(out, np.float32), want, rtol=2e-2, atol=2e-2)


def test_narrow_parts_are_joined_only_up_to_the_layer_width():
    def widths(shapes, features):
        groups = _narrow_groups(tuple(jnp.zeros(s) for s in shapes), features)
        return [[p.shape[-1] for p in g] for g in groups]

    # The encoding's halves before the paper's 1024-wide layers: joined (as nn.Dense would
    # see them), the activations of the skip layer alone.
    assert widths([(8, 252), (8, 252)], 1024) == [[252, 252]]
    assert widths([(8, 1024), (8, 252), (8, 252)], 1024) == [[1024], [252, 252]]
    # Before a 64-wide layer each half is multiplied on its own.
    assert widths([(8, 252), (8, 252)], 64) == [[252], [252]]
    assert widths([(8, 2, 5), (8, 1, 5)], 64) == [[5], [5]]
