"""The host group: one Ray Train worker per host, all running one SPMD training job.

The group is Ray Train's :class:`~ray.train.v2.jax.JaxTrainer`: it places one worker
actor per host (per TPU VM of a pod slice, or per local process with ``--hosts N``),
restarts the whole group after a worker dies (``FailureConfig(max_failures)``) and,
on TPU and GPU workers, initialises ``jax.distributed`` itself. On CPU workers it
does not, so :func:`host_main` does: rank 0 picks a coordinator address and
broadcasts it with ``ray.train.collective.broadcast_from_rank_zero``; every worker
then joins with :func:`raynerf.distributed.jaxdist.initialize_cpu`.

Each worker runs the unchanged single-host loop (:func:`raynerf.training.loop.train`)
over the global mesh; that loop resumes from the latest orbax checkpoint, which is
what makes a restarted group continue where the old one stopped.

A small :class:`RunMonitor` actor, owned by the driver, is the side channel between
driver and workers: process 0 pushes progress into it (the driver's progress bar
reads it), every worker records its pid there, the restart cause lands there (from
:class:`RestartRecorder`, a Ray Train callback) and reaches ``metrics.jsonl`` through
the next group's process 0, and a Ctrl-C on the driver becomes an agreed stop step
(:meth:`RunMonitor.should_stop`) at which every worker saves a checkpoint.

A SIGTERM reaching a worker (a preempted VM's notice) is taken by JAX's preemption
service, which ``jax.distributed`` starts on every process: it agrees a step with the
other hosts (:func:`jax.experimental.multihost_utils.reached_preemption_sync_point`),
every host saves a checkpoint there, and the group ends with :class:`HostPreempted`, a
failure Ray Train restarts from that checkpoint (on a pod, once the slice is back).
"""

from __future__ import annotations

import dataclasses
import json
import os
import threading
import time
from pathlib import Path
from typing import Any

import ray
from ray.train import UserCallback

from raynerf import storage
from raynerf.distributed import jaxdist

EXCERPT_CHARS = 400
HEARTBEAT_SECONDS = 1.0  # how often every worker tells the monitor it is alive
# A worker silent this long is taken for hung, stopped or unreachable (SIGSTOP, a frozen
# VM); a healthy one blocked in a collective, waiting for such a host, still beats.
SILENT_AFTER_SECONDS = 5.0
ALIVE_WITHIN_SECONDS = 2.5  # a heartbeat this recent: the host's process runs


@dataclasses.dataclass(frozen=True)
class HostGroupSpec:
    """What the host group looks like.

    ``platform`` is ``"cpu"`` (local processes or CPU nodes, ``devices_per_host``
    XLA host devices each), ``"tpu"`` (one worker per TPU VM, ``chips_per_host``
    chips each, ``topology`` and ``accelerator_type`` as Ray labels the slice) or
    ``"gpu"`` (``devices_per_host`` GPUs per worker).
    """

    hosts: int
    devices_per_host: int = 1
    platform: str = "cpu"
    max_restarts: int = 3
    topology: str | None = None
    accelerator_type: str | None = None
    cpus_per_host: float = 1.0


