"""Benchmarks: where a config's time goes on the devices at hand.

Measures, in one run on the same devices: the train step (steps/s, rays/s, compile
time, XLA's FLOP count, model FLOP utilisation against a matmul peak measured here),
eval-style chunked rendering, the input pipeline, and peak memory.
"""

from __future__ import annotations

import dataclasses
import resource
import statistics
import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh

from raynerf.config import Config
from raynerf.hostmem import release_free_memory
from raynerf.mesh import batch_sharding, global_batch, make_mesh, micro_batches, replicated
from raynerf.model.mipnerf360 import MipNerf360
from raynerf.model.rays import RAY_FIELDS
from raynerf.model.render_chunks import make_render_fn
from raynerf.training.optim import make_optimizer
from raynerf.training.step import check_batch_size, create_train_state, jit_train_step


def synthetic_batch(batch_size: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Rays from cameras on a sphere of radius 1 looking roughly at the origin (what a
    360 capture looks like after normalisation), with random target colours."""
    rng = np.random.default_rng(seed)
    origins = rng.normal(size=(batch_size, 3))
    origins /= np.linalg.norm(origins, axis=-1, keepdims=True)
    directions = -origins + 0.3 * rng.normal(size=(batch_size, 3))
    viewdirs = directions / np.linalg.norm(directions, axis=-1, keepdims=True)
    ones = np.ones((batch_size, 1))
    batch = dict(
        origins=origins,
        directions=directions,
        viewdirs=viewdirs,
        radii=ones * 1e-3,
        near=ones * 0.2,
        far=ones * 1e6,
        rgb=rng.uniform(size=(batch_size, 3)),
    )
    return {k: v.astype(np.float32) for k, v in batch.items()}


def _time(fn: Callable[[], object], repeats: int) -> list[float]:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(fn())
        times.append(time.perf_counter() - start)
    return times


def matmul_peak_meter(mesh, dtype: str = "float32", size: int | None = None) -> Callable[[int], float]:
    """A measurement of the FLOP/s of a large ``dtype`` matmul (float32 accumulation) on
    every device of ``mesh`` at once, on random operands (zeros or ones can run faster
    than real data): ``meter(repeats)`` gives the best of ``repeats`` timed calls. The
    matmul is compiled once; its operands live only during a measurement, so they add
    nothing to the memory a benchmarked step sees."""
    devices = mesh.devices.size
    size = size or (2048 if jax.default_backend() == "cpu" else 8192)
    sharding = batch_sharding(mesh)
    matmul = jax.jit(
        lambda x, y: jnp.matmul(x, y, preferred_element_type=jnp.float32), out_shardings=sharding
    )

    def meter(repeats: int = 10) -> float:
        key_a, key_b = jax.random.split(jax.random.key(0))
        a = jax.device_put(jax.random.normal(key_a, (devices * size, size), dtype), sharding)
        b = jax.device_put(jax.random.normal(key_b, (size, size), dtype), replicated(mesh))
        jax.block_until_ready(matmul(a, b))
        return 2.0 * devices * size**3 / min(_time(lambda: matmul(a, b), repeats))

    return meter


def _flops(lowered) -> float:
    """XLA's FLOP count of a lowered program (nan where the backend gives none)."""
    analysis = lowered.cost_analysis()
    if isinstance(analysis, (list, tuple)):
        analysis = analysis[0]
    return float(analysis.get("flops", float("nan"))) if analysis else float("nan")


def count_flops(lowered, build: Callable[[Mesh], Callable], *args) -> float:
    """FLOPs of one call of ``build(mesh)(*args)``, whose lowering for the devices at hand
    is ``lowered``. Counted on the lowered program, before the backend rewrites it
    (after compilation XLA:GPU no longer counts the matmuls it hands to cuBLAS).
    Backends behind a PJRT plugin (GPU, TPU) count no lowered program; there the same
    function is lowered for one CPU device, from the arguments' shapes only, and
    counted: the same global computation."""
    flops = _flops(lowered)
    if np.isnan(flops):
        flops = count_flops_on_cpu(build, *args)
    return flops


def count_flops_on_cpu(build: Callable[[Mesh], Callable], *args) -> float:
    try:
        cpu_mesh = make_mesh(jax.devices("cpu")[:1])
    except RuntimeError:  # the CPU backend is switched off (JAX_PLATFORMS)
        return float("nan")
    shapes = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), args)
    return _flops(build(cpu_mesh).lower(*shapes))


