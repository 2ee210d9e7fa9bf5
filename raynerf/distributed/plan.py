"""``raynerf plan``: the real train step compiled for a TPU pod slice, without a TPU.

XLA:TPU compiles ahead of time for a slice that is not present ("deviceless"): libtpu
describes the slice's devices (spread over its hosts as processes), and the training
code builds its mesh, state, step and render call over them exactly as ``raynerf
train`` does on the slice. The compiled program gives per-chip memory (XLA's memory
analysis), FLOPs and HBM traffic per step (its cost analysis) and the collectives it
runs (its HLO text). From the chip's published peak matmul rate and HBM bandwidth
follows a roofline *estimate* of the step time: a lower bound, never a measurement.

When the step does not fit the chip's HBM, the smallest number of micro-batches
(``train.grad_accum_steps``) that fits is found by compiling.
"""

from __future__ import annotations

import dataclasses
import math
import re
import time
from collections.abc import Callable
from typing import Any

import jax
import numpy as np
import optax

from raynerf.config import Config
from raynerf.distributed.slices import Slice, topology_devices
from raynerf.mesh import make_mesh, micro_batches, replicated
from raynerf.model.mipnerf360 import MipNerf360
from raynerf.model.rays import RAY_WIDTHS
from raynerf.model.render_chunks import MAX_CHUNK, choose_chunk, chunk_unit, make_render_fn
from raynerf.training.optim import make_optimizer
from raynerf.training.step import batch_spec, check_batch_size, create_train_state, jit_train_step

