"""The Ray render pool end to end: frames match a one-process render, videos are complete,
a killed worker's frames are retried, and an interrupted render resumes.

One local Ray instance (2 CPUs) serves the whole module, its workers sharing a JAX
compilation cache so that only the first one compiles; the model is a tiny, freshly
initialised Mip-NeRF 360 (one proposal level) saved as a checkpoint (rendering does
not care whether it was trained), the scene a generated 64x48 capture rendered at
factor 4 (16x12 frames).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import shutil
import signal

import jax
import numpy as np
import pytest
import ray

from raynerf.config import load_config
from raynerf.data.cameras import camera_rays
from raynerf.data.scene import load_scene
from raynerf.data.synthetic import make_scene
from raynerf.mesh import make_mesh
from raynerf.model.mipnerf360 import MipNerf360
from raynerf.model.render_chunks import choose_chunk, chunk_unit, make_render_fn, render_image
from raynerf.render import paths, video
from raynerf.render.job import RenderRequest, intrinsics_vector, render_intrinsics, render_path
from raynerf.render.pool import FrameJob, FrameStore, RenderPool, WorkerPlan
from raynerf.training import checkpoints
from raynerf.training.checkpoints import load_trained_params
from raynerf.training.loop import write_config
from raynerf.training.optim import make_optimizer
from raynerf.training.step import create_train_state

pytestmark = pytest.mark.filterwarnings("ignore:os.fork:RuntimeWarning")

STEP = 3
FRAMES = 5
OVERRIDES = (
    "model.nerf_net_width=16",
    "model.prop_net_width=8",
    "model.num_prop_samples=16",
    "model.num_nerf_samples=8",
    "model.nerf_net_depth=2",
    "model.prop_net_depth=2",
    "model.skip_layer=1",
    "model.num_levels=2",
    "data.factor=4",
)


def save_checkpoint(config, scene_path, workdir):
    """A workdir as training leaves it: config.toml, run.json and one checkpoint."""
    workdir.mkdir(parents=True, exist_ok=True)
    checkpoints.check_workdir(workdir, scene_path, config, write=True)
    write_config(workdir, config)
    state = create_train_state(config, MipNerf360(config.model), make_optimizer(config.train), make_mesh())
    manager = checkpoints.checkpoint_manager(workdir / "checkpoints", 1, async_save=False)
    checkpoints.save(manager, STEP, state)
    manager.wait_until_finished()
    manager.close()


@pytest.fixture(scope="module")
def local_ray(tmp_path_factory):
    # Workers inherit the environment of the Ray instance started here.
    saved = os.environ.get("JAX_COMPILATION_CACHE_DIR")
    os.environ["JAX_COMPILATION_CACHE_DIR"] = str(tmp_path_factory.mktemp("jax_cache"))
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level=logging.ERROR)
    yield
    ray.shutdown()
    if saved is None:
        del os.environ["JAX_COMPILATION_CACHE_DIR"]
    else:
        os.environ["JAX_COMPILATION_CACHE_DIR"] = saved


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("render")
    scene_path = make_scene(root / "scene", num_images=8, width=64, height=48)
    config = load_config("tiny", OVERRIDES)
    save_checkpoint(config, scene_path, root / "work")
    return config, scene_path, root / "work"


@pytest.fixture(scope="module")
def rendered(run, local_ray):
    """A 5-frame ellipse rendered by 2 workers, frames kept, path exported; worker 0 is
    killed (SIGKILL) as soon as the first frame is in, while both are busy."""
    config, scene_path, workdir = run
    request = RenderRequest(
        frames=FRAMES,
        fps=4,
        workers=2,
        keep_frames=True,
        z_variation=0.5,
        export_path=workdir / "exported.json",
    )
    seen, killed = [], []

    def kill_first_worker(index, pool):
        seen.append(index)
        if not killed:
            killed.append(pool.pids[0])
            os.kill(pool.pids[0], signal.SIGKILL)

    result = render_path(
        config, scene_path, workdir, request, show_progress=False, on_frame=kill_first_worker
    )
    return result, seen, killed, request


def frames_dir(workdir):
    (folder,) = (workdir / "render" / "frames").iterdir()
    return folder


def test_pool_frames_equal_one_process_render(run, rendered):
    config, scene_path, workdir = run
    result, seen, _, _ = rendered
    assert sorted(seen) == list(range(FRAMES)) and result.rendered == FRAMES and result.workers == 2
    camtoworlds, intrinsics = paths.load_path_json(workdir / "exported.json")
    mesh = make_mesh()
    step, params = load_trained_params(config, scene_path, workdir, mesh)
    assert step == STEP
    render_fn = make_render_fn(MipNerf360(config.model), mesh)
    store = FrameStore(frames_dir(workdir))
    for index in (0, FRAMES - 1):
        rays = camera_rays(
            camtoworlds[index],
            intrinsics_vector(intrinsics),
            intrinsics["width"],
            intrinsics["height"],
            config.model.near,
            config.model.far,
        )
        # The workers' chunk (the whole frame): another cut reorders float32 sums, which
        # moves distance_mean by up to ~1e-7 x far on pixels that see the sky.
        chunk = choose_chunk(config.render.chunk_size, 16 * 12, chunk_unit(mesh), config.model, float("inf"))
        expected = render_image(render_fn, params, rays, chunk, mesh)
        saved = store.load(index)
        np.testing.assert_allclose(saved["rgb"], expected["rgb"], rtol=1e-5, atol=1e-6)
        assert saved["rgb"].shape == (12, 16, 3) and saved["acc"].shape == (12, 16)
        np.testing.assert_allclose(saved["acc"], expected["acc"].reshape(12, 16), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(
            saved["distance_mean"], expected["distance_mean"].reshape(12, 16), rtol=1e-5
        )


def test_videos_decode_with_frames_size_fps(run, rendered):
    config, scene_path, workdir = run
    result, _, _, _ = rendered
    assert (result.width, result.height) == (16, 12)
    names = {kind: path.name for kind, path in result.videos.items()}
    assert names == {
        kind: f"{scene_path.name}_path_renders_step_{STEP}_{kind}.mp4"
        for kind in ("color", "acc", "distance_mean")
    }
    for path in result.videos.values():
        assert path.parent == workdir / "render"
        assert video.read_video_info(path) == (FRAMES, 16, 12, 4.0)
    import imageio.v2 as imageio

    colour = np.stack(imageio.mimread(result.videos["color"], format="FFMPEG")).astype(float)
    assert colour.std(axis=(1, 2)).mean() > 1.0  # varies within frames
    assert np.abs(np.diff(colour, axis=0)).mean() > 0.5  # and between frames


def test_killed_worker_frames_are_retried(rendered):
    result, seen, killed, _ = rendered
    with pytest.raises(ProcessLookupError):  # the worker really died ...
        os.kill(killed[0], 0)
    assert sorted(seen) == list(range(FRAMES))  # ... and every frame still came back once
    for path in result.videos.values():
        assert video.read_video_info(path)[0] == FRAMES


def test_frames_of_a_worker_out_of_restarts_go_to_the_others(run, local_ray):
    """Without restarts the killed worker leaves the pool; its frame is rendered again by
    the survivor in a second round."""
    config, scene_path, workdir = run
    mesh = make_mesh()
    _, params = load_trained_params(config, scene_path, workdir, mesh)
    scene = load_scene(scene_path, 4)
    poses = paths.ellipse_path(scene.camtoworlds, 4)
    intrinsics = render_intrinsics(scene)  # the module's frame size: its compilation is cached
    jobs = [FrameJob(i, poses[i], intrinsics_vector(intrinsics), 16, 12) for i in range(4)]
    plan = WorkerPlan(count=2, num_cpus=1, threads=1)
    seen = []
    with RenderPool(
        config.model, jax.device_get(params), plan, config.render.chunk_size, max_restarts=0
    ) as pool:
        for index, outputs in pool.render(jobs):
            assert outputs["rgb"].shape == (12, 16, 3)
            if not seen:
                os.kill(pool.pids[0], signal.SIGKILL)
            seen.append(index)
        assert len(pool._live_actors()) == 1
    assert sorted(seen) == [0, 1, 2, 3]


def test_interrupted_render_resumes_with_missing_frames_only(run, rendered, tmp_path):
    config, scene_path, workdir = run
    *_, request = rendered
    work = tmp_path / "work"
    shutil.copytree(workdir, work, ignore=shutil.ignore_patterns("*.mp4"))
    store = FrameStore(frames_dir(work))
    for index in (1, 3):  # as if the first run had stopped before these
        store.path(index).unlink()
    untouched = {i: store.path(i).stat().st_mtime_ns for i in (0, 2, 4)}

    class Interrupt(Exception):
        pass

    def stop(index, pool):
        raise Interrupt

    request = dataclasses.replace(request, workers=1, export_path=None)
    with pytest.raises(Interrupt):  # interrupted again after one more frame
        render_path(config, scene_path, work, request, show_progress=False, on_frame=stop)
    assert not list((work / "render").glob("*.mp4"))
    assert sum(store.has(i) for i in range(FRAMES)) == 4
    assert {i: store.path(i).stat().st_mtime_ns for i in untouched} == untouched  # not re-rendered

    seen = []
    result = render_path(
        config,
        scene_path,
        work,
        dataclasses.replace(request, keep_frames=False),
        show_progress=False,
        on_frame=lambda index, pool: seen.append(index),
    )
    assert len(seen) == 1 and seen[0] in (1, 3)
    assert (result.rendered, result.reused) == (1, FRAMES - 1)
    for path in result.videos.values():
        assert video.read_video_info(path)[0] == FRAMES
    assert not store.directory.exists()  # frames are removed once the videos are written
