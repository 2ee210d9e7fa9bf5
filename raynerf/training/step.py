"""The train step: one pure, jitted update over a global device mesh.

The global ray batch is sharded along the mesh's ``data`` axis; parameters, optimiser
state and the PRNG key are replicated. The same step runs on one CPU device or a
pod slice: only the mesh changes.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import optax
from jax.sharding import Mesh

from raynerf.config import Config
from raynerf.errors import RaynerfError
from raynerf.mesh import batch_sharding, micro_batches, replicated, split_micro_batches
from raynerf.model.mipnerf360 import MipNerf360, draw_jitter
from raynerf.model.rays import RAY_WIDTHS, Rays
from raynerf.training import losses
from raynerf.training.optim import learning_rate

BATCH_WIDTHS = {**RAY_WIDTHS, "rgb": 3}
BATCH_FIELDS = tuple(BATCH_WIDTHS)


@flax.struct.dataclass
class TrainState:
    """Everything that changes during training (all replicated on the mesh)."""

    step: jnp.ndarray  # int32 scalar: steps taken (applied or skipped)
    params: Any
    opt_state: Any
    key: jnp.ndarray  # uint32[2] base key; step keys are fold_in(key, step)
    nonfinite_steps: jnp.ndarray  # int32: consecutive skipped (non-finite) steps
    nonfinite_total: jnp.ndarray  # int32: all skipped steps


def example_rays(batch_size: int = 1) -> Rays:
    """A ray batch of the right structure for shape inference."""
    ones = lambda k: jnp.ones((batch_size, k), jnp.float32)
    return Rays(
        origins=jnp.zeros((batch_size, 3)),
        directions=ones(3) / jnp.sqrt(3.0),
        viewdirs=ones(3) / jnp.sqrt(3.0),
        radii=ones(1) * 1e-3,
        near=ones(1) * 0.2,
        far=ones(1) * 1e6,
    )


def create_train_state(
    config: Config, model: MipNerf360, tx: optax.GradientTransformation, mesh: Mesh
) -> TrainState:
    """A fresh state, created directly with replicated shardings on ``mesh``."""

    def init(seed):
        key = jax.random.PRNGKey(seed)
        init_key, train_key = jax.random.split(key)
        params = model.init(init_key, None, example_rays())["params"]
        return TrainState(
            step=jnp.zeros((), jnp.int32),
            params=params,
            opt_state=tx.init(params),
            key=train_key,
            nonfinite_steps=jnp.zeros((), jnp.int32),
            nonfinite_total=jnp.zeros((), jnp.int32),
        )

    shapes = jax.eval_shape(init, 0)
    shardings = jax.tree.map(lambda _: replicated(mesh), shapes)
    return jax.jit(init, out_shardings=shardings, static_argnums=0)(config.train.seed)


def compute_losses(
    config: Config, model: MipNerf360, params, batch: dict, jitter, train_frac
) -> tuple[jnp.ndarray, dict[str, jnp.ndarray]]:
    """The weighted training loss and its terms for one batch of rays.

    ``jitter``: [batch, num_levels, jitter_width] (see :func:`draw_jitter`) or None.
    Every term is a mean over the batch's rays, so the means over equal micro-batches
    average to the whole batch's.
    """
    tc = config.train
    renderings = model.apply({"params": params}, jitter, Rays.from_batch(batch), train_frac)
    final, props = renderings[-1], renderings[:-1]
    data = losses.charbonnier_loss(final["rgb"], batch["rgb"], tc.charb_padding)
    interlevel = losses.interlevel_loss(
        final["sdist"], final["weights"], [r["sdist"] for r in props], [r["weights"] for r in props]
    )
    distortion = losses.distortion_loss(final["sdist"], final["weights"])
    loss = (
        tc.data_loss_mult * data + tc.interlevel_loss_mult * interlevel + tc.distortion_loss_mult * distortion
    )
    terms = {
        "loss_data": data,
        "loss_interlevel": interlevel,
        "loss_distortion": distortion,
        "mse": jnp.mean((final["rgb"] - batch["rgb"]) ** 2),
    }
    return loss, terms


def loss_and_grads(
    config: Config, model: MipNerf360, params, batch: dict, jitter, train_frac, mesh: Mesh
) -> tuple[tuple[jnp.ndarray, dict], Any]:
    """``((loss, terms), grads)`` of :func:`compute_losses` on the whole batch.

    With M = :func:`micro_batches` > 1 the batch is processed as M micro-batches in a
    loop that sums their gradients: the same result as one pass over the whole batch
    (up to float summation order) with about 1/M of the activation memory.
    """
    grad_fn = jax.value_and_grad(functools.partial(compute_losses, config, model), has_aux=True)
    num_micro = micro_batches(config.train.grad_accum_steps, batch["rgb"].shape[0], mesh)
    if num_micro == 1:
        return grad_fn(params, batch, jitter, train_frac)

    def accumulate(carry, micro):
        micro_batch, micro_jitter = micro
        return jax.tree.map(jnp.add, carry, grad_fn(params, micro_batch, micro_jitter, train_frac)), None

    micro = split_micro_batches((batch, jitter), num_micro, mesh)
    first = jax.tree.map(lambda x: x[0], micro)
    zeros = jax.tree.map(jnp.zeros_like, jax.eval_shape(grad_fn, params, *first, train_frac))
    total, _ = jax.lax.scan(accumulate, zeros, micro)
    return jax.tree.map(lambda x: x / num_micro, total)


def make_train_step(
    config: Config, model: MipNerf360, tx: optax.GradientTransformation, mesh: Mesh
) -> Callable[[TrainState, dict], tuple[TrainState, dict]]:
    """The pure update ``(state, batch) -> (state, metrics)``.

    A step whose loss or gradient is not finite is not applied: parameters and
    optimiser state stay as they were, and ``nonfinite_steps`` counts it.
    """

    def train_step(state: TrainState, batch: dict) -> tuple[TrainState, dict]:
        key = jax.random.fold_in(state.key, state.step)
        jitter = draw_jitter(key, config.model, batch["rgb"].shape[:1])
        jitter = jax.lax.with_sharding_constraint(jitter, batch_sharding(mesh))
        train_frac = jnp.clip(state.step / config.train.max_steps, 0.0, 1.0)
        (loss, terms), grads = loss_and_grads(config, model, state.params, batch, jitter, train_frac, mesh)
        grad_norm = optax.tree.norm(grads)
        finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        keep = lambda new, old: jax.tree.map(lambda n, o: jnp.where(finite, n, o), new, old)
        skipped = (~finite).astype(jnp.int32)
        new_state = state.replace(
            step=state.step + 1,
            params=keep(params, state.params),
            opt_state=keep(opt_state, state.opt_state),
            nonfinite_steps=jnp.where(finite, 0, state.nonfinite_steps + 1),
            nonfinite_total=state.nonfinite_total + skipped,
        )
        terms = dict(terms)
        terms["psnr"] = -10.0 * jnp.log10(terms.pop("mse"))
        metrics = dict(
            terms, loss=loss, grad_norm=grad_norm, skipped=skipped, lr=learning_rate(config.train, state.step)
        )
        return new_state, metrics

    return train_step


def jit_train_step(config: Config, model: MipNerf360, tx, mesh: Mesh, state: TrainState):
    """:func:`make_train_step` compiled with explicit shardings and a donated state."""
    state_sharding = jax.tree.map(lambda _: replicated(mesh), state)
    batch_shardings = {name: batch_sharding(mesh) for name in BATCH_FIELDS}
    return jax.jit(
        make_train_step(config, model, tx, mesh),
        in_shardings=(state_sharding, batch_shardings),
        out_shardings=(state_sharding, replicated(mesh)),
        donate_argnums=0,
    )


def batch_spec(mesh: Mesh, batch_size: int) -> dict[str, jax.ShapeDtypeStruct]:
    """The global batch's shapes, dtypes and shardings: what
    :func:`~raynerf.mesh.global_batch` returns, for compiling the step before any data has arrived."""
    sharding = batch_sharding(mesh)
    return {
        name: jax.ShapeDtypeStruct((batch_size, BATCH_WIDTHS[name]), jnp.float32, sharding=sharding)
        for name in BATCH_FIELDS
    }


def check_batch_size(batch_size: int, num_devices: int, grad_accum_steps: int | str = "auto") -> None:
    """The global batch must split evenly over all devices (and so over processes),
    and each device's share evenly into ``grad_accum_steps`` micro-batches (``"auto"``:
    chosen by :func:`~raynerf.mesh.micro_batches`, which always splits evenly)."""
    passes = 1 if grad_accum_steps == "auto" else int(grad_accum_steps)
    unit = num_devices * passes
    if batch_size % unit:
        lower = max(unit, batch_size // unit * unit)
        upper = (batch_size // unit + 1) * unit
        nearest = lower if batch_size - lower <= upper - batch_size else upper
        over = f"{num_devices} devices" + (f" x {passes} micro-batches" if passes > 1 else "")
        raise RaynerfError(
            f"train.batch_size={batch_size} does not divide evenly over {over}; "
            f"the nearest valid size is {nearest}: use --set train.batch_size={nearest}"
        )
