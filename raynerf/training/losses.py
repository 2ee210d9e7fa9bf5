"""The three Mip-NeRF 360 training losses, unweighted (the caller applies the
multipliers from ``config.train``)."""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp

from raynerf.model import stepfun

Array = jnp.ndarray


def charbonnier_loss(rgb: Array, target: Array, padding: float) -> Array:
    """Mean of ``sqrt((rgb - target)^2 + padding^2)`` over all elements -> scalar."""
    return jnp.mean(jnp.sqrt((rgb - target) ** 2 + padding**2))


def interlevel_loss(
    nerf_sdist: Array,
    nerf_weights: Array,
    prop_sdists: Sequence[Array],
    prop_weights: Sequence[Array],
) -> Array:
    """Proposal loss -> scalar: for each proposal level, the mean over rays and
    intervals of :func:`stepfun.lossfun_outer` of the final histogram against that
    level's histogram, summed over levels. The final histogram is a constant here, so
    the gradient reaches only the proposal weights."""
    t = jax.lax.stop_gradient(nerf_sdist)
    w = jax.lax.stop_gradient(nerf_weights)
    total = jnp.zeros((), dtype=w.dtype)
    for sdist, weights in zip(prop_sdists, prop_weights, strict=True):
        total = total + jnp.mean(stepfun.lossfun_outer(t, w, sdist, weights))
    return total


def distortion_loss(sdist: Array, weights: Array) -> Array:
    """Mean over rays of :func:`stepfun.lossfun_distortion` (sdist [..., n + 1],
    weights [..., n]) -> scalar."""
    return jnp.mean(stepfun.lossfun_distortion(sdist, weights))
