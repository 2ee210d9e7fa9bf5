"""The Mip-NeRF 360 model: proposal sampling over three levels, then the NeRF MLP.

Each level draws intervals in normalised s-space from the previous level's
histogram (dilated, annealed), turns them into Gaussians, queries an MLP and
composites. Gradients stop between levels; the proposal levels are supervised
only through the interlevel loss.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from raynerf.config import ModelConfig
from raynerf.model import stepfun
from raynerf.model.coords import construct_ray_warps
from raynerf.model.gaussians import cast_rays
from raynerf.model.mlp import nerf_mlp, prop_mlp
from raynerf.model.rays import Rays
from raynerf.model.volume import compute_alpha_weights, volumetric_rendering

S_DOMAIN = (0.0, 1.0)


def level_dilation(config: ModelConfig, level: int) -> float:
    """Dilation applied to the histogram entering ``level`` (> 0):
    bias + multiplier / (product of the sample counts of the levels before it)."""
    counts = level_sample_counts(config)
    prod = 1
    for n in counts[:level]:
        prod *= n
    return config.dilation_bias + config.dilation_multiplier * (S_DOMAIN[1] - S_DOMAIN[0]) / prod


def level_sample_counts(config: ModelConfig) -> list[int]:
    """Intervals per level: the proposal levels, then the NeRF level."""
    return [config.num_prop_samples] * (config.num_levels - 1) + [config.num_nerf_samples]


def dilate_histogram(
    config: ModelConfig, level: int, sdist: jnp.ndarray, weights: jnp.ndarray
) -> tuple[jnp.ndarray, jnp.ndarray]:
    """The histogram that ``level`` (> 0) samples from: the previous level's
    (``sdist`` [..., n + 1], ``weights`` [..., n]) max-dilated in s-space, its weights
    renormalised to sum to 1, then (``trim_dilated_ends``) its outermost interval at
    each end dropped, as multinerf does, in that order: with ``resample_padding`` > 0
    the padding is added to weights normalised over the untrimmed histogram.

    Returns:
      [..., 3n + 1] knots and [..., 3n] weights, or [..., 3n - 1] and [..., 3n - 2]
      trimmed.
    """
    sdist, weights = stepfun.max_dilate_weights(
        sdist, weights, level_dilation(config, level), domain=S_DOMAIN, renormalize=True
    )
    if config.trim_dilated_ends:
        sdist, weights = sdist[..., 1:-1], weights[..., 1:-1]
    return sdist, weights


def jitter_width(config: ModelConfig) -> int:
    """Random offsets each ray needs per level: one shared by all strata
    (``single_jitter``) or one per stratum of the largest level."""
    return 1 if config.single_jitter else max(level_sample_counts(config))


def draw_jitter(key: jax.Array, config: ModelConfig, batch_shape: tuple[int, ...]) -> jnp.ndarray:
    """The training randomness of a batch of rays: uniform [*batch_shape, num_levels,
    jitter_width] in [0, 1). Drawn once per batch, so each ray's samples are the same
    whether the batch is processed whole or in micro-batches."""
    shape = tuple(batch_shape) + (config.num_levels, jitter_width(config))
    return jax.random.uniform(key, shape, jnp.float32)


class MipNerf360(nn.Module):
    """Rays in, one rendering per level out (the last one is the NeRF level)."""

    config: ModelConfig
    bg_rgb: float = 1.0  # seen only where acc < 1 (opaque_background=False)

    def setup(self):
        self.prop_mlp = prop_mlp(self.config)
        self.nerf_mlp = nerf_mlp(self.config)

    def __call__(
        self, jitter: jnp.ndarray | None, rays: Rays, train_frac: jnp.ndarray | float = 1.0
    ) -> list[dict[str, jnp.ndarray]]:
        """jitter: [..., num_levels, jitter_width] from :func:`draw_jitter` for training
        (stratified sampling), or None for deterministic test-time sampling.
        rays: [..., k] fields. train_frac: fraction of training done.

        Returns a list of ``num_levels`` dicts, each with ``sdist`` [..., n + 1],
        ``tdist`` [..., n + 1], ``weights`` [..., n], ``acc``, ``distance_mean``,
        ``distance_median`` [...], and (last level only) ``rgb`` [..., 3].
        """
        cfg = self.config
        _, s_to_t = construct_ray_warps(rays.near, rays.far)
        sdist = jnp.concatenate(
            [jnp.full_like(rays.near, S_DOMAIN[0]), jnp.full_like(rays.far, S_DOMAIN[1])], axis=-1
        )
        weights = jnp.ones_like(rays.near)
        anneal = (
            stepfun.schlick_bias(jnp.asarray(train_frac, jnp.float32), cfg.anneal_slope)
            if cfg.anneal_slope > 0
            else 1.0
        )
        renderings = []
        for level, num_samples in enumerate(level_sample_counts(cfg)):
            is_prop = level < cfg.num_levels - 1
            if level > 0:
                sdist, weights = dilate_histogram(cfg, level, sdist, weights)
            logits = stepfun.resample_logits(sdist, weights, anneal, cfg.resample_padding)
            level_jitter = None
            if jitter is not None:
                level_jitter = jitter[..., level, : 1 if cfg.single_jitter else num_samples]
            sdist = stepfun.sample_intervals(level_jitter, sdist, logits, num_samples, domain=S_DOMAIN)
            if cfg.stop_level_grad:
                sdist = jax.lax.stop_gradient(sdist)
            tdist = s_to_t(sdist)
            means, covs = cast_rays(tdist, rays.origins, rays.directions, rays.radii)
            mlp = self.prop_mlp if is_prop else self.nerf_mlp
            density, rgb = mlp(means, covs, rays.viewdirs)
            weights = compute_alpha_weights(density, tdist, rays.directions, cfg.opaque_background)[0]
            rendering = volumetric_rendering(rgb, weights, tdist, self.bg_rgb)
            rendering.update(sdist=sdist, tdist=tdist, weights=weights)
            renderings.append(rendering)
        return renderings

    def nerf_field(
        self, means: jnp.ndarray, covs: jnp.ndarray, viewdirs: jnp.ndarray
    ) -> tuple[jnp.ndarray, jnp.ndarray]:
        """The NeRF level's field (its MLP, as ``__call__`` queries it) at Gaussians of the
        normalised, uncontracted frame (the MLP contracts them itself).

        Call as ``model.apply({"params": params}, means, covs, viewdirs,
        method=MipNerf360.nerf_field)``.

        Args:
          means: [..., n, 3].
          covs: [..., n, 3, 3].
          viewdirs: [..., 3] unit view directions (from the camera towards the points).

        Returns:
          ``(density [..., n], rgb [..., n, 3])``: density per unit length of the
          normalised frame, colour in [0, 1] (up to the padding).
        """
        return self.nerf_mlp(means, covs, viewdirs)