@ray.remote(num_cpus=0)
class RunMonitor:
    """The driver's view of a run, fed by the workers and by Ray Train's controller.

    Per host of the current group it keeps the last step the host finished
    (:meth:`host_step`, at logged steps) and when, and when the host last said it was
    alive (:meth:`alive`, from a heartbeat thread every :data:`HEARTBEAT_SECONDS`).
    In lockstep SPMD every host stops progressing when one hangs; the heartbeat tells
    the hung one (silent) from the ones waiting for it (still beating).
    """

    def __init__(self, silent_after_s: float = SILENT_AFTER_SECONDS):
        self.silent_after_s = silent_after_s
        self.hosts: dict[int, dict] = {}  # rank -> {"step", "progress_t", "alive_t"}, this group
        self.attempt = 0
        self.step: int | None = None
        self.metrics: dict = {}
        self.events: list[dict] = []  # restart events, in order
        self._unwritten: list[dict] = []  # events process 0 has not put in metrics.jsonl
        self._pending_failure: dict | None = None
        self.pids: dict[int, dict[int, int]] = {}  # attempt -> rank -> pid
        self.user_error: str | None = None
        self.times: dict[str, float] = {}  # attempt_<n>_start, attempt_<n>_running, failure_<n>
        self._stop_requested = False
        self._stop_at: int | None = None
        self._max_polled = -1
        self.final: dict | None = None  # {"step", "stopped"} from process 0 at the end

    # -- workers ---------------------------------------------------------------
    def begin_attempt(self) -> int:
        """Called by rank 0 of each new group; turns a recorded failure into a restart event."""
        self.attempt += 1
        self.hosts = {}
        self._stop_at, self._max_polled = None, -1
        self.times[f"attempt_{self.attempt}_start"] = time.time()
        if self._pending_failure is not None:
            event = {
                "event": "restart",
                "restart": self.attempt - 1,
                "cause": self._pending_failure["cause"] + self._pending_failure["silent"],
                "step": self.step if self.step is not None else 0,
            }
            self.events.append(event)
            self._unwritten.append(event)
            self._pending_failure = None
        return self.attempt

    def register(self, attempt: int, rank: int, pid: int, where: str = "") -> None:
        self.pids.setdefault(attempt, {})[rank] = pid
        if attempt == self.attempt:
            now = time.time()
            self.hosts[rank] = {"step": None, "progress_t": now, "alive_t": now, "where": where}

    def alive(self, attempt: int, rank: int) -> None:
        if attempt == self.attempt and rank in self.hosts:
            self.hosts[rank]["alive_t"] = time.time()

    def host_step(self, attempt: int, rank: int, step: int) -> None:
        if attempt == self.attempt and rank in self.hosts:
            now = time.time()
            self.hosts[rank].update(step=step, progress_t=now, alive_t=now)

    def host_ages(self) -> dict[int, dict]:
        """``rank -> {"where", "step", "no_progress_s", "silent_s", "silent"}`` for this
        group's hosts: where it runs (:func:`worker_location`), the last step it finished,
        seconds since it did (or since it joined), seconds since it last said it was
        alive, and whether that is longer than ``silent_after_s``."""
        now = time.time()
        return {
            rank: {
                "where": h["where"],
                "step": h["step"],
                "no_progress_s": now - h["progress_t"],
                "silent_s": now - h["alive_t"],
                "silent": now - h["alive_t"] > self.silent_after_s,
            }
            for rank, h in sorted(self.hosts.items())
        }

    def progress(self, attempt: int, step: int, metrics: dict) -> None:
        if attempt != self.attempt:
            return
        self.times.setdefault(f"attempt_{attempt}_running", time.time())
        self.step, self.metrics = step, metrics

    def take_unwritten_events(self) -> list[dict]:
        events, self._unwritten = self._unwritten, []
        return events

    def should_stop(self, attempt: int, step: int, every: int = 1) -> bool:
        """Asked by every worker at every ``every``-th step (the same steps on all of
        them). Once a stop is requested, the stop step is the next asked step after the
        furthest one any worker has asked at: every worker asks there, none has passed
        it, so all of them stop at the same step."""
        if attempt != self.attempt:
            return False
        self._max_polled = max(self._max_polled, step)
        if self._stop_requested and self._stop_at is None:
            self._stop_at = self._max_polled + every
        return self._stop_at is not None and step >= self._stop_at

    def finish(self, step: int, stopped: bool) -> None:
        self.final = {"step": step, "stopped": stopped}

    def set_user_error(self, rank: int, message: str) -> None:
        if self.user_error is None:
            self.user_error = message

    # -- controller ------------------------------------------------------------
    def record_failure(self, cause: str) -> None:
        """Records a group failure; a host that had gone silent before it is named with it:
        the host that failed first is often not the one Ray reports (JAX's coordination
        service ends the healthy process 0 when another host stops answering)."""
        if self._pending_failure is None:
            self.times[f"failure_{self.attempt}"] = time.time()
            self._pending_failure = {"cause": cause, "silent": silent_note(self.host_ages())}

    # -- driver ----------------------------------------------------------------
    def request_stop(self) -> None:
        self._stop_requested = True

    def state(self) -> dict:
        return {
            "attempt": self.attempt,
            "step": self.step,
            "metrics": self.metrics,
            "events": list(self.events),
            "pids": dict(self.pids.get(self.attempt, {})),
            "user_error": self.user_error,
            "times": dict(self.times),
            "failure": self._pending_failure,
            "final": self.final,
            "hosts": self.host_ages(),
        }


def silent_note(ages: dict[int, dict]) -> str:
    """What :meth:`RunMonitor.host_ages` says about silent hosts, for a failure's cause:
    ``"; host 1 had stopped responding 95 s before (hung, stopped or unreachable)"``,
    the first to fall silent named first (a host that died of the failure itself, or
    was ended because of it, may be silent too by the time Ray reports it), or ``""``."""
    silent = sorted((a["silent_s"], rank) for rank, a in ages.items() if a["silent"])[::-1]
    if not silent:
        return ""
    (first_s, first), later = silent[0], silent[1:]
    note = (
        f"; {host_name(first, ages[first])} had stopped responding {first_s:.0f} s before "
        "(hung, stopped or unreachable)"
    )
    return note + "".join(
        f"; {host_name(rank, ages[rank])} stopped responding later ({s:.0f} s before)" for s, rank in later
    )


