"""``raynerf plan --tpu SLICE``: the train step and eval render call compiled for a TPU
pod slice on this machine (no TPU needed), with memory, fit, cost and estimates."""

from __future__ import annotations

import json
import os
from pathlib import Path

import click

from raynerf.cli.options import build_config, config_options


@click.command()
@click.option(
    "--tpu",
    "slice_name",
    required=True,
    metavar="SLICE",
    help="Accelerator type as Google Cloud names it: v4-8, v4-32, v5litepod-16, v5p-32, v6e-16, ...",
)
@config_options
@click.option(
    "--hbm-gib",
    type=click.FloatRange(min=0, min_open=True),
    default=None,
    help="HBM per device to fit into, in GiB [default: the chip's published size].",
)
@click.option("--no-render", is_flag=True, help="Skip compiling the eval render call.")
@click.option(
    "--json",
    "json_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Also write the plan as JSON here.",
)
def plan(
    slice_name: str,
    config_name: str | None,
    overrides: tuple[str, ...],
    hbm_gib: float | None,
    no_render: bool,
    json_path: Path | None,
) -> None:
    """Compile the real train step for a TPU slice and say whether it fits and how fast
    it could run (roofline estimates). Run it before `ray up`.

    Needs libtpu (pip install 'raynerf[tpu]'); compiling 360 takes minutes on a laptop.
    """
    from raynerf.distributed.slices import parse_slice

    tpu_slice = parse_slice(slice_name)  # an unknown name fails here, before any import of jax
    config = build_config(config_name, overrides)
    # The planner compiles for the slice's devices and runs nothing: keep JAX itself on
    # the CPU, so that on a TPU VM it does not claim the chips a training job may hold.
    import jax

    if not os.environ.get("JAX_PLATFORMS"):
        jax.config.update("jax_platforms", "cpu")
    from raynerf.distributed.plan import format_plan
    from raynerf.distributed.plan import plan as make_plan

    hbm = None if hbm_gib is None else int(hbm_gib * 2**30)
    report = make_plan(
        config, tpu_slice, hbm_bytes=hbm, render=not no_render, log=lambda line: click.echo(line, err=True)
    )
    report["config"] = config_name or "360"
    report["overrides"] = list(overrides)
    click.echo(format_plan(report))
    if json_path is not None:
        tmp = json_path.with_name(json_path.name + ".tmp")
        tmp.write_text(json.dumps(report, indent=2))
        os.replace(tmp, json_path)
