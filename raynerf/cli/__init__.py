"""The ``raynerf`` command line: a click group whose commands live one per module.

Every command reports a :class:`~raynerf.errors.RaynerfError` as a single
``Error: ...`` line with exit code 1 (see :class:`RaynerfGroup`). SIGTERM (what a
preempted VM, Ray or a job scheduler sends) is handled like Ctrl-C by every command.
"""

from __future__ import annotations

import importlib
import os
import signal
import sys
import threading

import click

from raynerf.errors import RaynerfError

# command name -> "module:function"; modules are imported only when their command runs,
# so `raynerf --help` stays fast and a command's heavy imports don't slow the others.
COMMANDS = {
    "make-scene": "raynerf.cli.scene_cmds:make_scene",
    "info": "raynerf.cli.scene_cmds:info",
    "train": "raynerf.cli.train_cmd:train",
    "eval": "raynerf.cli.eval_cmd:eval_",
    "render": "raynerf.cli.render_cmd:render",
    "demo": "raynerf.cli.demo_cmd:demo",
    "bench": "raynerf.cli.bench_cmd:bench",
    "plan": "raynerf.cli.plan_cmd:plan",
    "export": "raynerf.cli.export_cmd:export",
    "view": "raynerf.cli.view_cmd:view",
}


class RaynerfGroup(click.Group):
    """Lazily loaded commands; user errors become one ``Error:`` line."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(COMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        return self._load(name)

    @staticmethod
    def _load(name: str) -> click.Command | None:
        target = COMMANDS.get(name)
        if target is None:
            return None
        module_name, attr = target.split(":")
        return getattr(importlib.import_module(module_name), attr)

    def invoke(self, ctx: click.Context):
        treat_sigterm_as_ctrl_c()
        try:
            return super().invoke(ctx)
        except RaynerfError as exc:
            raise click.ClickException(str(exc)) from None


def _forward_to_sigint(signum, frame) -> None:
    """SIGTERM handler: does what the current Ctrl-C handler does (``train`` stops after
    the step with a checkpoint; the other commands stop with KeyboardInterrupt)."""
    handler = signal.getsignal(signal.SIGINT)
    if callable(handler) and handler is not _forward_to_sigint:
        handler(signal.SIGINT, frame)
    else:  # the default, or Ctrl-C ignored (a background job of a script): stop anyway
        raise KeyboardInterrupt


def _redeliver_swallowed_interrupts(unraisable) -> None:
    """``sys.unraisablehook``: a KeyboardInterrupt raised while Python ran a finaliser or
    a garbage-collector callback (JAX registers one) cannot propagate, so Python would
    print it as "Exception ignored" and carry on as if never interrupted. Instead, Ctrl-C
    is sent again, shortly, from another thread: its handler then runs in the command's
    own code. The late callbacks of :func:`_is_late_loop_callback` are dropped; other
    unraisable exceptions go to Python's default hook."""
    if isinstance(unraisable.exc_value, KeyboardInterrupt):
        threading.Timer(0.01, os.kill, (os.getpid(), signal.SIGINT)).start()
        return
    if _is_late_loop_callback(unraisable.exc_type, unraisable.exc_value, unraisable.exc_traceback):
        return
    if _is_abandoned_orbax_read(unraisable.object):
        return
    sys.__unraisablehook__(unraisable)


def _is_late_loop_callback(exc_type, value, tb) -> bool:
    """Whether an exception is what tensorstore reports (as unraisable) when a read of
    a failed orbax restore (a damaged checkpoint) finishes after orbax has closed its
    asyncio loop: "Event loop is closed", raised in asyncio's ``_check_closed``. Noise,
    printed as tracebacks around the one-line error (seen under load)."""
    last = tb
    while last is not None and last.tb_next is not None:
        last = last.tb_next
    late = (
        exc_type is RuntimeError
        and str(value) == "Event loop is closed"
        and last is not None
        and last.tb_frame.f_code.co_name == "_check_closed"
    )
    return late


def _is_abandoned_orbax_read(obj) -> bool:
    """Whether an unraisable exception belongs to one of orbax's per-array read
    coroutines left behind when a restore failed on another array (a damaged
    checkpoint): reported when the coroutine is collected, after the one-line note."""
    code = getattr(obj, "cr_code", None)
    return code is not None and f"{os.sep}orbax{os.sep}" in code.co_filename


def treat_sigterm_as_ctrl_c() -> None:
    """Installs :func:`_forward_to_sigint` for SIGTERM (in the main thread only) and
    :func:`_redeliver_swallowed_interrupts`, so that neither signal is lost.

    pycolmap's import would replace the SIGTERM handler with glog's aborting one;
    :mod:`raynerf.data.colmap_lib` imports pycolmap so that it does not.
    """
    if threading.current_thread() is threading.main_thread():  # (CliRunner may run in a thread)
        signal.signal(signal.SIGTERM, _forward_to_sigint)
        sys.unraisablehook = _redeliver_swallowed_interrupts


@click.group(cls=RaynerfGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="raynerf")
def main() -> None:
    """Mip-NeRF 360 in JAX: train, evaluate and render scenes, from a CPU to a TPU pod."""


def entry() -> None:
    """The ``raynerf`` console script: sets the allocator tunables (see
    :mod:`raynerf.hostmem`) by re-executing itself once, then runs the CLI."""
    import sys

    from raynerf.hostmem import reexec_with_malloc_tunables

    reexec_with_malloc_tunables(["-m", "raynerf.cli", *sys.argv[1:]])
    main(prog_name="raynerf")