def _memory_plan(compiled) -> dict:
    """XLA's buffer plan for one call: temporaries and arguments, in bytes (what a
    device must hold at once beyond the runtime's own use)."""
    try:
        analysis = compiled.memory_analysis()
    except Exception:  # not every backend reports one
        return {}
    if analysis is None:
        return {}
    return {
        "xla_temp_bytes": int(analysis.temp_size_in_bytes),
        "xla_argument_bytes": int(analysis.argument_size_in_bytes),
        "xla_output_bytes": int(analysis.output_size_in_bytes),
    }


@dataclasses.dataclass
class TrainSetup:
    """What timing a train step needs: the model and optimiser it was built from, a
    fresh state, a batch of :func:`synthetic_batch` rays on the mesh, and the jitted
    (not yet compiled) step."""

    model: MipNerf360
    tx: optax.GradientTransformation
    state: Any
    batch: dict
    step_fn: Callable


def synthetic_train_setup(config: Config, mesh) -> TrainSetup:
    """A :class:`TrainSetup` for ``config`` on ``mesh``."""
    check_batch_size(config.train.batch_size, mesh.devices.size, config.train.grad_accum_steps)
    model = MipNerf360(config.model)
    tx = make_optimizer(config.train)
    state = create_train_state(config, model, tx, mesh)
    batch = global_batch(mesh, synthetic_batch(config.train.batch_size))
    return TrainSetup(model, tx, state, batch, jit_train_step(config, model, tx, mesh, state))


def time_steps(
    compiled, state, batch, steps: int, before_each: Callable[[], object] | None = None, warmup: int = 1
) -> tuple[object, list[float]]:
    """``warmup`` untimed steps, then ``steps`` timed ones (device-synchronised), each
    preceded by an untimed ``before_each()``: ``(state, seconds per step)``."""
    times = []
    for i in range(warmup + steps):
        timed = i >= warmup
        if timed and before_each is not None:
            before_each()
        start = time.perf_counter()
        state, metrics = compiled(state, batch)
        jax.block_until_ready(metrics)
        if timed:
            times.append(time.perf_counter() - start)
    return state, times


def bench_train(config: Config, mesh, steps: int = 5, peak: Callable[[], float] | None = None) -> dict:
    """Train-step throughput after compilation (median of ``steps`` timed steps).

    With ``peak`` (a matmul peak measurement, FLOP/s) the peak is measured again right
    before every timed step, and the model FLOP utilisation is the median over steps of
    each step's FLOP/s over the peak measured beside it: a shared host's speed drifts
    by tens of percent within minutes, so a peak taken minutes away from a step says
    little about that step's hardware.
    """
    batch_size = config.train.batch_size
    setup = synthetic_train_setup(config, mesh)
    model, tx, state, batch, step_fn = setup.model, setup.tx, setup.state, setup.batch, setup.step_fn
    start = time.perf_counter()
    lowered = step_fn.lower(state, batch)
    compiled = lowered.compile()
    compile_s = time.perf_counter() - start
    release_free_memory()  # as the training loop does after compiling
    # A loop's body is counted once, so with micro-batches count the step as one pass.
    num_micro = micro_batches(config.train.grad_accum_steps, batch_size, mesh)
    single = config.replace({"train": {"grad_accum_steps": 1}})

    def build_single(m: Mesh):
        return jit_train_step(single, model, tx, m, state)

    single_pass = lowered if num_micro == 1 else build_single(mesh).lower(state, batch)
    flops = count_flops(single_pass, build_single, state, batch)
    plan = _memory_plan(compiled)
    result = {
        "batch_size": batch_size,
        "grad_accum_steps": num_micro,
        "compile_seconds": compile_s,
        "flops_per_step": flops,
        "flops_per_ray": flops / batch_size,
        **plan,
    }
    if steps == 0:  # compile only: FLOPs and XLA's memory plan
        return result
    peaks: list[float] = []
    _, times = time_steps(
        compiled, state, batch, steps, (lambda: peaks.append(peak())) if peak is not None else None
    )
    seconds = statistics.median(times)
    result = dict(
        result,
        steps_per_sec=1.0 / seconds,
        rays_per_sec=batch_size / seconds,
        step_seconds=times,
        flops_per_sec=flops / seconds,
    )
    if peaks:
        result.update(
            step_peak_flops=peaks, mfu=statistics.median(flops / (t * p) for t, p in zip(times, peaks))
        )
    return result


