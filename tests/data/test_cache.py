"""The tensorstore pixel cache: exact pixels, reuse, rebuild when sources change."""

import os
import shutil
import subprocess
import sys

import numpy as np
from PIL import Image

from raynerf.data import cache
from raynerf.data.scene import load_scene


def test_pixels_equal_decoded_images(small_scene, private_cache):
    scene = load_scene(small_scene, 4)
    pixels, sizes = cache.load_pixels(scene)
    assert pixels.dtype == np.uint8 and pixels.shape == (16, 30, 40, 3)
    assert sizes.tolist() == [[30, 40]] * 16
    for i in (0, 7, 15):
        np.testing.assert_array_equal(pixels[i], np.asarray(Image.open(scene.image_path(i)).convert("RGB")))
    assert private_cache in cache.cache_folder(scene, private_cache).parents
    assert not any(p.name.endswith(".zarr") for p in small_scene.rglob("*"))  # never inside the scene


def test_cache_is_reused_then_rebuilt_on_change(small_scene, tmp_path, decodes):
    scene_dir = tmp_path / "scene"
    shutil.copytree(small_scene, scene_dir)
    calls = decodes
    scene = load_scene(scene_dir, 8)
    first, _ = cache.load_pixels(scene)
    assert len(calls) == 16
    again, _ = cache.load_pixels(load_scene(scene_dir, 8))
    assert len(calls) == 16  # read back from the array, nothing decoded
    np.testing.assert_array_equal(first, again)

    # replace one source image: the cache must notice and hold the new pixels
    target = scene_dir / "images_8" / scene.names[3]
    Image.fromarray(np.full((15, 20, 3), 200, np.uint8)).save(target, quality=100)
    os.utime(target, ns=(1, 1))
    rebuilt, _ = cache.load_pixels(load_scene(scene_dir, 8))
    assert len(calls) == 32
    assert np.abs(rebuilt[3].astype(int) - 200).max() <= 2
    np.testing.assert_array_equal(rebuilt[4], first[4])


def test_a_cache_written_meanwhile_by_another_process_is_kept(small_scene, private_cache):
    """Two runs that both found the cache stale: the one that finishes second keeps the
    first one's copy (a reader may be using it) instead of deleting it."""
    scene = load_scene(small_scene, 8)
    first, _ = cache.load_pixels(scene)
    folder = cache.cache_folder(scene, private_cache)
    inode = folder.stat().st_ino
    cache._write(scene, folder, cache.fingerprint(scene), progress=False)  # the late writer
    assert folder.stat().st_ino == inode
    assert sorted(p.name for p in folder.parent.iterdir()) == [folder.name]  # no temporaries left
    np.testing.assert_array_equal(cache.load_pixels(scene)[0], first)


def test_a_stale_cache_is_replaced_without_leftovers(small_scene, private_cache):
    scene = load_scene(small_scene, 8)
    folder = cache.cache_folder(scene, private_cache)
    folder.mkdir(parents=True)
    (folder / "fingerprint.json").write_text('{"version": 0}')
    pixels, _ = cache.load_pixels(scene)
    assert cache.is_cached(scene) and pixels.shape == (16, 15, 20, 3)
    assert sorted(p.name for p in folder.parent.iterdir()) == [folder.name]


def test_processes_caching_one_scene_at_once_all_succeed(small_scene, tmp_path):
    """Several processes start on the same stale cache together (two trainings of one
    scene): each one loads the right pixels, and one cache folder remains."""
    script = (
        "import sys, numpy as np; from pathlib import Path\n"
        "from raynerf.data import cache; from raynerf.data.scene import load_scene\n"
        "pixels, _ = cache.load_pixels(load_scene(Path(sys.argv[1]), 8), sys.argv[2])\n"
        "print(int(pixels.astype(np.int64).sum()))\n"
    )
    cache_dir = tmp_path / "shared-cache"
    runs = [
        subprocess.Popen(
            [sys.executable, "-c", script, str(small_scene), str(cache_dir)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(4)
    ]
    results = [run.communicate(timeout=300) for run in runs]
    for run, (_, err) in zip(runs, results):
        assert run.returncode == 0, err
    expected = int(cache.load_pixels(load_scene(small_scene, 8), cache_dir)[0].astype(np.int64).sum())
    assert [int(out) for out, _ in results] == [expected] * 4
    folder = cache.cache_folder(load_scene(small_scene, 8), cache_dir)
    assert sorted(p.name for p in folder.parent.iterdir()) == [folder.name]


def test_each_factor_has_its_own_cache(small_scene, decodes):
    calls = decodes
    a, _ = cache.load_pixels(load_scene(small_scene, 8))
    b, _ = cache.load_pixels(load_scene(small_scene, 4))
    assert len(calls) == 32 and a.shape[1:3] == (15, 20) and b.shape[1:3] == (30, 40)
    assert cache.is_cached(load_scene(small_scene, 8)) and cache.is_cached(load_scene(small_scene, 4))


def test_default_cache_dir_order(monkeypatch, tmp_path):
    monkeypatch.setenv("RAYNERF_CACHE", str(tmp_path / "env"))
    assert cache.default_cache_dir("/x/y") == cache.Path("/x/y")
    assert cache.default_cache_dir("") == tmp_path / "env"
    monkeypatch.delenv("RAYNERF_CACHE")
    assert cache.default_cache_dir("") == cache.Path.home() / ".cache" / "raynerf"