def host_name(rank: int, age: dict) -> str:
    """``host 1``, or ``host 1 (TPU worker 0, 10.0.0.3)`` where the host's location is known."""
    return f"host {rank} ({age['where']})" if age.get("where") else f"host {rank}"


def worker_location() -> str:
    """Where this Ray worker runs, for messages: ``"TPU worker 0, 10.0.0.3"`` on a node Ray
    labels as a TPU VM (Ray Train's ranks need not follow the slice's worker ids), ``""``
    elsewhere (local CPU groups: every host is this machine)."""
    worker_id = ray.get_runtime_context().get_node_labels().get("ray.io/tpu-worker-id")
    if worker_id is None:
        return ""
    return f"TPU worker {worker_id}, {ray.util.get_node_ip_address()}"


def stall_warnings(ages: dict[int, dict], stall_after_s: float, warned: set) -> list[str]:
    """Warnings for the hosts of ``ages`` (:meth:`RunMonitor.host_ages`) that have made no
    progress for ``stall_after_s``, each said once per host, step and verdict; ``warned``
    keeps what was said.

    A silent host is named as hung; a host whose heartbeat is recent (within
    :data:`ALIVE_WITHIN_SECONDS`) is said to be alive, most likely waiting for a hung
    one. A host in between (a beat or two late, not yet silent) is judged at a later
    poll, so a stopped host is never reported as alive.
    """
    lines = []
    for rank, a in ages.items():
        if a["no_progress_s"] < stall_after_s:
            continue
        if not a["silent"] and a["silent_s"] > ALIVE_WITHIN_SECONDS:
            continue
        key = (rank, a["step"], a["silent"])
        if key in warned:
            continue
        warned.add(key)
        since = f"since step {a['step']}" if a["step"] is not None else "since it joined the group"
        verdict = (
            f"and has not responded for {a['silent_s']:.0f} s: hung, stopped or unreachable"
            if a["silent"]
            else "but is alive (waiting for another host?)"
        )
        lines.append(
            f"{host_name(rank, a)} has made no progress for {a['no_progress_s']:.0f} s ({since}) {verdict}"
        )
    return lines


def describe_exception(exc: BaseException) -> str:
    """One line for a worker's exception: its type and the start of its message."""
    cause = getattr(exc, "cause", None)
    if isinstance(cause, BaseException):
        exc = cause
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    text = lines[0] if lines else ""
    if len(text) > EXCERPT_CHARS:
        text = text[:EXCERPT_CHARS] + "..."
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def describe_failures(worker_exceptions: dict[int, BaseException]) -> str:
    """``host <rank>: <error>`` for every failed worker, lowest rank first; hosts that
    failed alike are named together (``hosts 0, 1: <error>``)."""
    ranks: dict[str, list[int]] = {}
    for rank, exc in sorted(worker_exceptions.items()):
        ranks.setdefault(describe_exception(exc), []).append(rank)
    return "; ".join(
        f"host{'s' if len(r) > 1 else ''} {', '.join(map(str, r))}: {text}" for text, r in ranks.items()
    )


def is_user_error(exc: BaseException) -> bool:
    """Whether ``exc`` (as Ray hands it over, possibly wrapped) is a RaynerfError."""
    from raynerf.errors import RaynerfError

    seen = 0
    while exc is not None and seen < 8:
        if isinstance(exc, RaynerfError):
            return True
        exc = getattr(exc, "cause", None) or exc.__cause__
        seen += 1
    return False


class HostPreempted(Exception):
    """Raised by every worker after a preemption notice: the agreed step is saved, and the
    group is restarted from it (a failure to Ray Train, not a user error)."""


class UserErrorInWorker(Exception):
    """Raised inside Ray Train's controller to end a run without restarts."""


class RestartRecorder(UserCallback):
    """Runs in Ray Train's controller: hands each worker-group failure to the monitor.

    A user error (a :class:`~raynerf.errors.RaynerfError`: bad data, bad workdir) would
    fail the same way after a restart, so it ends the run at once: an exception from a
    callback is a controller error, which Ray Train's failure policy does not retry.
    """

    def __init__(self, monitor):
        self.monitor = monitor

    def after_exception(self, run_context, worker_exceptions: dict[int, Exception]) -> None:
        cause = describe_failures(worker_exceptions)
        if any(is_user_error(exc) for exc in worker_exceptions.values()):
            raise UserErrorInWorker(cause)
        self.monitor.record_failure.remote(cause)


