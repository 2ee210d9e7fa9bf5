"""``raynerf bench``: train-step, render and pipeline throughput on the devices at hand."""

from __future__ import annotations

import json
import os
from pathlib import Path

import click

from raynerf.cli.options import build_config, config_options


@click.command()
@config_options
@click.option("--batch-size", type=int, default=None, help="Override train.batch_size.")
@click.option(
    "--steps",
    "timed_steps",
    type=click.IntRange(min=0),
    default=5,
    show_default=True,
    help="Timed train steps (the median is reported); 0 compiles only (FLOPs, XLA's memory plan).",
)
@click.option("--render-chunk", type=int, default=4096, show_default=True)
@click.option(
    "--only",
    type=click.Choice(["train", "render", "pipeline"]),
    multiple=True,
    help="Run only these parts (repeatable).",
)
@click.option(
    "--json",
    "json_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Also write the results as JSON here.",
)
def bench(config_name, overrides, batch_size, timed_steps, render_chunk, only, json_path) -> None:
    """Measure steps/s, rays/s, FLOPs, MFU, render and input-pipeline speed, and peak memory."""
    from raynerf import bench as benchmarks

    if batch_size is not None:
        overrides = overrides + (f"train.batch_size={batch_size}",)
    config = build_config(config_name, overrides)
    result = benchmarks.run(config, timed_steps, render_chunk, tuple(only) or ("train", "render", "pipeline"))
    result["config"] = config_name or "360"
    _print_table(result)
    if json_path is not None:
        tmp = json_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(result, indent=2))
        os.replace(tmp, json_path)


def _print_table(r: dict) -> None:
    rows = [
        ("device", f"{r['device_count']} x {r['device_kind']} ({r['backend']})"),
        ("config / batch", f"{r['config']} / {r['batch_size']} ({r['compute_dtype']})"),
        ("matmul peak", f"{r['matmul_peak_flops'] / 1e9:.1f} GFLOP/s ({r['compute_dtype']})"),
    ]
    if "train" in r:
        t = r["train"]
        if "rays_per_sec" in t:
            rows += [
                ("train rays/s", f"{t['rays_per_sec']:.0f}"),
                ("train steps/s", f"{t['steps_per_sec']:.3f}"),
            ]
        rows += [
            ("train compile", f"{t['compile_seconds']:.1f} s"),
            ("train FLOPs/ray", f"{t['flops_per_ray'] / 1e6:.1f} MFLOP"),
        ]
        if "mfu" in t:
            rows += [("train MFU", f"{100 * t['mfu']:.1f} % of the matmul peak")]
        if "xla_temp_bytes" in t:
            rows += [
                (
                    "train XLA buffers",
                    f"{t['xla_temp_bytes'] / 2**30:.2f} GiB temporaries + "
                    f"{t['xla_argument_bytes'] / 2**30:.2f} GiB arguments "
                    f"({t['grad_accum_steps']} micro-batch(es))",
                )
            ]
    if "render" in r:
        rows += [("render rays/s", f"{r['render']['rays_per_sec']:.0f}")]
    if "pipeline" in r:
        rows += [("pipeline rays/s", f"{r['pipeline']['rays_per_sec']:.0f}")]
    rows += [("peak memory", f"{r['peak_memory_bytes'] / 2**30:.2f} GiB")]
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        click.echo(f"{key:<{width}}  {value}")
