"""``raynerf render``: render a camera path with a pool of Ray workers into three videos."""

from __future__ import annotations

import os
from pathlib import Path

import click

from raynerf.cli.options import (
    build_config,
    config_options,
    default_workdir,
    scene_dir,
    scene_options,
    workdir_option,
    writable_dir,
)


@click.command("render")
@scene_options
@config_options
@workdir_option("The training run's folder [default: runs/<scene>].")
@click.option("--frames", type=int, default=None, help="Frames in the path [default: render.frames, 50].")
@click.option("--fps", type=float, default=None, help="Video frame rate [default: render.fps, 5].")
@click.option(
    "--workers",
    type=int,
    default=None,
    help="Render workers [default: one per TPU host, per GPU, or per CPU node].",
)
@click.option(
    "--factor",
    type=int,
    default=None,
    help="Render at the test camera's size for images_<factor> [default: the run's factor].",
)
@click.option("--resolution", default=None, metavar="WxH", help="Render at this size instead of --factor.")
@click.option(
    "--focal",
    type=float,
    default=None,
    help="Focal length in pixels with --resolution [default: the test camera's field of view].",
)
@click.option(
    "--keyframes",
    multiple=True,
    metavar="NAME",
    help="A spline path through these images (repeat, or separate with commas).",
)
@click.option(
    "--path",
    "path_file",
    type=click.Path(path_type=Path),
    default=None,
    metavar="FILE",
    help="Render the camera path in FILE: raynerf's path JSON or nerfstudio's camera_path.json "
    "(see README, Camera paths).",
)
@click.option("--path-json", type=click.Path(path_type=Path), default=None, hidden=True)
@click.option(
    "--path-transforms",
    type=click.Path(path_type=Path),
    default=None,
    metavar="FILE",
    help="nerfstudio's dataparser_transforms.json: map a nerfstudio --path from nerfstudio's frame "
    "into the scene's [default: the path is in raynerf's normalised scene frame].",
)
@click.option(
    "--export-path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Also write the path (poses and intrinsics) to this JSON file.",
)
@click.option(
    "--z-variation",
    type=float,
    default=None,
    help="Height wave of the ellipse or arc path, a fraction of the cameras' spread.",
)
@click.option("--z-phase", type=float, default=None, help="Phase of the height wave, radians.")
@click.option("--address", default=None, help="Ray cluster to use (host:port) [default: start one here].")
@click.option(
    "--keep-frames", is_flag=True, help="Keep the per-frame .npz files under WORKDIR/render/frames."
)
def render(
    scene: str,
    data_dir: str,
    config_name: str | None,
    overrides: tuple[str, ...],
    workdir: str | None,
    frames: int | None,
    fps: float | None,
    workers: int | None,
    factor: int | None,
    resolution: str | None,
    focal: float | None,
    keyframes: tuple[str, ...],
    path_file: Path | None,
    path_json: Path | None,
    path_transforms: Path | None,
    export_path: Path | None,
    z_variation: float | None,
    z_phase: float | None,
    address: str | None,
    keep_frames: bool,
) -> None:
    """Render a path around DATA_DIR/SCENE with the latest checkpoint into
    WORKDIR/render/<scene>_path_renders_step_<step>_{color,acc,distance_mean}.mp4."""
    # The driver only restores parameters; the accelerators are left to the workers.
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
    from raynerf.errors import RaynerfError
    from raynerf.render.job import RenderRequest, parse_resolution, render_path

    if path_file is not None and path_json is not None and path_file != path_json:
        raise RaynerfError("give the path file once: --path FILE (--path-json is its old name)")

    workdir = default_workdir(workdir, scene)
    config = build_config(config_name, overrides, workdir=workdir)
    if workdir.is_dir():  # (a missing one is reported as "train first")
        writable_dir(workdir / "render", "render folder")
    request = RenderRequest(
        frames=frames,
        fps=fps,
        workers=workers,
        factor=factor,
        resolution=parse_resolution(resolution) if resolution is not None else None,
        focal=focal,
        keyframes=tuple(name.strip() for item in keyframes for name in item.split(",") if name.strip()),
        path_json=path_file if path_file is not None else path_json,
        path_transforms=path_transforms,
        export_path=export_path,
        z_variation=z_variation,
        z_phase=z_phase,
        keep_frames=keep_frames,
    )
    result = render_path(config, scene_dir(data_dir, scene), workdir, request, address=address)
    for path in result.videos.values():
        click.echo(str(path))
    if result.rendered:
        click.echo(
            f"{result.rendered} frames of {result.width}x{result.height} with {result.workers} workers "
            f"in {result.seconds:.1f} s: {result.frames_per_sec:.2f} frames/s, "
            f"{result.rays_per_sec:,.0f} rays/s; worker peak RSS {result.worker_peak_rss / 2**20:.0f} MiB"
            + (f"; {result.reused} frames resumed from disk" if result.reused else "")
        )
