"""The learning-rate schedule against its closed form, and gradient clipping in the optimiser."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from raynerf.config import TrainConfig, load_config
from raynerf.model.mipnerf360 import MipNerf360
from raynerf.training.optim import learning_rate, make_optimizer
from raynerf.training.step import example_rays

PAPER = TrainConfig()  # 2e-3 -> 2e-5 over 250k steps, 512-step warm-up from 1 %


def closed_form(step: float, c: TrainConfig) -> float:
    """The schedule written out by hand: geometric interpolation times a sine warm-up."""
    frac = min(max(step / c.max_steps, 0.0), 1.0)
    decay = c.lr_init ** (1 - frac) * c.lr_final**frac
    if c.lr_delay_steps <= 0:
        return decay
    ramp = math.sin(0.5 * math.pi * min(max(step / c.lr_delay_steps, 0.0), 1.0))
    return decay * (c.lr_delay_mult + (1 - c.lr_delay_mult) * ramp)


@pytest.mark.parametrize("step", [0, 1, 128, 256, 511, 512, 513, 1000, 125000, 249999, 250000, 300000])
def test_schedule_matches_closed_form(step):
    assert float(learning_rate(PAPER, step)) == pytest.approx(closed_form(step, PAPER), rel=1e-5)


def test_schedule_landmarks():
    # Warm-up starts at lr_init * delay_mult, is full at the end of the warm-up,
    # decays to the geometric mean half-way and to lr_final at (and after) the end.
    assert float(learning_rate(PAPER, 0)) == pytest.approx(2e-3 * 0.01, rel=1e-6)
    at_delay = 2e-3 * (2e-5 / 2e-3) ** (512 / 250000)
    assert float(learning_rate(PAPER, 512)) == pytest.approx(at_delay, rel=1e-5)
    assert float(learning_rate(PAPER, 125000)) == pytest.approx(math.sqrt(2e-3 * 2e-5), rel=1e-5)
    assert float(learning_rate(PAPER, 250000)) == pytest.approx(2e-5, rel=1e-5)
    assert float(learning_rate(PAPER, 10**6)) == pytest.approx(2e-5, rel=1e-5)
    # Half-way through the warm-up the sine ramp is at sin(pi / 4).
    half = 2e-3 * (2e-5 / 2e-3) ** (256 / 250000) * (0.01 + 0.99 * math.sqrt(0.5))
    assert float(learning_rate(PAPER, 256)) == pytest.approx(half, rel=1e-5)


def test_schedule_without_warm_up_and_monotone():
    config = TrainConfig(lr_delay_steps=0, max_steps=1000)
    assert float(learning_rate(config, 0)) == pytest.approx(2e-3, rel=1e-6)
    steps = np.arange(0, 1001, 50)
    lrs = np.array([float(learning_rate(config, s)) for s in steps])
    assert np.all(np.diff(lrs) < 0)
    # Log-linear: equal steps multiply the rate by the same factor.
    np.testing.assert_allclose(np.diff(np.log(lrs)), np.log(1e-2) * 50 / 1000, rtol=1e-4)


def _first_update(config: TrainConfig, grads):
    tx = make_optimizer(config)
    params = jax.tree.map(jnp.zeros_like, grads)
    state = tx.init(params)
    updates, state = tx.update(grads, state, params)
    return updates, state


def test_large_gradient_is_clipped_to_max_norm():
    config = TrainConfig(grad_max_norm=1e-3, grad_clip_scope="global")
    grads = {"a": jnp.array([3.0, -4.0]), "b": jnp.array([[12.0]])}  # global norm 13
    _, state = _first_update(config, grads)
    adam_state = state[1][0]
    # Adam's first moment after one step is (1 - b1) times the gradient it saw: the clipped one.
    scale = 1e-3 / 13.0
    np.testing.assert_allclose(adam_state.mu["a"], 0.1 * scale * np.array([3.0, -4.0]), rtol=1e-5)
    np.testing.assert_allclose(adam_state.mu["b"], 0.1 * scale * np.array([[12.0]]), rtol=1e-5)
    seen = jnp.sqrt(sum(jnp.sum((m / 0.1) ** 2) for m in jax.tree.leaves(adam_state.mu)))
    assert float(seen) == pytest.approx(1e-3, rel=1e-5)


def test_small_gradient_passes_unclipped_and_first_step_is_bias_corrected_adam():
    config = TrainConfig(grad_max_norm=1e-3)
    g = np.array([3e-4, -4e-4, 1e-7], np.float32)  # norm 5e-4 < 1e-3
    updates, state = _first_update(config, {"w": jnp.asarray(g)})
    np.testing.assert_allclose(state[1][0].mu["w"], 0.1 * g, rtol=1e-5)
    # After one step Adam's bias-corrected moments are g and g^2: update = -lr g / (|g| + eps).
    lr0 = config.lr_init * config.lr_delay_mult
    expected = -lr0 * g / (np.abs(g) + config.adam_eps)
    np.testing.assert_allclose(updates["w"], expected, rtol=1e-4)


def test_per_network_clipping_scales_each_network_on_its_own():
    """grad_clip_scope=per_network (multinerf's clipping): a network whose gradient is
    over the limit is scaled to it, the other is left as it is."""
    config = TrainConfig(grad_max_norm=1e-3, grad_clip_scope="per_network")
    grads = {
        "prop_mlp": {"w": jnp.array([3.0, -4.0])},  # norm 5: clipped to 1e-3
        "nerf_mlp": {"w": jnp.array([3e-4, 0.0]), "b": jnp.array([4e-4])},
    }  # norm 5e-4
    _, state = _first_update(config, grads)
    mu = state[1][0].mu
    np.testing.assert_allclose(mu["prop_mlp"]["w"], 0.1 * 1e-3 / 5 * np.array([3.0, -4.0]), rtol=1e-5)
    np.testing.assert_allclose(mu["nerf_mlp"]["w"], 0.1 * np.array([3e-4, 0.0]), rtol=1e-5)
    np.testing.assert_allclose(mu["nerf_mlp"]["b"], 0.1 * np.array([4e-4]), rtol=1e-5)
    # The global scope shrinks both by the same factor instead.
    _, state = _first_update(TrainConfig(grad_max_norm=1e-3, grad_clip_scope="global"), grads)
    total = math.sqrt(25 + 25e-8)
    np.testing.assert_allclose(
        state[1][0].mu["nerf_mlp"]["b"], 0.1 * 1e-3 / total * np.array([4e-4]), rtol=1e-5
    )


def test_default_clipping_treats_each_network_of_the_model_apart():
    """The default (multinerf's per-network clipping) on the real model's parameter
    tree: a gradient of ones on the proposal MLP is scaled to norm 1e-3, a small one on
    the NeRF MLP passes as it is. Were the tree wrapped in one entry (or the default
    global), the NeRF MLP's part would be scaled too."""
    config = load_config("tiny", [])
    assert config.train.grad_clip_scope == "per_network"
    shapes = jax.eval_shape(
        lambda key: MipNerf360(config.model).init(key, None, example_rays())["params"], jax.random.PRNGKey(0)
    )
    assert sorted(shapes) == ["nerf_mlp", "prop_mlp"]
    grads = {
        "prop_mlp": jax.tree.map(lambda s: jnp.ones(s.shape, s.dtype), shapes["prop_mlp"]),
        "nerf_mlp": jax.tree.map(lambda s: jnp.full(s.shape, 1e-9, s.dtype), shapes["nerf_mlp"]),
    }
    count = lambda tree: sum(leaf.size for leaf in jax.tree.leaves(tree))
    assert 1e-9 * math.sqrt(count(grads["nerf_mlp"])) < 1e-3  # under the limit
    _, state = _first_update(config.train, grads)
    mu = state[1][0].mu
    prop_scale = 1e-3 / math.sqrt(count(grads["prop_mlp"]))
    for leaf in jax.tree.leaves(mu["prop_mlp"]):
        np.testing.assert_allclose(leaf, 0.1 * prop_scale, rtol=1e-4)
    for leaf in jax.tree.leaves(mu["nerf_mlp"]):
        np.testing.assert_allclose(leaf, 0.1 * 1e-9, rtol=1e-4)