ESTIMATE_NOTE = (
    "estimates: roofline lower bounds from published peak FLOP/s and HBM bandwidth, not measurements"
)
COLLECTIVES = (
    "all-reduce",
    "all-gather",
    "reduce-scatter",
    "collective-permute",
    "all-to-all",
    "ragged-all-to-all",
)
# `%name = TYPE opcode(` where opcode is a collective (or its async `-start` half).
_COLLECTIVE_RE = re.compile(
    r"^\s*(?:ROOT\s+)?%?[\w.\-]+\s*=\s*(?P<type>.*?)\s(?P<op>"
    + "|".join(COLLECTIVES)
    + r")(?:-start)?\((?P<rest>.*)$"
)
_ARRAY_RE = re.compile(r"\b(?P<dtype>pred|[a-z]+\d+(?:e\d+m\d+\w*)?)\[(?P<dims>[\d,]*)\]")
# XLA:TPU refuses, at compile time, a program whose temporaries exceed the HBM it can
# use: "... required for HLO temporaries (37.32G) exceeds available HBM (15.75G)".
_OOM_RE = re.compile(
    r"temporaries \(([\d.]+)([KMGT]?)\) exceeds available HBM \(([\d.]+)([KMGT]?)\)", re.IGNORECASE
)
_UNITS = {"": 1, "K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4}
# Matmul passes through the bf16 MXU for a float32 matmul at jax's matmul precision.
# XLA:TPU runs DEFAULT as one bf16 pass, HIGH as three, HIGHEST as six.
F32_PASSES = {
    None: 1,
    "default": 1,
    "bfloat16": 1,
    "high": 3,
    "bfloat16_3x": 3,
    "tensorfloat32": 3,
    "highest": 6,
    "float32": 6,
}


# --------------------------------------------------------------------------- HLO text


def array_bytes(type_text: str) -> int:
    """Bytes of every array in an HLO type (``f32[8,128]{1,0}`` or a tuple of them)."""
    total = 0
    for match in _ARRAY_RE.finditer(type_text):
        dtype = match["dtype"]
        bits = 1 if dtype == "pred" else int(re.search(r"\d+", dtype)[0])
        dims = [int(d) for d in match["dims"].split(",") if d]
        total += math.prod(dims) * max(8, bits) // 8
    return total


def group_size(attributes: str, num_devices: int) -> int:
    """Devices in each replica group of a collective, from its HLO attributes:
    ``replica_groups={{0,1,2,3}}``, ``replica_groups=[2,4]<=[8]``,
    ``replica_groups=mesh['a'=4,'b'=2] {'a'}`` or none at all (every device)."""
    match = re.search(r"replica_groups=mesh\[([^\]]*)\]\s*\{([^}]*)\}", attributes)
    if match:
        sizes = {
            name.strip("' "): int(size)
            for name, size in (item.split("=") for item in match[1].split(",") if "=" in item)
        }
        return math.prod(sizes[name.strip("' ")] for name in match[2].split(",") if name.strip())
    match = re.search(r"replica_groups=\[(\d+),(\d+)\]<=", attributes)
    if match:
        return int(match[2])
    match = re.search(r"replica_groups=\{\{([^}]*)\}", attributes)
    if match:
        return len([x for x in match[1].split(",") if x.strip()])
    match = re.search(r"source_target_pairs=\{([^=]*)\}", attributes)
    if match:
        return len(set(re.findall(r"\d+", match[1])))
    return num_devices


def hlo_collectives(hlo_text: str, num_devices: int) -> list[dict]:
    """The collectives in a compiled program's HLO text, one row per kind and group size:
    ``{"kind", "count", "bytes", "group_size", "bytes_by_dtype"}`` (bytes: the results'
    sizes, summed over the instructions; an instruction inside a loop counts once)."""
    rows: dict[tuple[str, int], dict] = {}
    for line in hlo_text.splitlines():
        match = _COLLECTIVE_RE.match(line)
        if not match:
            continue
        kind, size = match["op"], group_size(match["rest"], num_devices)
        row = rows.setdefault(
            (kind, size), {"kind": kind, "count": 0, "bytes": 0, "group_size": size, "bytes_by_dtype": {}}
        )
        row["count"] += 1
        for array in _ARRAY_RE.finditer(match["type"]):
            size_ = array_bytes(array[0])
            row["bytes"] += size_
            row["bytes_by_dtype"][array["dtype"]] = row["bytes_by_dtype"].get(array["dtype"], 0) + size_
    return sorted(rows.values(), key=lambda r: (-r["bytes"], r["kind"]))


def tree_bytes(tree) -> int:
    """Bytes of every array (or ShapeDtypeStruct) in a pytree."""
    return sum(int(np.prod(x.shape)) * np.dtype(x.dtype).itemsize for x in jax.tree.leaves(tree))


def oom_bytes(message: str) -> tuple[int, int] | None:
    """(temporaries, usable HBM) bytes from XLA:TPU's out-of-HBM compile error, if it says."""
    match = _OOM_RE.search(message)
    if not match:
        return None
    return (int(float(match[1]) * _UNITS[match[2].upper()]), int(float(match[3]) * _UNITS[match[4].upper()]))


# --------------------------------------------------------------------------- compiling


def abstract_train_state(config: Config, model: MipNerf360, tx, mesh):
    """:func:`create_train_state` evaluated abstractly: the state's shapes and dtypes,
    replicated on ``mesh`` (whose devices need not be present)."""
    shapes = jax.eval_shape(lambda: create_train_state(config, model, tx, mesh))
    sharding = replicated(mesh)
    return jax.tree.map(lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sharding), shapes)


@dataclasses.dataclass
class Compiled:
    """One compile of the train step (or of the render call) and what it reported."""

    grad_accum_steps: int
    seconds: float
    executable: Any = None  # None when XLA ran out of HBM while compiling
    error: str = ""
    oom: tuple[int, int] | None = None


def _compile(lower: Callable[[], Any]) -> tuple[Any, str, tuple[int, int] | None, float]:
    start = time.perf_counter()
    try:
        executable = lower().compile()
    except Exception as exc:  # XLA's out-of-memory is a generic runtime error
        text = str(exc)
        if "RESOURCE_EXHAUSTED" not in text and "out of memory" not in text.lower():
            raise
        return None, text.strip().splitlines()[0][:300], oom_bytes(text), time.perf_counter() - start
    return executable, "", None, time.perf_counter() - start


def compile_train_step(config: Config, mesh) -> tuple[Compiled, Any, dict]:
    """The train step as ``raynerf train`` builds it on ``mesh``, compiled:
    (result, abstract state, batch spec)."""
    tc = config.train
    check_batch_size(tc.batch_size, mesh.devices.size, tc.grad_accum_steps)
    model = MipNerf360(config.model)
    tx = make_optimizer(tc)
    state = abstract_train_state(config, model, tx, mesh)
    batch = batch_spec(mesh, tc.batch_size)
    passes = micro_batches(tc.grad_accum_steps, tc.batch_size, mesh)
    executable, error, oom, seconds = _compile(
        lambda: jit_train_step(config, model, tx, mesh, state).lower(state, batch)
    )
    return Compiled(passes, seconds, executable, error, oom), state, batch


