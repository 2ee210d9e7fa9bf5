"""How many rays each forward pass of a render takes: one rule for eval and the render pool."""

import pytest

from raynerf.config import ModelConfig
from raynerf.render.frames import MAX_CHUNK, MEMORY_FRACTION, MIN_CHUNK, bytes_per_ray, choose_chunk

MODEL = ModelConfig()
PLENTY = float("inf")


def test_auto_chunk_is_the_largest_power_of_two_that_fits():
    rays = 64 * MAX_CHUNK  # a multiple of every candidate: the padding trim keeps them whole
    sizes = [choose_chunk(0, rays, 1, MODEL, gib * 2**30) for gib in (0.001, 1, 4, 16, 64, 4096)]
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


@pytest.mark.parametrize("chunk, rays, fitted", [(4096, 4800, 2400), (512, 1280, 427), (8192, 100, 100),
                                                 (1000, 1000, 1000), (1000, 1001, 501), (8192, 6700, 6700)])
def test_chunk_keeps_the_passes_and_cuts_the_padding(chunk, rays, fitted):
    got = choose_chunk(chunk, rays, 1, MODEL, PLENTY)
    assert got == fitted
    assert -(-rays // got) == -(-rays // chunk) and got <= chunk


def test_chunk_is_a_multiple_of_the_device_count():
    chunk = choose_chunk(1000, 100_000, 3, MODEL, PLENTY)
    assert chunk % 3 == 0 and 1000 <= chunk < 1003
    assert choose_chunk(1000, 5, 8, MODEL, PLENTY) == 8
