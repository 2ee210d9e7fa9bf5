"""``MipNerf360.nerf_field`` is the field the forward pass composites, and the export's
batched, jitted queries of it give what one direct call gives."""

import jax
import jax.numpy as jnp
import numpy as np
from small_run import TWO_LAYER_MODEL

from raynerf.config import load_config
from raynerf.export.mesh import grid_axis, make_field_fn, query_field, sample_gaussians
from raynerf.mesh import make_mesh
from raynerf.model.gaussians import cast_rays
from raynerf.model.mipnerf360 import MipNerf360
from raynerf.model.rays import Rays
from raynerf.model.volume import compute_alpha_weights


def _model_and_params():
    """A small model with random parameters (drawn in numpy: ``model.init`` runs op by op
    and takes many seconds on a CPU)."""
    config = load_config("tiny", TWO_LAYER_MODEL).model
    model = MipNerf360(config)
    rays = _rays(64)
    shapes = jax.eval_shape(model.init, jax.random.PRNGKey(0), None, rays)["params"]
    rng = np.random.default_rng(0)
    params = jax.tree.map(lambda s: jnp.asarray(rng.normal(scale=0.3, size=s.shape), s.dtype), shapes)
    return config, model, params, rays


def _rays(n: int) -> Rays:
    """Rays from a ring of cameras at radius ~1 towards points near the origin."""
    rng = np.random.default_rng(0)
    azimuth = rng.uniform(0, 2 * np.pi, n)
    origins = np.stack([np.cos(azimuth), np.sin(azimuth), rng.uniform(0.1, 0.4, n)], -1)
    directions = rng.normal(scale=0.2, size=(n, 3)) - origins
    viewdirs = directions / np.linalg.norm(directions, axis=-1, keepdims=True)
    f32 = lambda a: jnp.asarray(a, jnp.float32)
    return Rays(
        origins=f32(origins),
        directions=f32(directions),
        viewdirs=f32(viewdirs),
        radii=jnp.full((n, 1), 2e-3, jnp.float32),
        near=jnp.full((n, 1), 0.2, jnp.float32),
        far=jnp.full((n, 1), 1e6, jnp.float32),
    )


def test_nerf_field_equals_the_mlp_inside_the_forward_pass():
    config, model, params, rays = _model_and_params()

    def forward_and_field(params, rays):
        renderings, state = model.apply(
            {"params": params}, None, rays, capture_intermediates=True, mutable=["intermediates"]
        )
        final = renderings[-1]
        means, covs = cast_rays(final["tdist"], rays.origins, rays.directions, rays.radii)
        field = model.apply({"params": params}, means, covs, rays.viewdirs, method=MipNerf360.nerf_field)
        return final, state["intermediates"]["nerf_mlp"]["__call__"], field

    # (one compiled call: on a CPU, running the model op by op compiles every op apart)
    final, captured, (density, rgb) = jax.jit(forward_and_field)(params, rays)
    ((forward_density, forward_rgb),) = captured
    assert density.shape == final["weights"].shape and rgb.shape == final["weights"].shape + (3,)
    np.testing.assert_allclose(np.asarray(density), np.asarray(forward_density), rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(np.asarray(rgb), np.asarray(forward_rgb), rtol=1e-6, atol=1e-7)
    assert np.ptp(np.asarray(density)) > 0.1  # (a field that varies: the check means something)
    # and compositing it gives the final level's weights
    weights = compute_alpha_weights(density, final["tdist"], rays.directions, config.opaque_background)[0]
    np.testing.assert_allclose(np.asarray(weights), np.asarray(final["weights"]), atol=1e-6)


def test_batched_field_queries_match_one_direct_call():
    # (contracted space: the metric one is the same code without the map back, and the
    # end-to-end mesh tests run it)
    space = "contracted"
    _, model, params, _ = _model_and_params()
    mesh = make_mesh(jax.local_devices())
    axis, voxel = grid_axis(17, space)
    rng = np.random.default_rng(1)
    points = axis[rng.integers(0, 17, size=(5000, 3))]
    points = points[np.linalg.norm(points, axis=-1) < 1.9]
    viewdirs = rng.normal(size=points.shape)
    viewdirs /= np.linalg.norm(viewdirs, axis=-1, keepdims=True)
    # 4096 points a call: two passes of 2048 on a CPU device, and a padded last batch.
    field_fn = make_field_fn(model, mesh, space, voxel, with_rgb=True)
    out = query_field(field_fn, params, points, viewdirs, 4096, mesh)

    @jax.jit
    def direct(params, points, viewdirs):
        means, covs, stretch = sample_gaussians(points, space, voxel)
        density, rgb = model.apply(
            {"params": params}, means[:, None], covs[:, None], viewdirs, method=MipNerf360.nerf_field
        )
        return density[:, 0], rgb[:, 0], stretch

    density, rgb, stretch = direct(
        params, jnp.asarray(points, jnp.float32), jnp.asarray(viewdirs, jnp.float32)
    )
    np.testing.assert_allclose(out["density"], np.asarray(density), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(out["rgb"], np.asarray(rgb), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(out["stretch"], np.asarray(stretch), rtol=1e-6)
