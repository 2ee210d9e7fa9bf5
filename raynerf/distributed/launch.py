"""The Ray driver of a multi-host training run.

:func:`launch` connects to a Ray cluster (``address``, or ``$RAY_ADDRESS``) or starts
a private local Ray instance (with a watchdog that ends it if the driver dies), runs
the host group (:mod:`raynerf.distributed.hosts`) in a background thread, and
meanwhile shows the progress bar from what process 0 reports, warns about a host
that makes no progress (naming a silent one as hung), prints each restart with its
cause, and turns Ctrl-C into a graceful stop:
every host saves a checkpoint at one agreed step, then the run ends. A second Ctrl-C
abandons the run at once. A failed run raises :class:`HostGroupError` naming the
failing host and its error (a user error in a worker, e.g. a bad scene folder,
comes back as that worker's own :class:`~raynerf.errors.RaynerfError` message).

``JaxTrainer.fit()`` runs in a thread on purpose: called from the main thread it
installs a SIGINT handler that aborts the controller, which kills the workers
without a checkpoint. From another thread it installs none, and the main thread's
Ctrl-C becomes the graceful stop above.
"""

from __future__ import annotations

import dataclasses
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from raynerf.config import Config
from raynerf.distributed import reaper
from raynerf.distributed.hosts import (
    HostGroupSpec,
    RunMonitor,
    describe_failures,
    make_trainer,
    stall_warnings,
)
from raynerf.errors import RaynerfError
from raynerf.training.progress import ProgressBar

POLL_SECONDS = 0.25
# How often Ray Train's controller polls its workers (Ray's default: 2 s). It bounds
# how fast a dead host is noticed; a user's own setting wins.
HEALTH_CHECK_ENV = "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S"
HEALTH_CHECK_SECONDS = "0.5"

# A host that finishes no logged step for this long gets a warning naming it (and saying
# whether its process still responds). $RAYNERF_STALL_WARNING_S sets it.
STALL_ENV = "RAYNERF_STALL_WARNING_S"
DEFAULT_STALL_SECONDS = 300.0

# The watchdog of the local Ray instance this process started (None: none started).
_watchdog = None


class HostGroupError(RaynerfError):
    """Training failed on a host (after the allowed restarts)."""


@dataclasses.dataclass
class LaunchResult:
    step: int  # the last step trained (and checkpointed)
    metrics: dict  # process 0's last logged metrics
    stopped: bool  # ended early by Ctrl-C, with a checkpoint at ``step``
    restarts: list[dict]  # the restart events, in order
    timings: dict  # seconds: group_start (launch -> first step logged), restart_<n>


def connect(address: str | None, num_cpus: int | None, say: Callable[[str], None] = print) -> bool:
    """Connects to Ray (``address``, else ``$RAY_ADDRESS``) or starts a private local
    instance, and says which. Returns whether this call started (and so must shut down) Ray.

    Without an address the instance is always a new, private one (``address="local"``)
    with a watchdog (:mod:`raynerf.distributed.reaper`) that ends it if this process dies,
    even when ``ray start`` left a cluster running on this machine: a bare ``ray.init()``
    would attach to that cluster on its own and then refuse ``num_cpus``. The user who
    wants that cluster says so with ``--address auto``.
    """
    if ray.is_initialized():
        return False
    address = address or os.environ.get("RAY_ADDRESS") or None
    if address:
        ray.init(address=address, log_to_driver=False)
        say(f"Ray: attached to the cluster at {address} ({_gcs_address()})")
        return False
    running = _recorded_cluster()
    global _watchdog
    _watchdog = reaper.start()
    try:
        ray.init(address="local", num_cpus=num_cpus, include_dashboard=False, log_to_driver=False)
    except BaseException:
        shutdown_local()
        raise
    note = (
        f"; the cluster `ray start` left at {running} is not used: pass --address auto to train on it"
        if running
        else ""
    )
    say(f"Ray: started a private local instance ({_gcs_address()}), shut down at exit{note}")
    return True


def shutdown_local() -> None:
    """Shuts down the local instance :func:`connect` started, and its watchdog."""
    global _watchdog
    ray.shutdown()
    if _watchdog is not None:
        reaper.stop(_watchdog)
        _watchdog = None


