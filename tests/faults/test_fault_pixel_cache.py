"""The decoded-pixel cache after damage.

Promises: a damaged or missing chunk of the cache, or a damaged checksum file, is a
cache miss: the cache is rebuilt from the images (with a note) and the pixels
returned are the images' own; nothing is ever read from the cache unverified. Cache
folders get ordinary permissions, so a cache can be shared.
"""

from __future__ import annotations

import os
import stat

import numpy as np
import pytest

from raynerf.data import cache, images
from raynerf.data.scene import load_scene
from raynerf.errors import RaynerfError


@pytest.fixture
def scene(fault_scene):
    return load_scene(fault_scene, 4)


def _expected(scene) -> np.ndarray:
    return np.stack([images.read_image(scene.image_path(i)) for i in range(scene.num_images)])


def _chunk(folder, index: int):
    return folder / "pixels.zarr" / f"{index}.0.0.0"


def _damage_chunk(folder, index: int) -> None:
    path = _chunk(folder, index)
    data = bytearray(path.read_bytes())
    for i in range(len(data) // 2, len(data)):
        data[i] ^= 0x33
    path.write_bytes(bytes(data))


def _delete_chunk(folder, index: int) -> None:
    _chunk(folder, index).unlink()


def _damage_checksums(folder, index: int) -> None:
    (folder / cache.CHECKSUMS).write_text('{"crc32": [1, 2')


@pytest.mark.parametrize("damage", [_damage_chunk, _delete_chunk, _damage_checksums])
def test_a_damaged_cache_is_rebuilt_not_trusted(scene, tmp_path, decodes, capsys, damage):
    """A corrupted chunk (tensorstore's zstd error), a deleted chunk (which tensorstore
    reads back as an all-black image) or a torn checksum file: the load says the cache
    is damaged, decodes the images again and returns their pixels."""
    pixels, _ = cache.load_pixels(scene, tmp_path)
    assert len(decodes) == scene.num_images
    folder = cache.cache_folder(scene, tmp_path)
    damage(folder, 5)
    capsys.readouterr()

    again, _ = cache.load_pixels(scene, tmp_path)
    assert "pixel cache" in capsys.readouterr().err and len(decodes) == 2 * scene.num_images
    np.testing.assert_array_equal(again, pixels)
    np.testing.assert_array_equal(again, _expected(scene))
    assert sorted(p.name for p in folder.parent.iterdir()) == [folder.name]  # no leftovers
    cache.load_pixels(scene, tmp_path)  # the rebuilt cache verifies: nothing decoded
    assert len(decodes) == 2 * scene.num_images


def test_a_cache_that_never_reads_back_right_is_an_error(scene, tmp_path, monkeypatch):
    """If even the rebuilt cache does not match its checksums (a failing disk), the load
    stops with a RaynerfError naming the folder rather than training on the pixels."""
    monkeypatch.setattr(cache, "_checksum", lambda image: int(np.random.default_rng().integers(2**31)))
    with pytest.raises(RaynerfError, match="pixel cache in .* does not read back"):
        cache.load_pixels(scene, tmp_path)


def test_cache_folders_have_ordinary_permissions(scene, tmp_path):
    umask = os.umask(0o022)
    try:
        cache.load_pixels(scene, tmp_path)
    finally:
        os.umask(umask)
    folder = cache.cache_folder(scene, tmp_path)
    for path in (folder, folder / "pixels.zarr"):
        assert stat.S_IMODE(path.stat().st_mode) == 0o755, oct(path.stat().st_mode)
