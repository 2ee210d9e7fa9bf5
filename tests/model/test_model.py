"""The whole Mip-NeRF 360 model: shapes, parameter count, finite values and gradients."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from small_run import TWO_LAYER_MODEL

from raynerf.config import load_config
from raynerf.mesh import global_batch, make_mesh
from raynerf.model.mipnerf360 import MipNerf360, draw_jitter, level_dilation
from raynerf.model.rays import Rays
from raynerf.training.optim import make_optimizer
from raynerf.training.step import compute_losses, create_train_state, jit_train_step

SMALL = list(TWO_LAYER_MODEL)


def mlp_params(in_dim, depth, width, skip, out_dims):
    """Parameter count of a ReLU MLP with the input re-fed after layer `skip` (by hand)."""
    count, dim = 0, in_dim
    for i in range(depth):
        count += dim * width + width
        dim = width + (in_dim if i % skip == 0 and i > 0 else 0)
    return count, dim


def test_paper_parameter_count():
    config = load_config("360").model
    enc = 21 * 2 * 12  # 21 basis directions, sin+cos, 12 degrees
    prop, prop_out = mlp_params(enc, 4, 256, 4, None)
    prop += prop_out + 1
    nerf, out = mlp_params(enc, 8, 1024, 4, None)
    nerf += out + 1  # density
    nerf += out * 256 + 256  # bottleneck
    nerf += (256 + 27) * 128 + 128  # view layer
    nerf += 128 * 3 + 3
    expected = prop + nerf
    params = jax.eval_shape(lambda: MipNerf360(config).init(jax.random.PRNGKey(0), None, _rays(2)))
    count = sum(np.prod(x.shape) for x in jax.tree.leaves(params))
    assert count == expected
    assert 8.9e6 < count < 9.1e6  # "about 9.0 million"


def test_dilation_schedule():
    config = load_config("360").model
    assert level_dilation(config, 1) == pytest.approx(0.0025 + 0.5 / 64)
    assert level_dilation(config, 2) == pytest.approx(0.0025 + 0.5 / (64 * 64))


def _rays(n, seed=0, scale=1.0):
    rng = np.random.default_rng(seed)
    directions = rng.normal(size=(n, 3)).astype(np.float32)
    return Rays(
        origins=jnp.asarray(rng.normal(size=(n, 3)) * scale, jnp.float32),
        directions=jnp.asarray(directions),
        viewdirs=jnp.asarray(directions / np.linalg.norm(directions, axis=-1, keepdims=True)),
        radii=jnp.full((n, 1), 1e-3, jnp.float32),
        near=jnp.full((n, 1), 0.2, jnp.float32),
        far=jnp.full((n, 1), 1e6, jnp.float32),
    )


def _edge_rays():
    """Rays along the axes, from the origin and from far out, plus random ones."""
    axes = np.concatenate([np.eye(3), -np.eye(3)]).astype(np.float32)
    origins = np.concatenate([np.zeros((6, 3)), axes * 50.0]).astype(np.float32)
    directions = np.concatenate([axes, -axes])
    rays = _rays(12)
    return Rays(
        origins=jnp.asarray(origins),
        directions=jnp.asarray(directions),
        viewdirs=jnp.asarray(directions),
        radii=rays.radii,
        near=rays.near,
        far=rays.far,
    )


def test_forward_shapes_and_deterministic_test_mode():
    config = load_config("360", SMALL).model
    model = MipNerf360(config)
    rays = _rays(5)
    params = model.init(jax.random.PRNGKey(0), None, rays)
    out = model.apply(params, None, rays)
    assert len(out) == 3
    assert [r["weights"].shape[-1] for r in out] == [16, 16, 8]
    assert out[-1]["rgb"].shape == (5, 3)
    again = model.apply(params, None, rays)
    np.testing.assert_array_equal(out[-1]["rgb"], again[-1]["rgb"])
    for r in out:
        s = np.asarray(r["sdist"])
        assert np.all(np.diff(s, axis=-1) >= 0) and s.min() >= 0 and s.max() <= 1
        np.testing.assert_allclose(np.asarray(r["weights"]).sum(-1), 1.0, atol=1e-5)  # opaque


def test_forward_and_gradient_finite_on_edge_rays():
    config = load_config("360", SMALL).model
    model = MipNerf360(config)
    rays = _edge_rays()
    params = model.init(jax.random.PRNGKey(1), None, rays)["params"]
    full = load_config("360", SMALL)
    batch = {f: getattr(rays, f) for f in ("origins", "directions", "viewdirs", "radii", "near", "far")}
    batch["rgb"] = jnp.full((12, 3), 0.5)
    for jitter in (None, draw_jitter(jax.random.PRNGKey(3), config, (12,))):
        (loss, terms), grads = jax.value_and_grad(compute_losses, argnums=2, has_aux=True)(
            full, model, params, batch, jitter, 0.5
        )
        assert np.isfinite(float(loss))
        assert all(np.all(np.isfinite(g)) for g in jax.tree.leaves(grads))
        assert any(np.any(g != 0) for g in jax.tree.leaves(grads))


def test_tiny_train_step_runs_and_lowers_loss_on_a_fixed_batch():
    config = load_config("tiny", ["train.batch_size=64", "train.lr_delay_steps=0"])
    model = MipNerf360(config.model)
    tx = make_optimizer(config.train)
    mesh = make_mesh()
    state = create_train_state(config, model, tx, mesh)
    step = jit_train_step(config, model, tx, mesh, state)
    rays = _rays(64, seed=2, scale=0.1)
    local = {
        f: np.asarray(getattr(rays, f)) for f in ("origins", "directions", "viewdirs", "radii", "near", "far")
    }
    local["rgb"] = np.tile(np.array([[0.9, 0.2, 0.1]], np.float32), (64, 1))
    losses = []
    for _ in range(15):
        state, metrics = step(state, global_batch(mesh, local))
        losses.append(float(metrics["loss_data"]))
    assert int(state.step) == 15 and int(state.nonfinite_total) == 0
    assert losses[-1] < losses[0] * 0.8


def test_bfloat16_matmuls_keep_the_loss_within_one_percent():
    """compute_dtype=bfloat16 (for GPU/TPU): the MLPs multiply in bf16, the sampling math
    stays float32; one step's loss on the same batch moves by less than 1%."""
    rays = _rays(64, seed=7, scale=0.3)
    batch = {f: getattr(rays, f) for f in ("origins", "directions", "viewdirs", "radii", "near", "far")}
    batch["rgb"] = jnp.asarray(np.random.default_rng(8).uniform(size=(64, 3)), jnp.float32)
    losses = {}
    for dtype in ("float32", "bfloat16"):
        config = load_config("tiny", [f"model.compute_dtype={dtype}"])
        model = MipNerf360(config.model)
        params = jax.jit(model.init)(jax.random.PRNGKey(9), None, rays)["params"]
        # Compiled as one program (op by op, the backward pass alone takes minutes on a CPU).
        loss_fn = functools.partial(compute_losses, config, model)
        (loss, _), grads = jax.jit(jax.value_and_grad(loss_fn, has_aux=True))(
            params, batch, draw_jitter(jax.random.PRNGKey(10), config.model, (64,)), 0.5
        )
        assert all(g.dtype == jnp.float32 for g in jax.tree.leaves(grads))  # params stay f32
        losses[dtype] = float(loss)
    assert losses["bfloat16"] == pytest.approx(losses["float32"], rel=0.01)
    assert losses["bfloat16"] != losses["float32"]  # the bf16 path really ran
