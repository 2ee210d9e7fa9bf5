"""``raynerf train``: train (or resume) a scene into a workdir."""

from __future__ import annotations

import contextlib
import os
import signal
import threading

import click

from raynerf import storage
from raynerf.cli import treat_sigterm_as_ctrl_c
from raynerf.cli.options import (
    build_config,
    config_options,
    default_workdir,
    scene_dir,
    scene_options,
    workdir_option,
    writable_dir,
)


@click.command()
@scene_options
@config_options
@click.option("--steps", type=int, default=None, help="Override train.max_steps.")
@workdir_option("Output folder [default: runs/<scene>]. Running again resumes from it.")
@click.option(
    "--hosts",
    type=int,
    default=None,
    help="Hosts (Ray workers) in the SPMD job [default: one per TPU VM on a TPU "
    "cluster, else 1]. Locally, N worker processes.",
)
@click.option(
    "--devices-per-host",
    type=int,
    default=None,
    help="CPU devices per local host process [default: 1; a TPU host uses its chips].",
)
@click.option(
    "--address",
    default=None,
    help="Ray cluster to join ('auto' on a cluster node) [default: $RAY_ADDRESS, else a local Ray instance].",
)
@click.option(
    "--max-restarts",
    type=int,
    default=3,
    show_default=True,
    help="Restarts of the host group from the latest checkpoint after a host dies.",
)
@click.option(
    "--stall-warning",
    type=float,
    default=None,
    metavar="SECONDS",
    help="Warn about a host that finishes no logged step for this long "
    "[default: $RAYNERF_STALL_WARNING_S, else 300].",
)
def train(
    scene: str,
    data_dir: str,
    config_name: str | None,
    overrides: tuple[str, ...],
    steps: int | None,
    workdir: str | None,
    hosts: int | None,
    devices_per_host: int | None,
    address: str | None,
    max_restarts: int,
    stall_warning: float | None,
) -> None:
    """Train Mip-NeRF 360 on DATA_DIR/SCENE; resumes from the workdir's latest checkpoint.

    With --hosts N (N > 1) or a Ray cluster (--address, $RAY_ADDRESS) this command is a
    Ray driver: one worker per host runs the same training program over a global mesh.
    """
    workdir = default_workdir(workdir, scene)
    config = build_config(config_name, overrides, steps, workdir=workdir)
    path = scene_dir(data_dir, scene)
    for folder, what in ((workdir, "workdir"), (workdir / "checkpoints", "checkpoint folder")):
        writable_dir(folder, what)
    if (hosts or 1) > 1 or address or os.environ.get("RAY_ADDRESS"):
        from raynerf.distributed.launch import train_on_hosts

        treat_sigterm_as_ctrl_c()  # again, after the imports (see there)
        outcome = train_on_hosts(
            config,
            path,
            workdir.absolute(),
            hosts=hosts,
            devices_per_host=devices_per_host,
            address=address,
            max_restarts=max_restarts,
            stall_after_s=stall_warning,
        )
        if outcome.stopped:
            click.echo(
                f"stopped at step {outcome.step} with a checkpoint in "
                f"{storage.checkpoint_dir(workdir)}; run again to resume"
            )
            raise SystemExit(130)
        click.echo(
            f"trained {scene} to step {outcome.step} ({len(outcome.restarts)} restart(s)); "
            f"checkpoints in {storage.checkpoint_dir(workdir)}"
        )
        return
    if devices_per_host:
        from raynerf.distributed.jaxdist import set_local_devices

        set_local_devices(devices_per_host)
    from raynerf.training.loop import train as run_training

    with _interrupt_flag() as interrupted:
        result = run_training(config, path, workdir, should_stop=lambda _: interrupted.is_set())
    if interrupted.is_set():
        click.echo(
            f"stopped at step {result.step} with a checkpoint in "
            f"{storage.checkpoint_dir(workdir)}; run again to resume"
        )
        raise SystemExit(130)
    click.echo(f"trained {scene} to step {result.step}; checkpoints in {storage.checkpoint_dir(workdir)}")


@contextlib.contextmanager
def _interrupt_flag():
    """A flag set by the first Ctrl-C, so the loop stops between steps (a step's state
    is donated, so it cannot be saved from inside one); a second Ctrl-C aborts."""
    flag = threading.Event()

    def handler(signum, frame):
        if flag.is_set():
            raise KeyboardInterrupt
        flag.set()
        click.echo(
            "\ninterrupted: stopping after this step with a checkpoint (Ctrl-C again to abort)", err=True
        )

    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield flag
    finally:
        signal.signal(signal.SIGINT, previous)
