"""A Ray pool of render workers that turns camera poses into rendered frames.

Each :class:`RenderWorker` is a Ray actor that builds the model and its jitted chunk
renderer once, on its own devices (all of a TPU host, one GPU, or some CPU threads),
and then renders whole frames, cutting each into chunks of rays that fit its memory.
The trained parameters go into the object store once and every worker reads them from
there. :class:`RenderPool` hands frames out through ``ray.util.ActorPool`` and yields
results in whatever order they finish.

Failures: a worker whose process dies is restarted by Ray and its unfinished frame
is retried on the new process (``max_restarts`` / ``max_task_retries``); a worker that
has used up its restarts leaves the pool and its frames are handed to the others.

:class:`FrameStore` keeps finished frames on disk (one ``.npz`` per frame, written
atomically), so an interrupted render resumes with the frames still missing.
"""

from __future__ import annotations

import dataclasses
import os
import resource
import sys
import tempfile
import zipfile
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np

from raynerf.config import ModelConfig
from raynerf.errors import RaynerfError

# What a frame keeps: the outputs the videos are made of.
FRAME_OUTPUTS = ("rgb", "acc", "distance_mean")
# Seconds to wait for the workers' processes to come up before giving up.
WORKER_START_TIMEOUT = 900.0


@dataclasses.dataclass(frozen=True)
class FrameJob:
    """One frame to render: a pinhole camera (no lens distortion).

    Attributes:
      index: the frame's position in the video.
      camtoworld: [3, 4] OpenCV camera-to-world pose in the normalised scene frame.
      intrinsics: [8] ``(fx, fy, cx, cy, k1, k2, p1, p2)``.
      width, height: image size in pixels.
    """

    index: int
    camtoworld: np.ndarray
    intrinsics: np.ndarray
    width: int
    height: int


class RenderWorker:
    """A render worker (wrapped by ``ray.remote`` in :class:`RenderPool`).

    Builds the renderer once and compiles it on the first frame; ``render`` may then be
    called for any number of frames of one size (another size compiles once more). The
    parameters come with each call as an object-store reference and are fetched once:
    a restarted worker fetches them again with the first frame it is given.
    """

    def __init__(self, model_config: ModelConfig, chunk_size: int):
        import jax

        from raynerf.mesh import make_mesh
        from raynerf.model.mipnerf360 import MipNerf360
        from raynerf.model.render_chunks import available_memory, make_render_fn

        self._config = model_config
        self._mesh = make_mesh(jax.local_devices())
        self._render_fn = make_render_fn(MipNerf360(model_config), self._mesh)
        self._params = None
        self._chunk_size = chunk_size
        self._available = available_memory()  # measured once, before any frame's buffers

    def _ensure_params(self, params_box: list) -> None:
        """Fetches the parameters from the object store onto the devices, once per process."""
        if self._params is None:
            import jax
            import ray

            from raynerf.mesh import replicated

            self._params = jax.device_put(ray.get(params_box[0]), replicated(self._mesh))

    def pid(self) -> int:
        return os.getpid()

    def peak_rss(self) -> int:
        """The most resident memory this worker process has used, in bytes."""
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024

    def render(self, job: FrameJob, params_box: list) -> tuple[int, dict[str, np.ndarray]]:
        """``job`` -> (job.index, {rgb [H, W, 3], acc [H, W], distance_mean [H, W]} float32).

        ``params_box`` is a one-element list holding the parameters' ObjectRef (boxed, so
        Ray passes the reference and the worker fetches the value only the first time).
        """
        from raynerf.data.cameras import camera_rays
        from raynerf.model.render_chunks import choose_chunk, chunk_unit, render_image

        self._ensure_params(params_box)
        rays = camera_rays(
            job.camtoworld, job.intrinsics, job.width, job.height, self._config.near, self._config.far
        )
        chunk = choose_chunk(
            self._chunk_size, job.width * job.height, chunk_unit(self._mesh), self._config, self._available
        )
        out = render_image(self._render_fn, self._params, rays, chunk, self._mesh)
        return job.index, {name: _squeeze_last(np.asarray(out[name], np.float32)) for name in FRAME_OUTPUTS}


def _squeeze_last(array: np.ndarray) -> np.ndarray:
    """Drops a trailing axis of 1 ([H, W, 1] -> [H, W]); other shapes pass through."""
    return array[..., 0] if array.ndim == 3 and array.shape[-1] == 1 else array


