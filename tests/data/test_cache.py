"""The tensorstore pixel cache: exact pixels, reuse, rebuild when sources change."""

import os
import shutil

import numpy as np
from PIL import Image

from raynerf.data import cache, images
from raynerf.data.scene import load_scene


def _count_decodes(monkeypatch):
    calls = []
    original = images.read_image

    def counting(path):
        calls.append(path)
        return original(path)

    monkeypatch.setattr(cache, "read_image", counting)
    return calls


def test_pixels_equal_decoded_images(small_scene, private_cache):
    scene = load_scene(small_scene, 4)
    pixels, sizes = cache.load_pixels(scene)
    assert pixels.dtype == np.uint8 and pixels.shape == (16, 30, 40, 3)
    assert sizes.tolist() == [[30, 40]] * 16
    for i in (0, 7, 15):
        np.testing.assert_array_equal(pixels[i], np.asarray(Image.open(scene.image_path(i)).convert("RGB")))
    assert private_cache in cache.cache_folder(scene, private_cache).parents
    assert not any(p.name.endswith(".zarr") for p in small_scene.rglob("*"))  # never inside the scene


def test_cache_is_reused_then_rebuilt_on_change(small_scene, tmp_path, monkeypatch):
    scene_dir = tmp_path / "scene"
    shutil.copytree(small_scene, scene_dir)
    calls = _count_decodes(monkeypatch)
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


def test_each_factor_has_its_own_cache(small_scene, monkeypatch):
    calls = _count_decodes(monkeypatch)
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
