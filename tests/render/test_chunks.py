"""How many rays each forward pass of a render takes (one rule for eval and the render
pool), and that cutting a chunk into passes leaves the rendering as it was."""

import jax
import numpy as np
import pytest
from meshes import fake_mesh, run_on_cpu_devices
from small_run import SMALL

from raynerf.bench import synthetic_batch
from raynerf.config import ModelConfig, load_config
from raynerf.mesh import CPU_MICRO_BATCH_RAYS, make_mesh
from raynerf.model.mipnerf360 import MipNerf360
from raynerf.model.rays import RAY_FIELDS, Rays
from raynerf.model.render_chunks import (
    MAX_CHUNK,
    MEMORY_FRACTION,
    MIN_CHUNK,
    OUTPUTS,
    bytes_per_ray,
    choose_chunk,
    chunk_unit,
    make_render_fn,
    render_image,
)
from raynerf.training.optim import make_optimizer
from raynerf.training.step import create_train_state

MODEL = ModelConfig()
PLENTY = float("inf")


def test_auto_chunk_is_the_largest_power_of_two_that_fits():
    rays = 64 * MAX_CHUNK  # a multiple of every candidate: the padding trim keeps them whole
    sizes = [choose_chunk("auto", rays, 1, MODEL, gib * 2**30) for gib in (0.001, 1, 4, 16, 64, 4096)]
    assert all(s & (s - 1) == 0 and MIN_CHUNK <= s <= MAX_CHUNK for s in sizes)
    assert sizes == sorted(sizes) and sizes[0] == MIN_CHUNK and sizes[-1] == MAX_CHUNK
    for gib, size in zip((4, 16, 64), sizes[2:5]):
        budget = MEMORY_FRACTION * gib * 2**30
        assert size * bytes_per_ray(MODEL) <= budget < 2 * size * bytes_per_ray(MODEL)
    assert bytes_per_ray(ModelConfig(nerf_net_width=128, prop_net_width=64)) < bytes_per_ray(MODEL)


def test_configured_chunk_is_kept_when_it_fits_and_halved_when_it_does_not():
    rays = 3000 * 8192  # a multiple of every chunk below: no padding to trim
    assert choose_chunk(3000, rays, 1, MODEL, PLENTY) == 3000
    fits_1024 = 1024 * bytes_per_ray(MODEL) / MEMORY_FRACTION
    assert choose_chunk(8192, rays, 1, MODEL, fits_1024) == 1024
    assert choose_chunk(8192, rays, 1, MODEL, 1.0) == MIN_CHUNK  # never below the floor


@pytest.mark.parametrize(
    "chunk, rays, fitted",
    [
        (4096, 4800, 2400),
        (512, 1280, 427),
        (8192, 100, 100),
        (1000, 1000, 1000),
        (1000, 1001, 501),
        (8192, 6700, 6700),
    ],
)
def test_chunk_keeps_the_calls_and_cuts_the_padding(chunk, rays, fitted):
    got = choose_chunk(chunk, rays, 1, MODEL, PLENTY)
    assert got == fitted
    assert -(-rays // got) == -(-rays // chunk) and got <= chunk


def test_chunk_is_a_multiple_of_the_device_count():
    chunk = choose_chunk(1000, 100_000, 3, MODEL, PLENTY)
    assert chunk % 3 == 0 and 1000 <= chunk < 1003
    assert choose_chunk(1000, 5, 8, MODEL, PLENTY) == 8


def test_cpu_chunks_hold_whole_passes_for_every_device():
    assert chunk_unit(fake_mesh("cpu", 1)) == CPU_MICRO_BATCH_RAYS
    assert chunk_unit(fake_mesh("cpu", 2)) == 2 * CPU_MICRO_BATCH_RAYS
    assert chunk_unit(fake_mesh("gpu", 8)) == 8 and chunk_unit(fake_mesh("tpu", 4)) == 4
    assert choose_chunk(8192, 6700, chunk_unit(fake_mesh("cpu", 1)), MODEL, PLENTY) == 6720


MODEL_SMALL = [s for s in SMALL if s.startswith("model.")]


def _rays(n: int) -> dict[str, np.ndarray]:
    """Rays that each render differently (the bench's: from a unit sphere inwards)."""
    return {name: value for name, value in synthetic_batch(n, seed=0).items() if name in RAY_FIELDS}


def _one_pass(model, params, rays: dict) -> dict:
    """The reference: the model applied to all rays at once, outside the renderer."""
    final = jax.jit(lambda p, r: model.apply({"params": p}, None, Rays.from_batch(r))[-1])(params, rays)
    return {name: np.asarray(final[name]) for name in OUTPUTS}


def test_a_chunk_rendered_in_passes_equals_one_pass_over_it():
    config = load_config("tiny", MODEL_SMALL)
    mesh = make_mesh(jax.devices()[:1])
    model = MipNerf360(config.model)
    params = create_train_state(config, model, make_optimizer(config.train), mesh).params
    rays = _rays(3 * CPU_MICRO_BATCH_RAYS)
    expected = _one_pass(model, params, rays)
    assert np.ptp(expected["distance_median"]) > 0  # rays that render differently
    got = make_render_fn(model, mesh)(params, rays)  # three passes of 32 rays
    # Passes change the matmuls' shapes and so their rounding, which the resampling
    # between levels can carry a little further (seen: 8e-6 on a colour of 0.65).
    for name in OUTPUTS:
        np.testing.assert_allclose(np.asarray(got[name]), expected[name], rtol=5e-5, atol=1e-5)
    # An image of 10 x 7 rays in chunks of 50 (rounded to 64 rays: two passes, padded).
    image = {name: value[:70].reshape(10, 7, -1) for name, value in rays.items()}
    tiled = render_image(make_render_fn(model, mesh), params, image, 50, mesh)
    for name in OUTPUTS:
        np.testing.assert_allclose(
            tiled[name].reshape(70, -1), expected[name][:70].reshape(70, -1), rtol=5e-5, atol=1e-5
        )


TWO_DEVICES = """
import jax, numpy as np
from test_chunks import MODEL_SMALL, _one_pass, _rays
from raynerf.config import load_config
from raynerf.model.mipnerf360 import MipNerf360
from raynerf.model.render_chunks import make_render_fn, OUTPUTS
from raynerf.training.optim import make_optimizer
from raynerf.mesh import make_mesh
from raynerf.training.step import create_train_state
assert jax.device_count() == 2
config = load_config("tiny", MODEL_SMALL)
mesh = make_mesh()
model = MipNerf360(config.model)
params = create_train_state(config, model, make_optimizer(config.train), mesh).params
rays = _rays(128)  # 64 rays per device: two passes on each
expected = _one_pass(model, jax.device_get(params), rays)
got = make_render_fn(model, mesh)(params, rays)
for name in OUTPUTS:
    np.testing.assert_allclose(np.asarray(got[name]), expected[name], rtol=5e-5, atol=1e-5)
print("same")
"""


def test_passes_cut_across_two_devices_keep_every_ray_in_its_place():
    run_on_cpu_devices(TWO_DEVICES, __file__)
