"""Rendering whole images with a trained model, in fixed-size chunks of rays.

One jitted function renders a chunk of ``chunk_size`` rays deterministically (test-time
sampling, final level); images are cut into such chunks (the last one padded), so a
render compiles once whatever the image size. The chunk is sharded over the mesh's
devices; every process must call :func:`render_image` with the same rays. On the CPU
each device runs its share of a chunk as passes of a few dozen rays inside that one
call, as the train step does (small passes keep the activations in the caches).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from typing import Literal

import jax
import numpy as np
from jax.sharding import Mesh

from raynerf.config import ModelConfig
from raynerf.mesh import (
    batch_sharding,
    join_micro_batches,
    micro_batches,
    pass_rays,
    replicated,
    split_micro_batches,
)
from raynerf.model.mipnerf360 import MipNerf360
from raynerf.model.rays import RAY_FIELDS, Rays

OUTPUTS = ("rgb", "acc", "distance_mean", "distance_median")
# Render chunks: at least MIN_CHUNK rays (smaller calls waste the devices), at most
# MAX_CHUNK, and sized so that their estimated memory fits MEMORY_FRACTION of what is free.
MIN_CHUNK, MAX_CHUNK = 256, 65536
MEMORY_FRACTION = 0.25


def final_outputs(renderings: list[dict], rays: Rays) -> dict:
    """The final level's :data:`OUTPUTS`: what images, videos and scores are made of."""
    return {name: renderings[-1][name] for name in OUTPUTS}


def make_render_fn(
    model: MipNerf360,
    mesh: Mesh,
    passes: int | Literal["auto"] = "auto",
    select: Callable[[list[dict], Rays], dict] = final_outputs,
) -> Callable:
    """``(params, rays: dict [chunk, k]) -> dict [chunk, ...]``: ``select(renderings, rays)``
    of the model's test-time renderings (default :func:`final_outputs`).

    The chunk runs as ``passes`` passes, in a loop inside the compiled call; ``"auto"`` lets
    the devices choose (:func:`micro_batches`: one on GPU/TPU, on the CPU about
    :func:`pass_rays` rays per device each).
    """

    def forward(params, rays: dict) -> dict:
        batch = Rays.from_batch(rays)
        return select(model.apply({"params": params}, None, batch), batch)

    def render(params, rays: dict) -> dict:
        count = micro_batches(passes, rays["origins"].shape[0], mesh)
        if count == 1:
            return forward(params, rays)
        outputs = jax.lax.map(functools.partial(forward, params), split_micro_batches(rays, count, mesh))
        return join_micro_batches(outputs, mesh)

    rays_sharding = {name: batch_sharding(mesh) for name in RAY_FIELDS}
    return jax.jit(render, in_shardings=(replicated(mesh), rays_sharding), out_shardings=replicated(mesh))


def chunk_unit(mesh: Mesh) -> int:
    """What a chunk's ray count is rounded up to a multiple of: one ray per device, or
    on the CPU one :func:`pass_rays` pass per device (so the passes split it evenly)."""
    return mesh.devices.size * max(1, pass_rays(mesh))


