"""The optimiser: Adam with a delayed log-linear learning-rate schedule, clipped by global norm."""

from __future__ import annotations

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


def make_optimizer(config: TrainConfig) -> optax.GradientTransformation:
    """Clip the gradient's global norm, then Adam with :func:`learning_rate`."""
    return optax.chain(
        optax.clip_by_global_norm(config.grad_max_norm),
        optax.adam(
            lambda step: learning_rate(config, step),
            b1=config.adam_b1,
            b2=config.adam_b2,
            eps=config.adam_eps,
        ),
    )