def bench_render(config: Config, mesh, chunk: int, repeats: int = 3) -> dict:
    """Rays/s of the deterministic (eval) renderer on chunks of ``chunk`` rays."""
    model = MipNerf360(config.model)
    tx = make_optimizer(config.train)
    params = create_train_state(config, model, tx, mesh).params
    render_fn = make_render_fn(model, mesh)
    rays = synthetic_batch(chunk, seed=1)
    sharding = batch_sharding(mesh)
    arrays = {name: jax.device_put(rays[name], sharding) for name in RAY_FIELDS}
    start = time.perf_counter()
    lowered = render_fn.lower(params, arrays)
    compiled = lowered.compile()
    compile_s = time.perf_counter() - start
    # A loop's body is counted once, so with passes count the chunk's FLOPs as one pass.
    one_pass = lambda m: make_render_fn(model, m, passes=1)
    single = lowered if micro_batches("auto", chunk, mesh) == 1 else one_pass(mesh).lower(params, arrays)
    flops = count_flops(single, one_pass, params, arrays)
    jax.block_until_ready(compiled(params, arrays))
    seconds = statistics.median(_time(lambda: compiled(params, arrays), repeats))
    return {
        "chunk_size": chunk,
        "rays_per_sec": chunk / seconds,
        "compile_seconds": compile_s,
        "flops_per_ray": flops / chunk,
    }


def bench_pipeline(config: Config, seconds: float = 3.0) -> dict:
    """Rays/s of the grain pipeline on the built-in scene at the config's factor."""
    from raynerf.data.cache import default_cache_dir, load_pixels
    from raynerf.data.pipeline import measure_pipeline
    from raynerf.data.scene import load_configured_scene
    from raynerf.data.synthetic import default_scene

    scene = load_configured_scene(default_scene(default_cache_dir(config.data.cache_dir)), config.data)
    pixels, _ = load_pixels(scene, config.data.cache_dir or None)
    return {"rays_per_sec": measure_pipeline(scene, pixels, config, seconds)}


def peak_memory_bytes() -> dict:
    """Peak host RSS of this process and, on accelerators, peak device memory."""
    out = {"host_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}
    stats = [d.memory_stats() or {} for d in jax.local_devices()]
    peaks = [s.get("peak_bytes_in_use") for s in stats if s.get("peak_bytes_in_use")]
    if peaks:
        out["device_peak_bytes"] = max(peaks)
    return out


def run(
    config: Config,
    train_steps: int = 5,
    render_chunk: int = 4096,
    parts: tuple[str, ...] = ("train", "render", "pipeline"),
) -> dict:
    mesh = make_mesh()
    result: dict = {
        "device_kind": jax.devices()[0].device_kind,
        "backend": jax.default_backend(),
        "device_count": jax.device_count(),
        "batch_size": config.train.batch_size,
        "compute_dtype": config.model.compute_dtype,
    }
    # MFU is taken against the peak of the dtype the MLPs multiply in, measured beside
    # each timed train step (see bench_train); the reported peak is their median.
    meter = matmul_peak_meter(mesh, config.model.compute_dtype)
    if "train" in parts:
        result["train"] = bench_train(config, mesh, train_steps, lambda: meter(3))
    step_peaks = result.get("train", {}).get("step_peak_flops")
    result["matmul_peak_flops"] = statistics.median(step_peaks) if step_peaks else meter(10)
    if "render" in parts:
        result["render"] = bench_render(config, mesh, render_chunk)
    if "pipeline" in parts:
        result["pipeline"] = bench_pipeline(config)
    memory = peak_memory_bytes()
    result["peak_memory_bytes"] = memory.get("device_peak_bytes", memory["host_rss_bytes"])
    result["memory"] = memory
    return result
