"""Volume rendering along rays: densities to compositing weights, weights to the
per-ray outputs (colour, opacity, expected and median distance)."""

from __future__ import annotations

import jax.numpy as jnp

from raynerf.model import stepfun

Array = jnp.ndarray
_EPS = float(jnp.finfo(jnp.float32).eps)
_TINY = float(jnp.finfo(jnp.float32).tiny)


def compute_alpha_weights(
    density: Array, tdist: Array, directions: Array, opaque_background: bool
) -> tuple[Array, Array, Array]:
    """Compositing weights of intervals with constant density.

    Args:
      density: [..., n] non-negative densities.
      tdist: [..., n + 1] distances along the ray (metric ``t``).
      directions: [..., 3] ray directions (the interval length is ``(t1 - t0) |d|``).
      opaque_background: make the last interval fully opaque.

    Returns:
      ``(weights, alpha, trans)``, each [..., n]: ``alpha = 1 - exp(-density * delta)``,
      ``trans`` the transmittance up to each interval, ``weights = alpha * trans``.
    """
    delta = jnp.diff(tdist, axis=-1) * jnp.linalg.norm(directions, axis=-1, keepdims=True)
    optical_depth = density * delta
    if opaque_background:
        optical_depth = jnp.concatenate(
            [optical_depth[..., :-1], jnp.full_like(optical_depth[..., -1:], jnp.inf)], axis=-1
        )
    alpha = 1.0 - jnp.exp(-optical_depth)
    zeros = jnp.zeros_like(optical_depth[..., :1])
    trans = jnp.exp(-jnp.concatenate([zeros, jnp.cumsum(optical_depth[..., :-1], axis=-1)], axis=-1))
    return alpha * trans, alpha, trans


def volumetric_rendering(
    rgb: Array | None, weights: Array, tdist: Array, bg_rgb: Array | float
) -> dict[str, Array]:
    """Per-ray outputs of a weighted set of intervals.

    Args:
      rgb: [..., n, 3] interval colours, or None (proposal levels).
      weights: [..., n] compositing weights.
      tdist: [..., n + 1] metric distances.
      bg_rgb: background colour, broadcastable to [..., 3].

    Returns:
      ``acc`` [...] (sum of weights), ``distance_mean`` [...] (weight-normalised mean
      of the interval midpoints in log space, clipped to ``[tdist[0], tdist[-1]]``),
      ``distance_median`` [...], and with colours ``rgb`` [...,3] composited over
      ``bg_rgb`` with the leftover opacity ``1 - acc``.
    """
    acc = jnp.sum(weights, axis=-1)
    t_mids = 0.5 * (tdist[..., :-1] + tdist[..., 1:])
    log_mean = jnp.sum(weights * jnp.log(jnp.maximum(t_mids, _TINY)), axis=-1) / jnp.maximum(acc, _EPS)
    distance_mean = jnp.clip(jnp.exp(log_mean), tdist[..., 0], tdist[..., -1])
    distance_median = stepfun.weighted_percentile(tdist, weights, [50.0])[..., 0]
    out = {"acc": acc, "distance_mean": distance_mean, "distance_median": distance_median}
    if rgb is not None:
        out["rgb"] = jnp.sum(weights[..., None] * rgb, axis=-2) + (1.0 - acc[..., None]) * bg_rgb
    return out
