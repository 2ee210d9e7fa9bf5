"""``raynerf eval``: score the latest checkpoint on the test views."""

from __future__ import annotations

import click

from raynerf import storage
from raynerf.cli.options import (
    build_config,
    config_options,
    default_workdir,
    scene_dir,
    scene_options,
    workdir_option,
    writable_dir,
)


@click.command("eval")
@scene_options
@config_options
@workdir_option("The training run's folder [default: runs/<scene>].")
def eval_(
    scene: str, data_dir: str, config_name: str | None, overrides: tuple[str, ...], workdir: str | None
) -> None:
    """Render every test view of DATA_DIR/SCENE; write PSNR/SSIM to WORKDIR/eval/metrics.json."""
    from raynerf.eval.evaluate import evaluate

    workdir = default_workdir(workdir, scene)
    config = build_config(config_name, overrides, workdir=workdir)
    if workdir.is_dir():  # (a missing one is reported as "train first")
        writable_dir(workdir / "eval", "eval folder")
    summary = evaluate(config, scene_dir(data_dir, scene), workdir)
    click.echo(summary_line(summary) + f" -> {storage.shown(workdir)}/eval/metrics.json")


def summary_line(summary: dict) -> str:
    """One line of the scores in an eval summary (None, i.e. infinite PSNR, as 'inf')."""
    number = lambda value, spec: "inf" if value is None else format(value, spec)
    line = (
        f"{summary['scene']} step {summary['step']}: PSNR {number(summary['psnr'], '.2f')} dB, "
        f"SSIM {summary['ssim']:.4f}"
    )
    if summary.get("lpips") is not None:
        line += f", LPIPS({summary['lpips_net']}) {summary['lpips']:.4f}"
    if summary.get("depth_median_abs_error") is not None:
        line += f", depth median abs error {summary['depth_median_abs_error']:.4f}"
    return line + f" over {summary['num_images']} test views"