def memory_of(result: Compiled, state, batch, num_devices: int, hbm_bytes: int) -> dict:
    """Per-chip memory of a compiled train step, in bytes, and whether it fits."""
    params, opt_state = tree_bytes(state.params), tree_bytes(state.opt_state)
    parts = {
        "params_bytes": params,
        "opt_state_bytes": opt_state,
        "batch_bytes": tree_bytes(batch) // num_devices,
    }
    if result.executable is None:  # XLA:TPU refused it: the temporaries alone exceed the HBM
        if result.oom:
            parts.update(temporaries_bytes=result.oom[0], compiler_hbm_bytes=result.oom[1])
        return dict(parts, per_chip_bytes=None, hbm_bytes=hbm_bytes, fits=False, compile_error=result.error)
    stats = result.executable.memory_analysis()
    total = (
        stats.argument_size_in_bytes
        + stats.output_size_in_bytes
        - stats.alias_size_in_bytes
        + stats.temp_size_in_bytes
        + stats.generated_code_size_in_bytes
    )
    parts.update(
        temporaries_bytes=stats.temp_size_in_bytes,
        code_bytes=stats.generated_code_size_in_bytes,
        arguments_bytes=stats.argument_size_in_bytes,
        outputs_not_donated_bytes=stats.output_size_in_bytes - stats.alias_size_in_bytes,
    )
    return dict(parts, per_chip_bytes=total, hbm_bytes=hbm_bytes, fits=total <= hbm_bytes)


def cost_of(executable) -> dict:
    """FLOPs, HBM bytes accessed and transcendentals per chip per call (XLA:TPU)."""
    cost = executable.cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    return {
        "flops": float(cost.get("flops", 0.0)),
        "hbm_bytes": float(cost.get("bytes accessed", 0.0)),
        "transcendentals": float(cost.get("transcendentals", 0.0)),
    }


def compile_update(config: Config, mesh, state):
    """The optimiser's update of the replicated state alone, compiled: the part of a
    train step that runs once per step whatever its micro-batch count."""
    tx = make_optimizer(config.train)

    def update(params, opt_state, grads):
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state

    return jax.jit(update, donate_argnums=(0, 1)).lower(state.params, state.opt_state, state.params).compile()


def accumulated_cost(compiled: dict, update: dict, passes: int) -> dict:
    """A step's cost with ``passes`` micro-batches from its compiled cost, in which
    XLA's cost analysis counts the micro-batch loop's body once: the body (the compiled
    cost less the once-per-step update) ``passes`` times, plus the update."""
    return {key: passes * (compiled[key] - update[key]) + update[key] for key in compiled}


# --------------------------------------------------------------------------- estimates


def peak_flops(tpu_slice: Slice, compute_dtype: str, precision: str | None = None) -> float:
    """The chip's matmul peak for the model's matmuls: the published bf16 rate for
    bfloat16; for float32 that rate over the MXU passes jax's matmul ``precision``
    takes (XLA:TPU's DEFAULT: one bf16 pass; HIGHEST: six)."""
    peak = tpu_slice.generation.peak_bf16
    if compute_dtype == "bfloat16":
        return peak
    key = None if precision is None else str(precision).lower()
    return peak / F32_PASSES.get(key, 1)


def roofline(flops: float, hbm_bytes: float, peak: float, bandwidth: float) -> dict:
    """Step time estimate: the larger of compute time at ``peak`` and HBM time at
    ``bandwidth`` (a lower bound), and which one binds."""
    compute, memory = flops / peak, hbm_bytes / bandwidth
    return {
        "step_seconds": max(compute, memory),
        "compute_seconds": compute,
        "memory_seconds": memory,
        "bound": "compute" if compute >= memory else "HBM bandwidth",
    }