@dataclasses.dataclass(frozen=True)
class WorkerPlan:
    """How many render workers to start, and what each one claims from Ray.

    ``threads`` is the XLA CPU thread budget of a CPU worker (0 for accelerator workers);
    ``slice_hosts`` the number of TPU VMs of the slice the TPU workers run on.
    """

    count: int
    num_cpus: float
    num_gpus: float = 0.0
    resources: Mapping[str, float] = dataclasses.field(default_factory=dict)
    threads: int = 0
    slice_hosts: int = 1

    @property
    def device(self) -> str:
        if self.resources.get("TPU"):
            return "tpu"
        return "gpu" if self.num_gpus else "cpu"

    def env_vars(self) -> dict[str, str]:
        """Environment of a worker process: which JAX platform, and how many CPU threads."""
        if self.device == "tpu" and self.slice_hosts > 1:
            return {"JAX_PLATFORMS": "", **one_host_tpu_env(int(self.resources["TPU"]))}
        if self.device != "cpu":
            # Empty means "pick the accelerator", whatever the driver's own setting.
            return {"JAX_PLATFORMS": ""}
        env = {"JAX_PLATFORMS": "cpu", "OMP_NUM_THREADS": str(self.threads)}
        flags = os.environ.get("XLA_FLAGS", "")
        if self.threads == 1 and "xla_cpu_multi_thread_eigen" not in flags:
            flags = f"{flags} --xla_cpu_multi_thread_eigen=false".strip()
        if flags:
            env["XLA_FLAGS"] = flags
        return env

    def actor_options(self, max_restarts: int) -> dict[str, Any]:
        return {
            "num_cpus": self.num_cpus,
            "num_gpus": self.num_gpus,
            "resources": dict(self.resources),
            "max_restarts": max_restarts,
            "max_task_retries": max_restarts,
            "runtime_env": {"env_vars": self.env_vars()},
        }


def plan_workers(
    nodes: Sequence[Mapping[str, float]], requested: int | Literal["auto"] = "auto"
) -> WorkerPlan:
    """Render workers for a cluster whose live nodes have the given Ray resources.

    One worker per TPU host (claiming all its chips) if there are TPUs, else one per GPU,
    else CPU workers sharing the CPUs evenly (default: one per node, using all its CPUs).
    A number asks for that many workers; more than the accelerators is an error.
    """
    if requested != "auto" and requested < 1:
        raise RaynerfError(f'--workers must be positive (or render.workers "auto"), got {requested}')
    tpu_hosts = [node["TPU"] for node in nodes if node.get("TPU", 0) > 0]
    gpus = int(sum(node.get("GPU", 0) for node in nodes))
    if tpu_hosts:
        count = _checked_count(requested, len(tpu_hosts), "TPU hosts")
        return WorkerPlan(
            count=count, num_cpus=1, resources={"TPU": min(tpu_hosts)}, slice_hosts=len(tpu_hosts)
        )
    if gpus:
        count = _checked_count(requested, gpus, "GPUs")
        return WorkerPlan(count=count, num_cpus=1, num_gpus=1)
    cpus = [node.get("CPU", 0) for node in nodes if node.get("CPU", 0) > 0]
    if not cpus:
        raise RaynerfError("the Ray cluster has no CPUs, GPUs or TPUs to render with")
    count = len(cpus) if requested == "auto" else requested
    share = min(max(cpus), sum(cpus) / count)
    return WorkerPlan(count=count, num_cpus=share, threads=max(1, int(share)))


# The chips of one TPU VM as a process grid (x, y, z): what libtpu needs to be told when
# one VM of a multi-host slice is to run alone (v4 and v5p VMs have 4 chips, v5e and v6e
# VMs 1, 4 or 8).
HOST_CHIP_BOUNDS = {1: "1,1,1", 4: "2,2,1", 8: "2,4,1"}


def one_host_tpu_env(chips: int) -> dict[str, str]:
    """Environment making libtpu on one VM of a multi-host slice start as a slice of that
    one VM, with all of its ``chips``: without it, JAX on a VM of a multi-host slice
    waits for the slice's other hosts to join one job. A render worker is a job of its
    own, one per VM (frames are independent), so it gets this."""
    if chips not in HOST_CHIP_BOUNDS:
        raise RaynerfError(f"no known chip layout for a TPU VM with {chips} chips (known: 1, 4, 8)")
    return {
        "TPU_PROCESS_BOUNDS": "1,1,1",
        "TPU_CHIPS_PER_PROCESS_BOUNDS": HOST_CHIP_BOUNDS[chips],
        "TPU_VISIBLE_CHIPS": ",".join(str(i) for i in range(chips)),
    }


def _checked_count(requested: int | Literal["auto"], available: int, what: str) -> int:
    if requested == "auto":
        return available
    if requested > available:
        raise RaynerfError(
            f"--workers {requested} asks for more workers than the cluster's "
            f"{available} {what}; use --workers {available} or fewer"
        )
    return requested


def cluster_nodes() -> list[dict[str, float]]:
    """The resources of the connected Ray cluster's live nodes."""
    import ray

    return [dict(node["Resources"]) for node in ray.nodes() if node.get("Alive")]


