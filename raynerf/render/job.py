"""A path render from request to videos: camera path, intrinsics, the pool, the mp4 files.

:func:`render_path` builds the camera path (the default path: an ellipse around a 360
capture, an arc or spiral among the views of a capture from one side; a spline through
keyframe images; or a path file, raynerf's or nerfstudio's), loads the latest
checkpoint once, renders the frames not yet on disk with a
:class:`~raynerf.render.pool.RenderPool`, and writes
``W/render/<scene>_path_renders_step_<step>_{color,acc,distance_mean}.mp4`` in frame
order. Frames are kept under ``W/render/frames/<key>/`` while the render runs, where
``<key>`` names the scene, the step and a digest of the path, intrinsics and model, so
a rerun of the same render resumes and a different one starts afresh.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import re
import shutil
import signal
import threading
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import jax
import numpy as np

from raynerf import storage
from raynerf.config import Config
from raynerf.data.scene import load_configured_scene
from raynerf.errors import RaynerfError
from raynerf.mesh import make_mesh
from raynerf.render import images, paths, video
from raynerf.render.pool import FrameJob, FrameStore, RenderPool, cluster_nodes, plan_workers
from raynerf.training.checkpoints import load_trained_params

VIDEO_KINDS = ("color", "acc", "distance_mean")
# Pixels sampled (at most) to choose one distance colour range for a whole video.
RANGE_SAMPLES = 4_000_000


@dataclasses.dataclass(frozen=True)
class RenderRequest:
    """What to render. ``None`` fields fall back to the config's ``render`` section.

    Attributes:
      frames, fps, z_variation, z_phase: path length, video rate, height wave of the
        ellipse and arc paths.
      workers: render workers (None: render.workers; "auto": one per TPU host / GPU / CPU node).
      factor: render at the test camera's resolution for images_<factor>.
      resolution: (width, height) instead of ``factor``; ``focal`` in pixels (default:
        the test camera's horizontal field of view).
      keyframes: image names for a spline path instead of the ellipse.
      path_json: a path file to render (its own poses and intrinsics): raynerf's path
        JSON or nerfstudio's camera_path.json (``--path``).
      path_transforms: nerfstudio's dataparser_transforms.json, to map a nerfstudio path
        from nerfstudio's frame into the scene's (without it, the path is taken to be in
        the scene's normalised frame already).
      export_path: write the path (poses and intrinsics) to this JSON file.
      keep_frames: keep ``W/render/frames/<key>/`` after the videos are written.
    """

    frames: int | None = None
    fps: float | None = None
    workers: int | None = None
    factor: int | None = None
    resolution: tuple[int, int] | None = None
    focal: float | None = None
    keyframes: Sequence[str] = ()
    path_json: Path | None = None
    path_transforms: Path | None = None
    export_path: Path | None = None
    z_variation: float | None = None
    z_phase: float | None = None
    keep_frames: bool = False


@dataclasses.dataclass(frozen=True)
class RenderResult:
    step: int
    videos: dict[str, Path]
    num_frames: int
    width: int
    height: int
    rendered: int  # frames rendered by this call
    reused: int  # frames found on disk from an earlier, interrupted call
    seconds: float  # wall time of the rendering (workers' start-up included)
    frames_per_sec: float
    rays_per_sec: float
    workers: int
    worker_peak_rss: int  # bytes, the largest over the workers (0 if none ran)


def parse_resolution(text: str) -> tuple[int, int]:
    """``'WxH'`` -> (W, H), both positive integers."""
    match = re.fullmatch(r"\s*(\d+)\s*[xX]\s*(\d+)\s*", text)
    if not match or int(match[1]) < 1 or int(match[2]) < 1:
        raise RaynerfError(f"--resolution must look like 1280x720 (width x height in pixels), got {text!r}")
    return int(match[1]), int(match[2])


def render_intrinsics(
    scene, factor: int | None = None, resolution: tuple[int, int] | None = None, focal: float | None = None
) -> dict:
    """Pinhole intrinsics ``{width, height, fx, fy, cx, cy}`` for the video.

    From the scene's first test camera (first image if there is no test split):
    as loaded, rescaled to ``images_<factor>`` size, or fitted to ``resolution``
    (centred principal point; focal ``focal`` or the one that keeps the horizontal
    field of view). Lens distortion is not rendered.
    """
    if factor is not None and resolution is not None:
        raise RaynerfError("give --factor or --resolution, not both")
    if focal is not None and (resolution is None or focal <= 0):
        raise RaynerfError("--focal needs --resolution and must be positive (pixels)")
    index = int(scene.test_indices[0]) if len(scene.test_indices) else 0
    camera = scene.cameras[index]
    if resolution is not None:
        width, height = resolution
        scale = width / camera.width
        fx, fy = (focal, focal) if focal is not None else (camera.fx * scale, camera.fy * scale)
        return {"width": width, "height": height, "fx": fx, "fy": fy, "cx": width / 2, "cy": height / 2}
    if factor is not None:
        if factor < 1:
            raise RaynerfError(f"--factor must be a positive integer, got {factor}")
        ratio = scene.factor / factor
        camera = camera.scaled(max(1, round(camera.width * ratio)), max(1, round(camera.height * ratio)))
    return {
        "width": camera.width,
        "height": camera.height,
        "fx": camera.fx,
        "fy": camera.fy,
        "cx": camera.cx,
        "cy": camera.cy,
    }


def keyframe_indices(names: Sequence[str], keyframes: Sequence[str]) -> list[int]:
    """Image names -> indices into ``names`` (exact name, or the name without extension)."""
    lookup = {name: i for i, name in enumerate(names)}
    lookup.update({Path(name).stem: i for i, name in enumerate(names)})
    missing = [name for name in keyframes if name not in lookup]
    if missing:
        shown = ", ".join(names[:5]) + (", ..." if len(names) > 5 else "")
        raise RaynerfError(
            f"--keyframes: no image named {', '.join(missing)} in the scene (its images: {shown})"
        )
    return [lookup[name] for name in keyframes]


def load_path_file(scene, path_file: Path, transforms_file: Path | None) -> tuple[np.ndarray, dict]:
    """(camtoworlds [F, 3, 4] in the scene's normalised frame, intrinsics) of a path file;
    a nerfstudio path goes through ``transforms_file`` (nerfstudio's frame -> the COLMAP
    world) and the scene's transform (COLMAP world -> normalised) when one is given."""
    to_scene = None
    if transforms_file is not None:
        to_scene = scene.transform @ paths.load_dataparser_transforms(transforms_file)
    return paths.load_camera_path(path_file, to_scene)


def default_path(scene, frames: int, z_variation: float, z_phase: float) -> np.ndarray:
    """[F, 3, 4] the path rendered without --keyframes or --path: an ellipse around a 360
    capture; an arc or spiral among the views of a forward-facing one
    (:func:`raynerf.render.paths.default_path`)."""
    return paths.default_path(
        scene.camtoworlds, frames, scene.forward_facing, scene.points, z_variation, z_phase
    )


def build_path(
    scene, request: RenderRequest, frames: int, z_variation: float, z_phase: float
) -> tuple[np.ndarray, dict]:
    """(camtoworlds [F, 3, 4], intrinsics dict) for the request."""
    if frames < 1:
        raise RaynerfError(f"--frames must be positive, got {frames}")
    if request.path_json is not None:
        if request.keyframes:
            raise RaynerfError("give --keyframes or --path, not both")
        if request.factor is not None or request.resolution is not None:
            raise RaynerfError(f"{request.path_json} sets the intrinsics; drop --factor / --resolution")
        return load_path_file(scene, request.path_json, request.path_transforms)
    if request.path_transforms is not None:
        raise RaynerfError("--path-transforms applies to a nerfstudio camera path; give it with --path FILE")
    intrinsics = render_intrinsics(scene, request.factor, request.resolution, request.focal)
    if request.keyframes:
        indices = keyframe_indices(scene.names, request.keyframes)
        return paths.spline_path(scene.camtoworlds, indices, frames), intrinsics
    return default_path(scene, frames, z_variation, z_phase), intrinsics


def intrinsics_vector(intrinsics: dict) -> np.ndarray:
    """``{fx, fy, cx, cy, ...}`` -> [8] ``(fx, fy, cx, cy, 0, 0, 0, 0)``."""
    return np.array(
        [intrinsics["fx"], intrinsics["fy"], intrinsics["cx"], intrinsics["cy"], 0, 0, 0, 0], np.float64
    )


def render_key(scene_name: str, step: int, camtoworlds: np.ndarray, intrinsics: dict, config: Config) -> str:
    """The frames folder's name: scene, step and a digest of everything a frame depends on."""
    digest = hashlib.sha256()
    digest.update(np.ascontiguousarray(camtoworlds, np.float64).tobytes())
    digest.update(json.dumps({k: intrinsics[k] for k in paths.INTRINSIC_KEYS}, sort_keys=True).encode())
    digest.update(json.dumps(dataclasses.asdict(config.model), sort_keys=True).encode())
    return f"{scene_name}_step_{step}_{digest.hexdigest()[:12]}"


def video_paths(workdir: Path, scene_name: str, step: int) -> dict[str, Path]:
    out = Path(workdir) / "render"
    return {kind: out / f"{scene_name}_path_renders_step_{step}_{kind}.mp4" for kind in VIDEO_KINDS}


@contextlib.contextmanager
def _child_processes_quiet() -> Iterator[None]:
    """Silences JAX's warning about forking: starting Ray's processes and ffmpeg forks a
    driver that has imported JAX, but the children exec at once and share nothing with it."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"os\.fork\(\) was called", category=RuntimeWarning)
        yield


@contextlib.contextmanager
def ray_session(address: str | None = None) -> Iterator[None]:
    """Connects to the Ray cluster at ``address`` (or starts a local one); shuts down on
    exit what this call started. An already initialised Ray is used as it is. The SIGTERM
    handler (see raynerf.cli) is kept: ray.init would make SIGTERM exit at once."""
    import ray

    if ray.is_initialized():
        yield
        return
    sigterm = signal.getsignal(signal.SIGTERM)
    try:
        with _child_processes_quiet():
            # No address: a private local instance, never a `ray start` cluster that
            # happens to run on this machine (ray.init's default would attach to it).
            ray.init(
                address=address or "local",
                include_dashboard=False,
                logging_level=logging.ERROR,
                log_to_driver=False,
            )
        if sigterm is not None and threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, sigterm)  # ray.init replaces it with sys.exit
    except ConnectionError as exc:
        raise RaynerfError(
            f"cannot reach the Ray cluster at {address} ({exc}); check --address "
            "(e.g. 10.0.0.1:6379) or leave it out to render on this machine"
        ) from None
    try:
        yield
    finally:
        ray.shutdown()


def distance_colour_range(store: FrameStore, count: int) -> tuple[float, float]:
    """One robust (lo, hi) for the distance video, from (a subsample of) every frame."""
    first = store.load(0)["distance_mean"]
    stride = max(1, int(np.ceil(np.sqrt(first.size * count / RANGE_SAMPLES))))
    distances, accs = [], []
    for index in range(count):
        frame = store.load(index)
        distances.append(frame["distance_mean"][::stride, ::stride])
        accs.append(frame["acc"][::stride, ::stride])
    return images.distance_range(np.stack(distances), np.stack(accs))


def write_videos(store: FrameStore, count: int, outputs: dict[str, Path], fps: float) -> None:
    """The three videos of frames ``0 .. count-1``, in order, each written atomically."""
    lo, hi = distance_colour_range(store, count)
    views: dict[str, Callable[[dict], np.ndarray]] = {
        "color": lambda f: images.to_uint8(f["rgb"]),
        "acc": lambda f: images.visualize_acc(f["acc"]),
        "distance_mean": lambda f: images.visualize_distance(f["distance_mean"], f["acc"], lo, hi),
    }
    for kind, path in outputs.items():
        video.write_video(path, (views[kind](store.load(i)) for i in range(count)), fps)


FrameCallback = Callable[[int, RenderPool], None]


def render_path(
    config: Config,
    scene_path: Path,
    workdir: Path,
    request: RenderRequest = RenderRequest(),
    *,
    address: str | None = None,
    show_progress: bool = True,
    on_frame: FrameCallback | None = None,
) -> RenderResult:
    """Renders the requested path with the latest checkpoint of ``workdir`` into videos.

    ``on_frame(index, pool)`` is called after each frame is saved (for progress hooks
    and tests). Every user error is raised before any worker starts.
    """

    rc = config.render
    frames = rc.frames if request.frames is None else request.frames
    fps = rc.fps if request.fps is None else request.fps
    workers = rc.workers if request.workers is None else request.workers
    if fps <= 0:
        raise RaynerfError(f"--fps must be positive, got {fps}")
    workdir, scene_path = Path(workdir), Path(scene_path)
    scene = load_configured_scene(scene_path, config.data)
    camtoworlds, intrinsics = build_path(
        scene,
        request,
        frames,
        rc.z_variation if request.z_variation is None else request.z_variation,
        rc.z_phase if request.z_phase is None else request.z_phase,
    )
    if request.export_path is not None:
        paths.save_path_json(request.export_path, camtoworlds, intrinsics)

    step, params = load_trained_params(config, scene_path, workdir, make_mesh(jax.devices("cpu")))
    params = jax.device_get(params)
    scene_name = scene_path.resolve().name
    store = FrameStore(
        workdir / "render" / "frames" / render_key(scene_name, step, camtoworlds, intrinsics, config)
    )
    paths.save_path_json(store.directory / "path.json", camtoworlds, intrinsics)
    count, width, height = len(camtoworlds), int(intrinsics["width"]), int(intrinsics["height"])
    todo = [
        FrameJob(i, camtoworlds[i], intrinsics_vector(intrinsics), width, height)
        for i in range(count)
        if not store.has(i)
    ]

    seconds, peak_rss, num_workers = 0.0, 0, 0
    if todo:
        seconds, peak_rss, num_workers = _render_frames(
            config, params, todo, count, store, workers, address, show_progress, on_frame
        )
    outputs = video_paths(workdir, scene_name, step)
    with _child_processes_quiet():
        write_videos(store, count, outputs, fps)
    storage.push(workdir, *(path.relative_to(workdir).as_posix() for path in outputs.values()))
    if not request.keep_frames:
        shutil.rmtree(store.directory, ignore_errors=True)
        with contextlib.suppress(OSError):  # only if no other render's frames are there
            store.directory.parent.rmdir()
    rate = len(todo) / seconds if seconds > 0 else 0.0
    return RenderResult(
        step=step,
        videos=outputs,
        num_frames=count,
        width=width,
        height=height,
        rendered=len(todo),
        reused=count - len(todo),
        seconds=seconds,
        frames_per_sec=rate,
        rays_per_sec=rate * width * height,
        workers=num_workers,
        worker_peak_rss=peak_rss,
    )


def _render_frames(
    config: Config,
    params,
    todo: list[FrameJob],
    count: int,
    store: FrameStore,
    workers: int,
    address: str | None,
    show_progress: bool,
    on_frame: FrameCallback | None,
) -> tuple[float, int, int]:
    """Renders ``todo`` with a fresh pool, saving each frame as it arrives.

    Returns (seconds, the workers' largest peak RSS in bytes, number of workers)."""
    from tqdm.auto import tqdm

    rays_per_frame = todo[0].width * todo[0].height
    with ray_session(address):
        plan = plan_workers(cluster_nodes(), workers)
        start = time.perf_counter()
        bar = tqdm(
            total=count,
            initial=count - len(todo),
            unit="frame",
            desc=f"render ({plan.count} {plan.device})",
            disable=not show_progress,
            dynamic_ncols=True,
        )
        try:
            with RenderPool(config.model, params, plan, config.render.chunk_size) as pool:
                done = 0
                for index, outputs in pool.render(todo):
                    store.save(index, outputs)
                    done += 1
                    bar.update(1)
                    bar.set_postfix_str(
                        f"{done * rays_per_frame / (time.perf_counter() - start):,.0f} rays/s"
                    )
                    if on_frame is not None:
                        on_frame(index, pool)
                seconds = time.perf_counter() - start
                peak = max(pool.peak_rss(), default=0)
        finally:
            bar.close()
    return seconds, peak, plan.count