def search_accumulation(fits: Callable[[int], bool], share: int, start: int) -> int | None:
    """The smallest micro-batch count ``m`` > ``start`` dividing ``share`` (rays per
    device) with ``fits(m)``, assuming more micro-batches never need more memory:
    doubles until one fits, then bisects between. None when none fits."""
    divisors = [m for m in range(start + 1, share + 1) if share % m == 0]
    if not divisors:
        return None
    low, high = start, None  # low: fails; high: fits
    for m in divisors:
        if m >= 2 * low or m == divisors[-1]:
            if fits(m):
                high = m
                break
            low = m
    if high is None:
        return None
    between = [m for m in divisors if low < m < high]
    while between:
        middle = between[len(between) // 2]
        if fits(middle):
            high, between = middle, [m for m in between if m < middle]
        else:
            between = [m for m in between if m > middle]
    return high


# --------------------------------------------------------------------------- the plan


def _attempt(config: Config, mesh, hbm_bytes: int) -> dict:
    result, state, batch = compile_train_step(config, mesh)
    return {
        "result": result,
        "state": state,
        "batch": batch,
        "memory": memory_of(result, state, batch, mesh.devices.size, hbm_bytes),
    }


def placement(executable, state, batch: dict) -> dict:
    """How the compiled step holds its inputs: whether every state leaf is replicated
    on every device, and the batch rows each device holds (and on how many devices)."""
    (state_in, batch_in), _ = executable.input_shardings
    replicated_ = all(
        s.is_fully_replicated and s.shard_shape(x.shape) == x.shape
        for s, x in zip(jax.tree.leaves(state_in), jax.tree.leaves(state), strict=True)
    )
    rows = {s.shard_shape(batch[name].shape)[0] for name, s in batch_in.items()}
    devices = {len(s.device_set) for s in batch_in.values()}
    return {
        "state_replicated": replicated_,
        "batch_rows_per_device": sorted(rows),
        "batch_devices": sorted(devices),
    }


def _search_row(attempt: dict) -> dict:
    """One compile of the accumulation search; ``compiled_flops`` as XLA's cost analysis
    reports it (a micro-batch loop's body counted once)."""
    memory, result = attempt["memory"], attempt["result"]
    row = {
        "grad_accum_steps": result.grad_accum_steps,
        "fits": memory["fits"],
        "per_chip_bytes": memory["per_chip_bytes"],
    }
    if "temporaries_bytes" in memory:
        row["temporaries_bytes"] = memory["temporaries_bytes"]
    if result.executable is not None:
        row["compiled_flops"] = cost_of(result.executable)["flops"]
    return dict(row, compile_seconds=round(result.seconds, 1))


def render_plan(config: Config, mesh, hbm_bytes: int, peak: float, bandwidth: float, params) -> dict:
    """The eval render call (one chunk of rays, as ``raynerf eval`` sizes it for this
    chip's HBM), compiled: its memory, cost and estimated rays/s."""
    unit = chunk_unit(mesh)
    chunk = choose_chunk(config.eval.chunk_size, MAX_CHUNK, unit, config.model, available=hbm_bytes)
    render_fn = make_render_fn(MipNerf360(config.model), mesh)
    rays = batch_spec(mesh, chunk)
    rays = {name: rays[name] for name in RAY_WIDTHS}
    executable, error, oom, seconds = _compile(lambda: render_fn.lower(params, rays))
    out: dict[str, Any] = {"chunk_rays": chunk, "compile_seconds": round(seconds, 1)}
    if executable is None:
        return dict(out, fits=False, compile_error=error, per_chip_bytes=oom[0] if oom else None)
    stats = executable.memory_analysis()
    total = (
        stats.argument_size_in_bytes
        + stats.output_size_in_bytes
        - stats.alias_size_in_bytes
        + stats.temp_size_in_bytes
        + stats.generated_code_size_in_bytes
    )
    cost = cost_of(executable)
    estimate = roofline(cost["flops"], cost["hbm_bytes"], peak, bandwidth)
    return dict(
        out,
        per_chip_bytes=total,
        temporaries_bytes=stats.temp_size_in_bytes,
        fits=total <= hbm_bytes,
        flops=cost["flops"],
        hbm_bytes=cost["hbm_bytes"],
        estimate={
            "call_seconds": estimate["step_seconds"],
            "bound": estimate["bound"],
            "rays_per_sec": chunk / estimate["step_seconds"],
        },
    )


def plan(
    config: Config,
    tpu_slice: Slice,
    hbm_bytes: int | None = None,
    render: bool = True,
    devices: list | None = None,
    log: Callable[[str], None] = lambda _: None,
) -> dict:
    """Compile ``config``'s train step (and eval render call) for ``tpu_slice`` and
    report memory, fit, accumulation, cost, collectives and estimates (see the module
    docstring). ``hbm_bytes`` overrides the chip's published HBM (for tests)."""
    gen = tpu_slice.generation
    devices = topology_devices(tpu_slice) if devices is None else devices
    mesh = make_mesh(devices)
    hbm = gen.hbm_bytes // gen.devices_per_chip if hbm_bytes is None else hbm_bytes
    processes = sorted({d.process_index for d in devices})
    tc = config.train
    log(
        f"compiling the train step for {tpu_slice.name} ({len(devices)} devices, "
        f"{len(processes)} hosts), {tc.grad_accum_steps} micro-batch(es)"
    )
    attempts = {}

    def measure(cfg: Config) -> dict:
        attempt = _attempt(cfg, mesh, hbm)
        attempts[attempt["result"].grad_accum_steps] = attempt
        memory = attempt["memory"]
        used = _used(memory)
        log(
            f"  grad_accum_steps={attempt['result'].grad_accum_steps}: {used} per chip, "
            f"{'fits' if memory['fits'] else 'does not fit'} ({attempt['result'].seconds:.0f} s)"
        )
        return attempt

    chosen = measure(config)
    share = tc.batch_size // mesh.devices.size
    if not chosen["memory"]["fits"]:
        with_m = lambda m: config.replace({"train": {"grad_accum_steps": m}})
        best = search_accumulation(
            lambda m: measure(with_m(m))["memory"]["fits"], share, chosen["result"].grad_accum_steps
        )
        if best is not None:
            chosen = attempts[best]
            config = with_m(best)
    result, memory = chosen["result"], chosen["memory"]
    report: dict[str, Any] = {
        "slice": tpu_slice.name,
        "topology": tpu_slice.topology_name,
        "device_kind": gen.device_kind,
        "hosts": len(processes),
        "chips_per_host": tpu_slice.chips_per_host,
        "devices": mesh.devices.size,
        "devices_per_host": mesh.devices.size // len(processes),
        "batch_size": tc.batch_size,
        "batch_per_host": tc.batch_size // len(processes),
        "batch_per_device": share,
        "grad_accum_steps": result.grad_accum_steps,
        "compute_dtype": config.model.compute_dtype,
        "fits": memory["fits"],
        "memory": memory,
        "search": [_search_row(a) for _, a in sorted(attempts.items())],
    }
    if result.executable is None:
        return report
    cost = cost_of(result.executable)
    step = dict(cost, per="chip", compiled=cost)
    if result.grad_accum_steps > 1:
        log("compiling the optimiser update alone (to count the micro-batch loop's passes)")
        update = cost_of(compile_update(config, mesh, chosen["state"]))
        step.update(accumulated_cost(cost, update, result.grad_accum_steps), update=update)
    step["collectives"] = hlo_collectives(result.executable.as_text(), mesh.devices.size)
    report["step"] = step
    report["placement"] = placement(result.executable, chosen["state"], chosen["batch"])
    cost = step
    peak = peak_flops(tpu_slice, config.model.compute_dtype, jax.config.jax_default_matmul_precision)
    bandwidth = gen.hbm_bandwidth
    estimate = roofline(cost["flops"], cost["hbm_bytes"], peak, bandwidth)
    report["estimate"] = dict(
        estimate,
        note=ESTIMATE_NOTE,
        peak_flops=peak,
        hbm_bandwidth=bandwidth,
        rays_per_sec=tc.batch_size / estimate["step_seconds"],
        schedule_steps=tc.max_steps,
        schedule_hours=tc.max_steps * estimate["step_seconds"] / 3600,
    )
    if render:
        log("compiling the eval render call")
        report["render"] = render_plan(config, mesh, hbm, peak, bandwidth, chosen["state"].params)
    return report


# --------------------------------------------------------------------------- the table


def _gib(value: float | None) -> str:
    """Bytes in GiB, or MiB below one GiB."""
    if value is None:
        return "?"
    return f"{value / 2**30:.2f} GiB" if value >= 2**30 else f"{value / 2**20:.1f} MiB"


def _used(memory: dict) -> str:
    """Per-chip memory, or a lower bound when XLA refused the program."""
    if memory["per_chip_bytes"] is None and "temporaries_bytes" in memory:
        return f"> {_gib(memory['temporaries_bytes'])} (XLA: too large)"
    return _gib(memory["per_chip_bytes"])


def _si(value: float, unit: str) -> str:
    for scale, prefix in ((1e15, "P"), (1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= scale:
            return f"{value / scale:.2f} {prefix}{unit}"
    return f"{value:.0f} {unit}"


def format_plan(report: dict) -> str:
    """The plan as an aligned text table."""
    mem = report["memory"]
    rows: list[tuple[str, str]] = [
        ("slice", f"{report['slice']} ({report['device_kind']}, topology {report['topology']})"),
        ("hosts x chips per host", f"{report['hosts']} x {report['chips_per_host']}"),
        ("devices in the mesh", f"{report['devices']} ({report['devices_per_host']} per host)"),
        (
            "global batch",
            f"{report['batch_size']} rays ({report['batch_per_host']} per host, "
            f"{report['batch_per_device']} per device)",
        ),
        ("compute dtype", report["compute_dtype"]),
        ("grad_accum_steps", str(report["grad_accum_steps"])),
        ("per chip: params + opt state", f"{_gib(mem['params_bytes'])} + {_gib(mem['opt_state_bytes'])}"),
        ("per chip: batch", _gib(mem["batch_bytes"])),
    ]
    if "temporaries_bytes" in mem:
        rows += [
            ("per chip: XLA temporaries", _gib(mem["temporaries_bytes"])),
            ("per chip: generated code", _gib(mem["code_bytes"])),
        ]
    rows.append(
        (
            "per chip: total / HBM",
            f"{_used(mem)} / {_gib(mem['hbm_bytes'])}: " + ("fits" if report["fits"] else "DOES NOT FIT"),
        )
    )
    if len(report["search"]) > 1:
        rows.append(
            (
                "accumulation search",
                ", ".join(
                    f"{s['grad_accum_steps']}: {_used(s)}{'' if s['fits'] else ' (no)'}"
                    for s in report["search"]
                ),
            )
        )
    if "step" in report:
        step = report["step"]
        rows += [
            ("per step per chip: FLOPs", _si(step["flops"], "FLOP")),
            ("per step per chip: HBM accessed", _si(step["hbm_bytes"], "B")),
        ]
        for c in step["collectives"]:
            dtypes = ", ".join(f"{k} {_si(v, 'B')}" for k, v in sorted(c["bytes_by_dtype"].items()))
            rows.append(
                (
                    f"collective {c['kind']}",
                    f"{c['count']} x over {c['group_size']} devices, "
                    f"{_si(c['bytes'], 'B')} in all ({dtypes})",
                )
            )
        est = report["estimate"]
        rows += [
            (
                "estimate: step time",
                f"{est['step_seconds'] * 1e3:.2f} ms ({est['bound']} bound; "
                f"compute {est['compute_seconds'] * 1e3:.2f} ms at {_si(est['peak_flops'], 'FLOP/s')}, "
                f"HBM {est['memory_seconds'] * 1e3:.2f} ms at {_si(est['hbm_bandwidth'], 'B/s')})",
            ),
            ("estimate: rays/s", f"{est['rays_per_sec']:,.0f}"),
            ("estimate: schedule", f"{est['schedule_hours']:.2f} h for {est['schedule_steps']:,} steps"),
        ]
    if "render" in report:
        r = report["render"]
        text = f"{r['chunk_rays']} rays per call, {_gib(r['per_chip_bytes'])} per chip"
        if "estimate" in r:
            text += f", estimate {r['estimate']['rays_per_sec']:,.0f} rays/s ({r['estimate']['bound']} bound)"
        rows.append(("eval render call", text + ("" if r["fits"] else ", DOES NOT FIT")))
    width = max(len(k) for k, _ in rows)
    lines = [f"{k.ljust(width)}  {v}" for k, v in rows]
    if "estimate" in report:
        lines.append(f"({ESTIMATE_NOTE})")
    return "\n".join(lines)
