"""Gradient accumulation over micro-batches gives the one-big-batch result."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from meshes import fake_mesh, run_on_cpu_devices
from small_run import TWO_LAYER_MODEL

from raynerf.config import load_config
from raynerf.errors import RaynerfError
from raynerf.mesh import CPU_MICRO_BATCH_RAYS, global_batch, make_mesh, micro_batches
from raynerf.model.mipnerf360 import MipNerf360, draw_jitter
from raynerf.training.optim import make_optimizer
from raynerf.training.step import check_batch_size, create_train_state, jit_train_step, loss_and_grads

SMALL = [*TWO_LAYER_MODEL, "train.batch_size=48", "train.lr_delay_steps=0"]


def _batch(n: int, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    directions = rng.normal(size=(n, 3)).astype(np.float32)
    return {
        "origins": rng.normal(size=(n, 3)).astype(np.float32) * 0.3,
        "directions": directions,
        "viewdirs": directions / np.linalg.norm(directions, axis=-1, keepdims=True),
        "radii": np.full((n, 1), 2e-3, np.float32),
        "near": np.full((n, 1), 0.2, np.float32),
        "far": np.full((n, 1), 1e6, np.float32),
        "rgb": rng.uniform(size=(n, 3)).astype(np.float32),
    }


@pytest.mark.parametrize("single_jitter", [True, False])
def test_micro_batch_gradients_equal_the_whole_batch(single_jitter):
    config = load_config("tiny", SMALL + [f"model.single_jitter={str(single_jitter).lower()}"])
    model, mesh = MipNerf360(config.model), make_mesh()
    params = create_train_state(config, model, make_optimizer(config.train), mesh).params
    batch = {k: jnp.asarray(v) for k, v in _batch(48).items()}
    jitter = draw_jitter(jax.random.PRNGKey(4), config.model, (48,))
    results = {}
    for micro in (1, 4):
        cfg = load_config(
            "tiny",
            SMALL + [f"model.single_jitter={str(single_jitter).lower()}", f"train.grad_accum_steps={micro}"],
        )
        fn = jax.jit(lambda p, b, j, cfg=cfg: loss_and_grads(cfg, model, p, b, j, 0.3, mesh))
        results[micro] = fn(params, batch, jitter)
    (loss1, terms1), grads1 = results[1]
    (loss4, terms4), grads4 = results[4]
    np.testing.assert_allclose(loss4, loss1, rtol=1e-5)
    for name in terms1:
        np.testing.assert_allclose(terms4[name], terms1[name], rtol=1e-5, err_msg=name)
    scale = max(float(jnp.max(jnp.abs(g))) for g in jax.tree.leaves(grads1))
    for g1, g4 in zip(jax.tree.leaves(grads1), jax.tree.leaves(grads4)):
        np.testing.assert_allclose(g4, g1, rtol=1e-4, atol=1e-6 * scale)
    # A micro-batch is not the whole batch: its own gradient differs (the test can fail).
    (_, _), grads_first = jax.jit(
        lambda p: loss_and_grads(
            config, model, p, jax.tree.map(lambda x: x[::4], batch), jitter[::4], 0.3, mesh
        )
    )(params)
    assert any(
        not np.allclose(a, b, rtol=1e-3)
        for a, b in zip(jax.tree.leaves(grads_first), jax.tree.leaves(grads1))
    )


def test_accumulated_train_steps_follow_the_same_trajectory():
    states = {}
    for micro in (1, 3):
        config = load_config("tiny", SMALL + [f"train.grad_accum_steps={micro}"])
        model, tx, mesh = MipNerf360(config.model), make_optimizer(config.train), make_mesh()
        state = create_train_state(config, model, tx, mesh)
        step = jit_train_step(config, model, tx, mesh, state)
        for i in range(3):
            state, metrics = step(state, global_batch(mesh, _batch(48, seed=i)))
        states[micro] = (state, metrics)
    (s1, m1), (s3, m3) = states[1], states[3]
    np.testing.assert_allclose(m3["loss"], m1["loss"], rtol=1e-4)
    np.testing.assert_allclose(m3["psnr"], m1["psnr"], rtol=1e-4)
    for p1, p3 in zip(jax.tree.leaves(s1.params), jax.tree.leaves(s3.params)):
        np.testing.assert_allclose(p3, p1, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize(
    "batch, devices, micro, nearest", [(48, 1, 5, 50), (1024, 2, 3, 1026), (16384, 8, 4, 16384)]
)
def test_batch_must_split_into_micro_batches_on_every_device(batch, devices, micro, nearest):
    if batch != nearest:
        with pytest.raises(RaynerfError, match=f"micro-batches.*--set train.batch_size={nearest}$"):
            check_batch_size(batch, devices, micro)
    check_batch_size(nearest, devices, micro)
    check_batch_size(nearest, devices, "auto")  # the devices' own choice always splits evenly


@pytest.mark.parametrize(
    "batch, devices, expected",
    [
        (1024, 1, 32),  # 32 rays each
        (1024, 2, 16),  # 512 per device: 32 rays each
        (1000, 1, 25),  # 31 would leave 32.3 rays, but 1000 splits evenly only into 25 (40 rays)
        (48, 1, 1),  # too few rays to split
        (96, 1, 3),
        (16384, 8, 64),
    ],
)
def test_the_cpu_splits_each_device_share_into_passes_of_about_32_rays(batch, devices, expected):
    mesh = fake_mesh("cpu", devices)
    micro = micro_batches("auto", batch, mesh)
    assert micro == expected
    share = batch // devices
    assert share % micro == 0 and (micro == 1 or share // micro >= CPU_MICRO_BATCH_RAYS)
    # No larger even split leaves 32 rays or more (brute force over every count).
    assert not [
        m for m in range(micro + 1, share + 1) if share % m == 0 and share // m >= CPU_MICRO_BATCH_RAYS
    ]


def test_accelerators_run_one_pass_and_an_explicit_count_is_kept():
    assert micro_batches("auto", 16384, fake_mesh("gpu", 8)) == 1
    assert micro_batches("auto", 16384, fake_mesh("tpu", 64)) == 1
    assert micro_batches(4, 1024, fake_mesh("cpu", 1)) == 4
    assert micro_batches(1, 1024, fake_mesh("cpu", 1)) == 1
    assert micro_batches(2, 16384, fake_mesh("gpu", 8)) == 2


TWO_DEVICES = """
import jax, numpy as np
from test_accumulation import SMALL, _batch
from raynerf.config import load_config
from raynerf.model.mipnerf360 import MipNerf360
from raynerf.training.optim import make_optimizer
from raynerf.mesh import global_batch, make_mesh
from raynerf.training.step import create_train_state, jit_train_step
assert jax.device_count() == 2
out = {}
for devices, micro in ((1, 1), (2, 3)):
    config = load_config("tiny", SMALL + [f"train.grad_accum_steps={micro}"])
    model, tx = MipNerf360(config.model), make_optimizer(config.train)
    mesh = make_mesh(jax.devices()[:devices])
    state = create_train_state(config, model, tx, mesh)
    step = jit_train_step(config, model, tx, mesh, state)
    for i in range(2):
        state, metrics = step(state, global_batch(mesh, _batch(48, seed=i)))
    out[devices] = jax.device_get(state.params), float(metrics["loss"])
np.testing.assert_allclose(out[2][1], out[1][1], rtol=1e-5)
for a, b in zip(jax.tree.leaves(out[1][0]), jax.tree.leaves(out[2][0])):
    np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-6)
print("same")
"""


def test_micro_batches_sharded_over_two_devices_match_one_device():
    """Micro-batches cut across a 2-device mesh (each device holds its share of every
    micro-batch) give the one-device, one-pass parameters."""
    run_on_cpu_devices(TWO_DEVICES, __file__)
