"""``raynerf view``: a web viewer of a trained run, with a camera-path editor."""

from __future__ import annotations

import time

import click

from raynerf import storage
from raynerf.cli.options import build_config, config_options, resolve_run, run_options

MAX_HEIGHT = 720


@click.command("view")
@run_options
@config_options
@click.option(
    "--host",
    default="127.0.0.1",
    show_default=True,
    help="Address to serve on; 0.0.0.0 lets other machines connect (the viewer has no login).",
)
@click.option(
    "--port", type=click.IntRange(1, 65535), default=8080, show_default=True, help="Port to serve on."
)
@click.option(
    "--follow/--no-follow",
    default=True,
    show_default=True,
    help="Show newer checkpoints as a run still training writes them.",
)
@click.option(
    "--max-height",
    type=click.IntRange(32, 2160),
    default=MAX_HEIGHT,
    show_default=True,
    help="Largest image height rendered (a slower device renders less, to stay responsive).",
)
@click.option(
    "--path-file",
    default=None,
    help="Where 'Save path' writes the camera path [default: WORKDIR/render/viewer_path.json].",
)
def view(
    workdir: str | None,
    scene: str | None,
    data_dir: str,
    config_name: str | None,
    overrides: tuple[str, ...],
    host: str,
    port: int,
    follow: bool,
    max_height: int,
    path_file: str | None,
) -> None:
    """Serve a web viewer of the run in WORKDIR (the newest checkpoint) until Ctrl-C."""
    import jax

    from raynerf.export import load_run
    from raynerf.render.job import render_intrinsics
    from raynerf.training.checkpoints import load_trained_params
    from raynerf.view.frames import FrameRenderer
    from raynerf.view.server import Viewer, newest_checkpoint

    local, scene_path = resolve_run(workdir, scene, data_dir)
    config = build_config(config_name, overrides, workdir=local)
    run = load_run(config, scene_path, local)
    chunk = 4096 if jax.default_backend() == "cpu" else 32768
    renderer = FrameRenderer(config.model, run.params, chunk=chunk)
    started = time.perf_counter()
    speed = renderer.warm_up()
    click.echo(f"compiled the renderer in {time.perf_counter() - started:.1f} s; {speed:,.0f} rays/s")
    size = render_intrinsics(run.scene)
    load = lambda: load_trained_params(config, scene_path, local, run.mesh)
    viewer = Viewer(
        renderer,
        run.scene,
        run.step,
        path_file=path_file or str(local / "render" / "viewer_path.json"),
        path_size=(size["width"], size["height"]),
        frames=config.render.frames,
        newest=newest_checkpoint(storage.checkpoint_dir(local), load) if follow else None,
        host=host,
        port=port,
        max_height=max_height,
    )
    click.echo(f"viewing {storage.shown(local)} at step {run.step}: {viewer.url} (Ctrl-C to stop)")
    try:
        while True:
            time.sleep(1.0)
    except KeyboardInterrupt:
        pass
    finally:
        viewer.close()