def _first_line(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[0] if lines else type(exc).__name__


class RenderPool:
    """``plan.count`` render workers sharing one copy of ``params`` in the object store.

    Use as a context manager (or call :meth:`shutdown`): the workers are killed on exit.
    Requires ``ray.init`` to have been called.
    """

    def __init__(
        self,
        model_config: ModelConfig,
        params: Any,
        plan: WorkerPlan,
        chunk_size: int,
        max_restarts: int = 2,
        start_timeout: float = WORKER_START_TIMEOUT,
    ):
        import ray

        self.plan = plan
        self._params_box = [ray.put(params)]  # in the object store once, for every worker
        worker_cls = ray.remote(RenderWorker).options(**plan.actor_options(max_restarts))
        self.actors = [worker_cls.remote(model_config, chunk_size) for _ in range(plan.count)]
        # Process ids at start-up (asking later would queue behind a frame; a restarted
        # worker has a new one).
        try:
            self.pids = ray.get([actor.pid.remote() for actor in self.actors], timeout=start_timeout)
        except ray.exceptions.GetTimeoutError:
            self.shutdown()
            raise RaynerfError(
                f"{plan.count} {plan.device} render workers did not start within {start_timeout:.0f} s; "
                "the Ray cluster has too few free resources for them (see `ray status`): use fewer --workers"
            ) from None
        except ray.exceptions.RayActorError as exc:
            self.shutdown()
            raise RaynerfError(
                f"the render workers failed to start ({_first_line(exc)}); every Ray node needs raynerf "
                "and its dependencies installed in the same Python environment as this driver"
            ) from None

    def __enter__(self) -> RenderPool:
        return self

    def __exit__(self, *exc) -> None:
        self.shutdown()

    def shutdown(self) -> None:
        import ray

        for actor in self.actors:
            ray.kill(actor, no_restart=True)
        self.actors = []

    def _live_actors(self) -> list:
        import ray

        live = []
        for actor in self.actors:
            try:
                ray.get(actor.pid.remote())
                live.append(actor)
            except ray.exceptions.RayActorError:
                pass
        return live

    def render(
        self, jobs: Iterable[FrameJob], max_rounds: int = 3
    ) -> Iterator[tuple[int, dict[str, np.ndarray]]]:
        """Renders ``jobs``, yielding ``(index, outputs)`` as frames finish (any order).

        Frames lost with a worker that could not be restarted are handed, in a further
        round, to the workers still alive; after ``max_rounds`` rounds it gives up.
        """
        import ray
        from ray.util import ActorPool

        pending = {job.index: job for job in jobs}
        failures: list[str] = []
        for _ in range(max_rounds):
            if not pending:
                return
            actors = self._live_actors()
            if not actors:
                break
            pool = ActorPool(actors)
            for job in pending.values():
                pool.submit(lambda actor, job: actor.render.remote(job, self._params_box), job)
            while pool.has_next():
                try:
                    index, outputs = pool.get_next_unordered()
                except ray.exceptions.RayActorError as exc:
                    failures.append(_first_line(exc))
                    continue
                pending.pop(index, None)
                yield index, outputs
        if pending:
            detail = f" (last error: {failures[-1]})" if failures else ""
            raise RaynerfError(
                f"{len(pending)} frames could not be rendered: every render worker died{detail}; "
                "frames already rendered are kept, run the same command again to resume"
            )

    def peak_rss(self) -> list[int]:
        """Peak resident memory of each live worker process, in bytes."""
        import ray

        return ray.get([actor.peak_rss.remote() for actor in self._live_actors()])


# What reading a damaged .npz raises: a torn zip, a bad CRC, a missing array, bad bytes.
UNREADABLE = (OSError, KeyError, ValueError, EOFError, zipfile.BadZipFile)


class FrameStore:
    """Rendered frames on disk: ``directory/frame_<index>.npz`` holding ``FRAME_OUTPUTS``."""

    def __init__(self, directory: Path | str, notify: Callable[[str], None] | None = None):
        self.directory = Path(directory)
        self.notify = notify or (lambda line: print(line, file=sys.stderr, flush=True))

    def path(self, index: int) -> Path:
        return self.directory / f"frame_{index:05d}.npz"

    def has(self, index: int) -> bool:
        """Whether frame ``index`` is saved and reads back whole. A damaged one (torn,
        bit-flipped: the zip's CRCs catch it) is moved aside to ``*.damaged.npz``, never
        deleted, and counts as missing, so that it is rendered again."""
        path = self.path(index)
        if not path.is_file():
            return False
        try:
            self._read(path)
            return True
        except UNREADABLE as exc:
            aside = path.with_suffix(".damaged.npz")
            path.replace(aside)
            self.notify(f"frame {index}: unreadable ({type(exc).__name__}: {exc}); moved aside to {aside}")
            return False

    def save(self, index: int, outputs: Mapping[str, np.ndarray]) -> None:
        """Writes one frame atomically (temporary file, then rename)."""
        self.directory.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".frame_{index:05d}.", suffix=".partial.npz", dir=self.directory)
        try:
            with os.fdopen(fd, "wb") as f:
                np.savez(f, **{name: np.asarray(outputs[name]) for name in FRAME_OUTPUTS})
            os.replace(tmp, self.path(index))
        finally:
            Path(tmp).unlink(missing_ok=True)

    @staticmethod
    def _read(path: Path) -> dict[str, np.ndarray]:
        with np.load(path) as data:
            return {name: data[name] for name in FRAME_OUTPUTS}

    def load(self, index: int) -> dict[str, np.ndarray]:
        path = self.path(index)
        try:
            return self._read(path)
        except UNREADABLE as exc:
            raise RaynerfError(
                f"{path}: unreadable saved frame ({exc}); delete it and render again"
            ) from None
