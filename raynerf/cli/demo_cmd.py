"""``raynerf demo``: the built-in scene, trained, evaluated and rendered in one command.

Training has two bounds: ``--steps`` is the schedule (learning-rate decay, proposal
annealing) and so fixes what every step computes, and ``--minutes`` is a wall-clock
budget after which the run stops with a checkpoint. A CPU's speed decides where a
demo stops, never what it computes: running the demo again resumes to the same
parameters a run straight through would have reached.
"""

from __future__ import annotations

import time
from pathlib import Path

import click

from raynerf.cli.eval_cmd import summary_line
from raynerf.cli.options import build_config
from raynerf.cli.render_cmd import render
from raynerf.data.cache import default_cache_dir
from raynerf.data.synthetic import default_scene
from raynerf.eval.evaluate import evaluate
from raynerf.training.loop import train

# The tiny config, with the warm-up shortened for a run of a few hundred steps (the
# paper's 512-step warm-up would keep the learning rate low for all of it).
DEMO_SETTINGS = ("train.lr_delay_steps=50",)
# Five minutes of the tiny step on a small CPU is a few hundred steps; the schedule spans
# 500 so that a faster machine (or a second run) goes on learning at a useful rate.
DEFAULT_STEPS = 500
DEFAULT_MINUTES = 5.0


def time_budget(minutes: float):
    """``should_stop(step)`` for :func:`raynerf.training.loop.train`: true once
    ``minutes`` have passed since its first call, that is since the first step
    (compiling it, and loading, are not counted); never when ``minutes <= 0``."""
    deadline: list[float] = []

    def should_stop(step: int) -> bool:
        if minutes <= 0:
            return False
        if not deadline:  # the first step starts the clock
            deadline.append(time.monotonic() + minutes * 60)
            return False
        return time.monotonic() >= deadline[0]

    return should_stop


def render_video(scene: Path, workdir: Path) -> str:
    """Runs ``raynerf render`` on the demo run; a line saying where the videos went."""
    render.main(
        ["--scene", scene.name, "--data-dir", str(scene.parent), "--workdir", str(workdir)],
        standalone_mode=False,
    )
    videos = sorted((workdir / "render").glob("*.mp4"))
    return ", ".join(str(v) for v in videos) if videos else f"none found in {workdir / 'render'}"


@click.command()
@click.option(
    "--workdir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("runs/demo"),
    show_default=True,
    help="Output folder; running the demo again resumes from it.",
)
@click.option(
    "--steps", type=int, default=DEFAULT_STEPS, show_default=True, help="Length of the training schedule."
)
@click.option(
    "--minutes",
    type=float,
    default=DEFAULT_MINUTES,
    show_default=True,
    help="Stop training (with a checkpoint) after this many minutes of steps "
    "(start-up and compiling not counted); 0: no limit.",
)
@click.option(
    "--render/--no-render",
    "with_render",
    default=True,
    show_default=True,
    help="Render a path video after evaluating.",
)
@click.option(
    "--set",
    "overrides",
    multiple=True,
    metavar="SECTION.KEY=VALUE",
    help="Override one value of the tiny config; repeatable.",
)
def demo(workdir: Path, steps: int, minutes: float, with_render: bool, overrides: tuple[str, ...]) -> None:
    """Train the tiny config on the built-in scene, evaluate it and render a video."""

    config = build_config("tiny", DEMO_SETTINGS + overrides, steps)
    cache_root = default_cache_dir(config.data.cache_dir)
    click.echo(f"built-in scene in {cache_root} (generated on first use, about half a minute)")
    scene = default_scene(cache_root)
    budget = f"at most {minutes:g} minutes" if minutes > 0 else "no time limit"
    click.echo(f"training the tiny config to step {steps} ({budget}) in {workdir}")
    result = train(config, scene, workdir, should_stop=time_budget(minutes))
    if result.step < steps:
        click.echo(f"stopped at step {result.step} of {steps}: run `raynerf demo` again to go on")
    summary = evaluate(config, scene, workdir)
    click.echo(summary_line(summary))
    videos = render_video(scene, workdir) if with_render else "not rendered (--no-render)"
    click.echo(
        "\n".join(
            [
                "demo done:",
                f"  scene        {scene}",
                f"  run          {workdir} (config.toml, metrics.jsonl, checkpoints/)",
                f"  tensorboard  tensorboard --logdir {workdir / 'tensorboard'}",
                f"  evaluation   {workdir / 'eval' / 'metrics.json'} and PNGs in {workdir / 'eval'}",
                f"  videos       {videos}",
            ]
        )
    )
