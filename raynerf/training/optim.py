"""The optimiser: Adam with a delayed log-linear learning-rate schedule, after
gradient clipping by norm (of the whole gradient, or of each network's part)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

from raynerf.config import TrainConfig


def learning_rate(config: TrainConfig, step: jnp.ndarray | int) -> jnp.ndarray:
    """Log-linear decay from ``lr_init`` to ``lr_final`` over ``max_steps``, scaled by a
    warm-up that rises from ``lr_delay_mult`` to 1 along a quarter sine over
    ``lr_delay_steps`` steps."""
    step = jnp.asarray(step, jnp.float32)
    frac = jnp.clip(step / config.max_steps, 0.0, 1.0)
    lr = jnp.exp(jnp.log(config.lr_init) * (1 - frac) + jnp.log(config.lr_final) * frac)
    if config.lr_delay_steps > 0:
        ramp = jnp.sin(0.5 * jnp.pi * jnp.clip(step / config.lr_delay_steps, 0.0, 1.0))
        lr = lr * (config.lr_delay_mult + (1 - config.lr_delay_mult) * ramp)
    return lr


def clip_each_subtree(max_norm: float) -> optax.GradientTransformation:
    """Clips each top-level entry of the gradient (one per network: ``prop_mlp``,
    ``nerf_mlp``) to norm ``max_norm`` on its own, so that one network's larger
    gradient does not shrink the other's step."""

    def update(updates, state, params=None):
        del params

        def clip(subtree):
            scale = jnp.minimum(1.0, max_norm / jnp.maximum(optax.tree.norm(subtree), 1e-30))
            return jax.tree.map(lambda g: g * scale.astype(g.dtype), subtree)

        return {name: clip(subtree) for name, subtree in updates.items()}, state

    return optax.GradientTransformation(lambda params: optax.EmptyState(), update)


def make_optimizer(config: TrainConfig) -> optax.GradientTransformation:
    """Clip the gradient (``grad_clip_scope``), then Adam with :func:`learning_rate`."""
    clip = (optax.clip_by_global_norm if config.grad_clip_scope == "global" else clip_each_subtree)(
        config.grad_max_norm
    )
    return optax.chain(
        clip,
        optax.adam(
            lambda step: learning_rate(config, step),
            b1=config.adam_b1,
            b2=config.adam_b2,
            eps=config.adam_eps,
        ),
    )