def _recorded_cluster() -> str | None:
    """The address ``ray start`` recorded on this machine (what a bare ``ray.init()`` would
    attach to), or None. Ray keeps this lookup private, so a Ray without it means None."""
    try:
        from ray._private.services import find_bootstrap_address

        return find_bootstrap_address(None)
    except (ImportError, AttributeError, OSError):
        return None


def _gcs_address() -> str:
    return ray.get_runtime_context().gcs_address


def launch(
    config: Config,
    scene_path: Path,
    workdir: Path,
    spec: HostGroupSpec,
    *,
    address: str | None = None,
    show_progress: bool = True,
    on_state: Callable[[dict], None] | None = None,
    stall_after_s: float | None = None,
) -> LaunchResult:
    """Trains ``scene_path`` into ``workdir`` on the host group ``spec``.

    ``on_state(state)``, if given, sees the monitor's state (``attempt``, ``step``,
    ``pids`` of the current group by rank, ``events``, ``hosts``, ...) and the
    driver's ``stall_warnings`` so far at every poll. A host that makes no progress for
    ``stall_after_s`` seconds (default :func:`stall_seconds`) is warned about.
    """
    started_ray = connect(address, num_cpus=max(os.cpu_count() or 1, int(spec.hosts * spec.cpus_per_host)))
    try:
        return _run(config, Path(scene_path), Path(workdir), spec, show_progress, on_state, stall_after_s)
    finally:
        if started_ray:
            shutdown_local()


def start_monitor():
    """A :class:`RunMonitor` on the driver's own node.

    A worker node that is lost (a preempted VM) must not take the run's side channel
    with it. The affinity is hard: Ray places a zero-resource actor given a soft one on
    any node it likes (measured on Ray 2.60: 1 in 12 on the driver's node).
    """
    here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False)
    return RunMonitor.options(scheduling_strategy=here).remote()


def _run(
    config: Config,
    scene_path: Path,
    workdir: Path,
    spec: HostGroupSpec,
    show_progress: bool,
    on_state: Callable[[dict], None] | None,
    stall_after_s: float | None = None,
) -> LaunchResult:
    t0 = time.time()
    stall_after_s = stall_seconds() if stall_after_s is None else stall_after_s
    os.environ.setdefault(HEALTH_CHECK_ENV, HEALTH_CHECK_SECONDS)  # read by fit(), passed on
    monitor = start_monitor()
    trainer = make_trainer(spec, config, scene_path, workdir, monitor)
    outcome: dict = {}
    done = threading.Event()

    def fit() -> None:
        try:
            outcome["result"] = trainer.fit()
        except BaseException as exc:  # noqa: BLE001 - handed to the main thread
            outcome["error"] = exc
        finally:
            done.set()

    thread = threading.Thread(target=fit, name="raynerf-host-group", daemon=True)
    thread.start()
    bar = ProgressBar(config.train.max_steps, enabled=show_progress)
    bar.write(
        f"host group: {spec.hosts} x {spec.platform} host(s), "
        f"{spec.devices_per_host} device(s) each, up to {spec.max_restarts} restart(s)"
    )
    seen_events = 0
    stopping = False
    state: dict = {}
    warned: set = set()  # the stall warnings given in the current attempt
    said: list[str] = []  # every stall warning given
    attempt = 0
    try:
        # Not thread.join(): a Ctrl-C that interrupts join() can leave the thread
        # looking finished while it still runs (CPython's is_alive() after an
        # interrupted join), so the main thread sleeps and reads an Event.
        while not done.is_set():
            try:
                time.sleep(POLL_SECONDS)
                state = ray.get(monitor.state.remote())
                if state["attempt"] != attempt:
                    attempt, warned = state["attempt"], set()
                # Once a failure is recorded the group is being torn down: its hosts
                # fall silent as they are ended, which is no news.
                hosts = state["hosts"] if state["failure"] is None else {}
                for line in stall_warnings(hosts, stall_after_s, warned):
                    said.append(line)
                    bar.write(f"warning: {line}")
                state["stall_warnings"] = list(said)
                if on_state is not None:
                    on_state(state)
                for event in state["events"][seen_events:]:
                    bar.write(
                        f"restart {event['restart']}/{spec.max_restarts} after step "
                        f"{event['step']}: {event['cause']}; resuming from the latest checkpoint"
                    )
                seen_events = len(state["events"])
                if state["step"] is not None:
                    bar.update(state["step"], state["metrics"])
            except KeyboardInterrupt:
                if stopping:
                    raise
                stopping = True
                monitor.request_stop.remote()
                bar.write(
                    "Ctrl-C: every host saves a checkpoint at the next step, then stops "
                    "(Ctrl-C again to abandon the run)"
                )
        state = ray.get(monitor.state.remote())
    finally:
        bar.close()

    if "error" in outcome:
        if state.get("user_error"):
            raise RaynerfError(state["user_error"])
        raise HostGroupError(_failure_message(outcome["error"], spec, state))
    returned = _rank0_return(outcome["result"], state)
    return LaunchResult(
        step=returned["step"],
        metrics=state.get("metrics") or {},
        stopped=returned["stopped"],
        restarts=state.get("events", []),
        timings=_timings(state.get("times", {}), t0),
    )