def round_chunk(chunk_size: int, unit: int) -> int:
    """The chunk rounded up to a multiple of ``unit`` (see :func:`chunk_unit`)."""
    return max(unit, -(-chunk_size // unit) * unit)


def map_chunks(
    fn: Callable, params, inputs: Mapping[str, np.ndarray], chunk: int, mesh: Mesh, progress=None
) -> dict[str, np.ndarray]:
    """``fn(params, batch)`` over ``inputs`` (dict of [M, k] arrays) in chunks of ``chunk``
    rows, each sharded over ``mesh`` (the last chunk padded with its last row, whose
    results are dropped) -> dict of [M, ...] numpy outputs. ``chunk`` must be a multiple
    of the devices (see :func:`chunk_unit`); ``progress``, a tqdm bar, is advanced by
    the rows done."""
    total = next(iter(inputs.values())).shape[0]
    sharding = batch_sharding(mesh)
    pieces: dict[str, list[np.ndarray]] = {}
    for start in range(0, total, chunk):
        stop = min(start + chunk, total)
        padded = {}
        for name, values in inputs.items():
            part = np.asarray(values[start:stop], np.float32)
            if stop - start < chunk:
                part = np.concatenate([part, np.repeat(part[-1:], chunk - (stop - start), 0)])
            padded[name] = jax.make_array_from_callback(part.shape, sharding, lambda idx, p=part: p[idx])
        out = jax.device_get(fn(params, padded))
        for name, values in out.items():
            pieces.setdefault(name, []).append(np.asarray(values)[: stop - start])
        if progress is not None:
            progress.update(stop - start)
    return {name: np.concatenate(parts) for name, parts in pieces.items()}


def render_rays(
    render_fn: Callable, params, rays: Mapping[str, np.ndarray], chunk_size: int, mesh: Mesh
) -> dict[str, np.ndarray]:
    """rays: dict of [M, k] arrays -> dict of [M, ...] numpy outputs of ``render_fn``, in
    chunks of ``chunk_size`` rays (rounded up to :func:`chunk_unit`)."""
    fields = {name: rays[name] for name in RAY_FIELDS}
    return map_chunks(render_fn, params, fields, round_chunk(chunk_size, chunk_unit(mesh)), mesh)


def render_image(
    render_fn: Callable, params, rays: Mapping[str, np.ndarray], chunk_size: int, mesh: Mesh
) -> dict[str, np.ndarray]:
    """rays: dict of [H, W, k] arrays -> dict of [H, W, ...] numpy outputs."""
    height, width = rays["origins"].shape[:2]
    flat = {name: np.asarray(rays[name]).reshape(height * width, -1) for name in RAY_FIELDS}
    out = render_rays(render_fn, params, flat, chunk_size, mesh)
    return {name: values.reshape(height, width, *values.shape[1:]) for name, values in out.items()}


def bytes_per_ray(model: ModelConfig) -> int:
    """A generous estimate of the live memory one ray needs in a test-time forward pass.

    Per sample of a level the MLP holds its encoded input (21 basis directions x 2 x
    the number of degrees, kept for the skip connection), a few activations of the
    layer width and the Gaussian's moments; XLA keeps about two levels' worth alive.
    """
    directions = 21 if model.basis_subdivisions == 2 else 10 * 4**model.basis_subdivisions + 2
    encoded = 2 * directions * (model.max_deg_point - model.min_deg_point)

    def level(samples: int, width: int) -> int:
        return (samples + 1) * (2 * encoded + 3 * width + 16)

    floats = max(
        level(model.num_prop_samples, model.prop_net_width),
        level(model.num_nerf_samples, model.nerf_net_width),
    )
    return 4 * 2 * floats


def available_memory() -> int:
    """Free bytes where rendering happens: the first device's memory on an accelerator
    that reports it, else the host's available RAM."""
    stats = getattr(jax.local_devices()[0], "memory_stats", lambda: None)()
    if stats and "bytes_limit" in stats:
        return int(stats["bytes_limit"] - stats.get("bytes_in_use", 0))
    import psutil

    return int(psutil.virtual_memory().available)


def choose_chunk(
    configured: int | Literal["auto"],
    num_rays: int,
    unit: int,
    model: ModelConfig,
    available: float | None = None,
) -> int:
    """Rays per render call (chunk) for rendering images of ``num_rays`` rays.

    Starts from ``configured`` (``"auto"``: ``MAX_CHUNK``), halves it while its estimated memory
    (:func:`bytes_per_ray`) exceeds ``MEMORY_FRACTION`` of ``available`` bytes (default:
    :func:`available_memory`), not below ``MIN_CHUNK``; then takes the smallest chunk
    that covers ``num_rays`` in as many calls (padding rays are wasted work), rounded
    up to a multiple of ``unit`` (:func:`chunk_unit` of the mesh).
    """
    available = available_memory() if available is None else available
    chunk = MAX_CHUNK if configured == "auto" else configured
    while chunk > MIN_CHUNK and chunk * bytes_per_ray(model) > MEMORY_FRACTION * available:
        chunk //= 2
    calls = -(-num_rays // chunk)
    return round_chunk(-(-num_rays // calls), unit)
