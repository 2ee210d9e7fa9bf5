"""``raynerf export pointcloud|mesh``: a trained run's geometry as PLY files.

Both read the run's own config (``WORKDIR/config.toml``) and newest checkpoint and
write, by default, ``WORKDIR/export/<scene>_{pointcloud,mesh}_step_<step>.ply`` in the
scene's COLMAP world frame and units (see :mod:`raynerf.export`).
"""

from __future__ import annotations

from pathlib import Path

import click

from raynerf import storage
from raynerf.cli.options import build_config, config_options, resolve_run, run_options, writable_dir

# (kept here rather than imported, so that `raynerf --help` does not load JAX)
FRAMES = ("colmap", "normalised")
SPACES = ("metric", "contracted")


def _common(func):
    """The options both exports take: scene, config, workdir, output file and frame."""
    func = click.option(
        "--frame",
        type=click.Choice(FRAMES),
        default="colmap",
        show_default=True,
        help="colmap: the COLMAP world frame and units of sparse/0; normalised: the model's frame.",
    )(func)
    func = click.option(
        "--out",
        type=click.Path(dir_okay=False, path_type=Path),
        default=None,
        help="The PLY file to write [default: WORKDIR/export/<scene>_<kind>_step_<step>.ply].",
    )(func)
    func = config_options(func)
    func = run_options(func)
    return func


def _prepare(
    scene: str | None, data_dir: str, config_name, overrides, workdir: str | None, out: Path | None
) -> tuple:
    """(config, scene folder, local workdir), with the output folder checked writable
    before anything is loaded or compiled."""
    local, scene_path = resolve_run(workdir, scene, data_dir)
    config = build_config(config_name, overrides, workdir=local)
    if out is not None:
        writable_dir(out.parent, "output folder")
    elif local.is_dir():  # (a missing one is reported as "train first")
        writable_dir(local / "export", "export folder")
    return config, scene_path, local


def _finish(local: Path, path: Path, out: Path | None) -> str:
    """Uploads a default output of a gs:// workdir; the path to report."""
    if out is not None:
        return str(path)
    storage.push(local, "export")
    return f"{storage.shown(local)}/export/{path.name}"


@click.group("export")
def export() -> None:
    """Export a trained run's geometry as PLY files: a coloured point cloud or mesh."""


@export.command("pointcloud")
@_common
@click.option(
    "--points", type=int, default=1_000_000, show_default=True, help="Points to write (at most those kept)."
)
@click.option(
    "--views", type=int, default=None, help="Training views to render, evenly spaced [default: all]."
)
@click.option(
    "--min-acc",
    type=float,
    default=0.9,
    show_default=True,
    help="Keep pixels whose rays gather at least this opacity within --radius.",
)
@click.option(
    "--radius",
    type=float,
    default=1.0,
    show_default=True,
    help="Keep points within this distance of the scene centre, in normalised units (the cameras "
    "lie in [-1, 1]^3; 1 is where the contraction starts).",
)
def pointcloud(
    workdir: str | None,
    scene: str | None,
    data_dir: str,
    config_name: str | None,
    overrides: tuple[str, ...],
    out: Path | None,
    frame: str,
    points: int,
    views: int | None,
    min_acc: float,
    radius: float,
) -> None:
    """Points at the rendered distance of the run's training views, coloured
    by the rendered colour, keeping the pixels the model is confident about."""
    from raynerf.export import default_output, load_run
    from raynerf.export.pointcloud import PointCloudOptions, point_cloud, write_points_ply

    options = PointCloudOptions(points=points, views=views, min_acc=min_acc, radius=radius, frame=frame)
    options.check()
    config, scene_path, local = _prepare(scene, data_dir, config_name, overrides, workdir, out)
    run = load_run(config, scene_path, local)
    cloud = point_cloud(run, options)
    path = out if out is not None else default_output(local, scene_path.name, "pointcloud", run.step)
    write_points_ply(path, cloud.xyz, cloud.rgb)
    click.echo(
        f"{_finish(local, path, out)}: {len(cloud.xyz):,} points (step {run.step}, {frame} frame) of "
        f"{cloud.kept:,} confident pixels, {cloud.kept / cloud.pixels:.1%} of the {cloud.pixels:,} "
        f"rendered in {cloud.views} training views"
    )


@export.command("mesh")
@_common
@click.option("--resolution", type=int, default=256, show_default=True, help="Grid points along each axis.")
@click.option(
    "--space",
    type=click.Choice(SPACES),
    default="metric",
    show_default=True,
    help="metric: the cube [-1, 1]^3 of the normalised frame (around the cameras); contracted: "
    "all of space, as the model's contraction maps it into the ball of radius 2.",
)
@click.option(
    "--density",
    type=float,
    default=None,
    help="The surface's density, per unit length of the normalised frame [default: where the "
    "field is half opaque over a training pixel's footprint: ln 2 / footprint at the centre].",
)
@click.option(
    "--min-faces",
    type=int,
    default=64,
    show_default=True,
    help="Drop the disconnected pieces with fewer faces (floaters); 0 keeps all.",
)
def mesh(
    workdir: str | None,
    scene: str | None,
    data_dir: str,
    config_name: str | None,
    overrides: tuple[str, ...],
    out: Path | None,
    frame: str,
    resolution: int,
    space: str,
    density: float | None,
    min_faces: int,
) -> None:
    """Marching cubes on the density of the run's NeRF level over a grid, with vertex
    colours from the model."""
    from raynerf.export import default_output, load_run
    from raynerf.export.mesh import MeshOptions, extract_mesh, write_mesh_ply

    options = MeshOptions(
        resolution=resolution, space=space, density=density, min_faces=min_faces, frame=frame
    )
    options.check()
    config, scene_path, local = _prepare(scene, data_dir, config_name, overrides, workdir, out)
    run = load_run(config, scene_path, local)
    result = extract_mesh(run, options)
    path = out if out is not None else default_output(local, scene_path.name, "mesh", run.step)
    write_mesh_ply(path, result.vertices, result.faces, result.colours)
    dropped = f", {result.dropped} pieces under {min_faces} faces dropped" if result.dropped else ""
    click.echo(
        f"{_finish(local, path, out)}: {len(result.vertices):,} vertices, {len(result.faces):,} faces "
        f"(step {run.step}, {frame} frame; {resolution}^3 {space} grid, surface at density "
        f"{result.density:.4g}{dropped})"
    )