def _rank0_return(result, state: dict) -> dict:
    """The run's end as process 0 saw it (or, failing that, Ray Train's last report)."""
    if state.get("final"):
        return state["final"]
    return {"step": int((result.metrics or {}).get("step", 0)), "stopped": False}


def _failure_message(error: BaseException, spec: HostGroupSpec, state: dict) -> str:
    failures = getattr(error, "worker_failures", None)
    silent = (state.get("failure") or {}).get("silent", "")
    if failures:
        return (
            f"training failed on {describe_failures(failures)}{silent} "
            f"(after {spec.max_restarts} restart(s); worker logs: /tmp/ray/session_latest/logs)"
        )
    lines = [line for line in str(error).splitlines() if line.strip()]
    return f"the host group failed: {type(error).__name__}: {lines[0] if lines else ''}"


def _timings(times: dict, t0: float) -> dict:
    """Start-up of the group and, per restart, failure -> first step logged again."""
    out = {}
    if "attempt_1_running" in times:
        out["group_start_s"] = times["attempt_1_running"] - t0
    for key, value in times.items():
        if key.startswith("failure_"):
            n = int(key.split("_")[1])
            running = times.get(f"attempt_{n + 1}_running")
            if running is not None:
                out[f"restart_{n}_s"] = running - value
    return out


def stall_seconds() -> float:
    """``$RAYNERF_STALL_WARNING_S`` or :data:`DEFAULT_STALL_SECONDS`."""
    value = os.environ.get(STALL_ENV, "")
    try:
        seconds = float(value) if value else DEFAULT_STALL_SECONDS
    except ValueError:
        raise RaynerfError(f"${STALL_ENV} must be a number of seconds, got {value!r}") from None
    if seconds <= 0:
        raise RaynerfError(f"${STALL_ENV} must be positive, got {seconds}")
    return seconds


def train_on_hosts(
    config: Config,
    scene_path: Path,
    workdir: Path,
    *,
    hosts: int | None,
    devices_per_host: int | None,
    address: str | None,
    max_restarts: int,
    show_progress: bool = True,
    stall_after_s: float | None = None,
) -> LaunchResult:
    """``raynerf train`` on a host group: on a connected cluster with TPUs (or GPUs) one
    worker per TPU VM (or GPU node) unless ``hosts`` says otherwise; else ``hosts``
    local CPU processes with ``devices_per_host`` devices each."""
    if max_restarts < 0:
        raise RaynerfError(f"--max-restarts must be 0 or more, got {max_restarts}")
    if hosts is not None and hosts < 1:
        raise RaynerfError(f"--hosts must be at least 1, got {hosts}")
    if stall_after_s is not None and not stall_after_s > 0:
        raise RaynerfError(f"--stall-warning must be a positive number of seconds, got {stall_after_s}")
    started_ray = connect(address, num_cpus=max(os.cpu_count() or 1, hosts or 1))
    try:
        from raynerf.distributed.hosts import detect_platform

        found = detect_platform()
        if found["platform"] == "cpu":
            spec = HostGroupSpec(
                hosts=hosts or 1, devices_per_host=devices_per_host or 1, max_restarts=max_restarts
            )
        else:
            spec = HostGroupSpec(
                hosts=hosts or found["hosts"],
                devices_per_host=devices_per_host or found["devices_per_host"],
                platform=found["platform"],
                max_restarts=max_restarts,
                topology=found["topology"],
                accelerator_type=found["accelerator_type"],
            )
        return _run(config, Path(scene_path), Path(workdir), spec, show_progress, None, stall_after_s)
    finally:
        if started_ray:
            shutdown_local()
