"""Where one train step's device time goes: a ``jax.profiler`` trace of a few steps,
the kernels (GPU) or XLA ops (CPU) summed by kind and by name.

    python benchmarks/step_profile.py --config 360 --batch-size 16384 \\
        [--set model.compute_dtype=bfloat16] [--steps 3]

On a GPU it sums the kernels of the device's streams; on the CPU the XLA ops of the
host's threads (two ops that run at once on two threads both count in full, so the
sum can exceed the step's wall time).
"""

from __future__ import annotations

import argparse
import collections
import glob
import gzip
import json
import re
import statistics
import tempfile

import jax

from raynerf.bench import synthetic_train_setup, time_steps
from raynerf.config import load_config
from raynerf.mesh import make_mesh

KINDS = (
    ("matmul", ("gemm", "nvjet", "cutlass", "xmma", "cublas", "dot", "ynn_fusion")),
    ("sort", ("sort",)),
    ("reduce", ("reduce",)),
    ("concatenate", ("concatenate",)),
    ("copy", ("memcpy", "memset", "copy")),
)


def kind(name: str) -> str:
    lower = name.lower()
    for label, needles in KINDS:
        if any(n in lower for n in needles):
            return label
    return "other"


def device_events(trace: dict) -> list[dict]:
    """Complete events of the GPU's streams, else of the host's XLA ops."""
    names = {
        e["pid"]: e["args"]["name"]
        for e in trace["traceEvents"]
        if e.get("ph") == "M" and e.get("name") == "process_name"
    }
    events = [e for e in trace["traceEvents"] if e.get("ph") == "X"]
    gpu = [e for e in events if "GPU" in names.get(e["pid"], "")]
    if gpu:
        return gpu
    return [
        e
        for e in events
        if ".py" not in e["name"]
        and "Thunk" not in e["name"]
        and "Pjit" not in e["name"]
        and not e["name"].startswith("end:")
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="360")
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--top", type=int, default=25)
    args = parser.parse_args()
    config = load_config(args.config, args.overrides)
    if args.batch_size:
        config = config.replace({"train": {"batch_size": args.batch_size}})
    mesh = make_mesh()
    setup = synthetic_train_setup(config, mesh)
    state, batch, step_fn = setup.state, setup.batch, setup.step_fn
    step = step_fn.lower(state, batch).compile()
    state, times = time_steps(step, state, batch, args.steps)
    wall = statistics.median(times)
    with tempfile.TemporaryDirectory() as trace_dir:
        jax.profiler.start_trace(trace_dir)
        for _ in range(args.steps):
            state, metrics = step(state, batch)
            jax.block_until_ready(metrics)
        jax.profiler.stop_trace()
        path = sorted(glob.glob(f"{trace_dir}/**/*.trace.json.gz", recursive=True))[-1]
        with gzip.open(path) as f:
            events = device_events(json.load(f))
    by_name: collections.Counter = collections.Counter()
    for e in events:
        by_name[e["name"]] += e.get("dur", 0) / 1e3 / args.steps  # ms per step
    total = sum(by_name.values())
    print(
        f"{jax.devices()[0].device_kind}, {args.config}, batch {config.train.batch_size}: "
        f"step {wall * 1e3:.1f} ms wall, {total:.1f} ms of kernels/ops per step"
    )
    by_kind: collections.Counter = collections.Counter()
    for name, ms in by_name.items():
        by_kind[kind(name)] += ms
    for label, ms in by_kind.most_common():
        print(f"  {ms:9.2f} ms {100 * ms / total:5.1f}%  {label}")
    print("top kernels/ops (ms per step):")
    for name, ms in by_name.most_common(args.top):
        name = re.sub(r"\s+", " ", name)[:110]
        print(f"  {ms:9.2f} ms  {name}")


if __name__ == "__main__":
    main()