def append_events(workdir: Path, events: list[dict]) -> None:
    """Appends event records to ``workdir/metrics.jsonl`` (process 0 only)."""
    if not events:
        return
    workdir.mkdir(parents=True, exist_ok=True)
    with open(workdir / "metrics.jsonl", "a") as f:
        for event in events:
            f.write(json.dumps(event) + "\n")


class Heartbeat:
    """A daemon thread telling the monitor every :data:`HEARTBEAT_SECONDS` that this
    worker's process runs, whatever its training thread is doing (computing, or blocked
    in a collective): it falls silent only if the whole process does (SIGSTOP, a frozen
    VM, a dead process)."""

    def __init__(self, monitor, attempt: int, rank: int, every: float = HEARTBEAT_SECONDS):
        self._done = threading.Event()
        self._thread = threading.Thread(
            target=self._beat, args=(monitor, attempt, rank, every), name="raynerf-heartbeat", daemon=True
        )

    def _beat(self, monitor, attempt: int, rank: int, every: float) -> None:
        while not self._done.wait(every):
            monitor.alive.remote(attempt, rank)

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._done.set()


def host_main(cfg: dict) -> dict:
    """The per-host entry point run by every Ray Train worker.

    ``cfg`` holds ``config`` (a :class:`~raynerf.config.Config`), ``scene_path`` and
    ``workdir`` (absolute: Ray Train changes the worker's directory), ``spec`` (a
    :class:`HostGroupSpec`) and ``monitor`` (a :class:`RunMonitor` handle).
    Returns ``{"step": final step, "stopped": whether a stop request ended it}``.
    """
    import ray.train
    from ray.train.collective import broadcast_from_rank_zero

    spec: HostGroupSpec = cfg["spec"]
    monitor = cfg["monitor"]
    context = ray.train.get_context()
    rank, world = context.get_world_rank(), context.get_world_size()

    port = None  # rank 0 of a CPU group holds the coordinator's port until JAX has bound it
    if rank == 0:
        attempt = ray.get(monitor.begin_attempt.remote())
        if spec.platform == "cpu":
            port = jaxdist.CoordinatorPort(ray.util.get_node_ip_address())
        shared = (attempt, port.address if port else None)
    else:
        shared = None
    attempt, coordinator = broadcast_from_rank_zero(shared)
    ray.get(monitor.register.remote(attempt, rank, os.getpid(), worker_location()))
    with Heartbeat(monitor, attempt, rank):
        if spec.platform == "cpu":
            try:
                jaxdist.initialize_cpu(coordinator, world, rank, spec.devices_per_host)
            finally:
                if port is not None:
                    port.release()

        return _train_here(cfg, monitor, attempt, rank)


def _train_here(cfg: dict, monitor, attempt: int, rank: int) -> dict:
    """The training part of :func:`host_main`, once this process has joined ``jax.distributed``."""
    import jax
    from jax.experimental import multihost_utils

    from raynerf.errors import RaynerfError
    from raynerf.training.loop import train

    workdir = storage.open_workdir(cfg["workdir"])
    scene_path = storage.open_scene(cfg["scene_path"])
    if jax.process_index() == 0:
        append_events(workdir, ray.get(monitor.take_unwritten_events.remote()))

    reported = {"checkpoint_step": None}

    def reporter(step: int, metrics: dict) -> None:
        monitor.host_step.remote(attempt, rank, step)
        if jax.process_index() == 0:
            monitor.progress.remote(attempt, step, metrics)
        # ray.train.report is a barrier over all workers, and Ray Train drains one report
        # per worker per health check, so report only when the checkpoint step moves
        # (the same steps on every process: the orbax manager's latest step agrees).
        if metrics.get("checkpoint_step") != reported["checkpoint_step"]:
            reported["checkpoint_step"] = metrics["checkpoint_step"]
            ray.train.report({"step": step, **metrics})

    ask_every = cfg["config"].train.log_every
    preempted_at: list[int] = []

    def stop(step: int) -> bool:
        # JAX's preemption service must be asked by every process at every step; it is
        # a local read until a notice arrives.
        if multihost_utils.reached_preemption_sync_point(step):
            preempted_at.append(step)
            return True
        # One round trip to the monitor per logged step, not per step.
        if step % ask_every:
            return False
        return ray.get(monitor.should_stop.remote(attempt, step, ask_every))

    try:
        result = train(
            cfg["config"],
            scene_path,
            workdir,
            show_progress=False,
            reporter=reporter,
            should_stop=stop,
        )
    except RaynerfError as exc:
        ray.get(monitor.set_user_error.remote(rank, str(exc)))
        raise
    if preempted_at:
        raise HostPreempted(
            f"preemption notice (SIGTERM) on a host; every host saved a checkpoint at step {result.step}"
        )
    outcome = {"step": result.step, "stopped": result.step < cfg["config"].train.max_steps}
    ray.train.report({**result.metrics, "step": result.step, "checkpoint_step": result.step})
    if jax.process_index() == 0:
        ray.get(monitor.finish.remote(**outcome))
    if cfg["spec"].platform == "cpu":
        jaxdist.shutdown()
    return outcome


def scaling_config(spec: HostGroupSpec):
    """Ray Train's ``ScalingConfig`` for ``spec``."""
    from ray.train import ScalingConfig

    if spec.platform == "tpu":
        return ScalingConfig(
            num_workers=spec.hosts,
            use_tpu=True,
            topology=spec.topology,
            accelerator_type=spec.accelerator_type,
            resources_per_worker={"TPU": spec.devices_per_host},
            placement_strategy="SPREAD",
        )
    if spec.platform == "gpu":
        return ScalingConfig(
            num_workers=spec.hosts, use_gpu=True, resources_per_worker={"GPU": spec.devices_per_host}
        )
    return ScalingConfig(num_workers=spec.hosts, resources_per_worker={"CPU": spec.cpus_per_host})


def worker_env(spec: HostGroupSpec) -> dict[str, str]:
    """Environment variables every worker process starts with."""
    env = {k: v for k, v in os.environ.items() if k.startswith("RAYNERF_")}
    if spec.platform == "cpu":
        env.update(jaxdist.cpu_worker_env(spec.devices_per_host, os.environ.get("XLA_FLAGS", "")))
    return env


def make_trainer(
    spec: HostGroupSpec,
    config,
    scene_path: Path,
    workdir: Path,
    monitor: Any,
    storage_path: str | None = None,
):
    """A ``JaxTrainer`` that trains ``scene_path`` into ``workdir`` on ``spec``'s hosts."""
    from ray.train import FailureConfig, RunConfig
    from ray.train.v2.jax import JaxConfig, JaxTrainer

    workdir = Path(workdir).absolute()
    run_config = RunConfig(
        name=f"raynerf-{workdir.name}-{int(time.time())}",
        storage_path=storage_path or str(workdir / "ray_train"),
        failure_config=FailureConfig(max_failures=spec.max_restarts),
        callbacks=[RestartRecorder(monitor)],
        worker_runtime_env={"env_vars": worker_env(spec)},
    )
    return JaxTrainer(
        host_main,
        train_loop_config={
            "config": config,
            # gs:// locations stay URLs: each host opens its own local copy of them.
            "scene_path": storage.shown(Path(scene_path).absolute()),
            "workdir": storage.shown(workdir),
            "spec": spec,
            "monitor": monitor,
        },
        jax_config=JaxConfig(use_tpu=spec.platform == "tpu", use_gpu=spec.platform == "gpu"),
        scaling_config=scaling_config(spec),
        run_config=run_config,
    )


def detect_platform() -> dict:
    """What the connected Ray cluster offers: ``{"platform", "hosts", "devices_per_host",
    "topology", "accelerator_type"}`` from its nodes' resources and TPU labels.

    A TPU slice is recognised from the ``ray.io/tpu-*`` node labels Ray sets on TPU VMs
    (untested on real TPUs: this machine has none).
    """
    nodes = [n for n in ray.nodes() if n.get("Alive")]
    tpu_nodes = [n for n in nodes if n.get("Resources", {}).get("TPU", 0) > 0]
    if tpu_nodes:
        labels = tpu_nodes[0].get("Labels", {}) or {}
        return {
            "platform": "tpu",
            "hosts": len(tpu_nodes),
            "devices_per_host": int(tpu_nodes[0]["Resources"]["TPU"]),
            "topology": labels.get("ray.io/tpu-topology"),
            "accelerator_type": labels.get("ray.io/accelerator-type"),
        }
    gpu_nodes = [n for n in nodes if n.get("Resources", {}).get("GPU", 0) > 0]
    if gpu_nodes:
        return {
            "platform": "gpu",
            "hosts": len(gpu_nodes),
            "devices_per_host": int(gpu_nodes[0]["Resources"]["GPU"]),
            "topology": None,
            "accelerator_type": None,
        }
    return {
        "platform": "cpu",
        "hosts": None,
        "devices_per_host": None,
        "topology": None,
        "accelerator_type": None,
    }
