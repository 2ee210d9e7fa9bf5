"""The decoded-pixel cache: one tensorstore (zarr) array per scene and factor.

``<cache_dir>/pixels/<scene name>-<hash of its path>/factor_<f>/`` holds
``pixels.zarr`` (uint8 [N, Hmax, Wmax, 3], one chunk per image, zero padding
right and below smaller images) and ``fingerprint.json`` (file names, sizes and
mtimes of the source images, the factor and the image sizes). A run whose
fingerprint matches reads the array; otherwise the images are decoded once and
the array is written to a temporary folder and renamed into place, so readers
never see a half-written cache. The cache never lives inside the scene folder.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import tensorstore as ts

from raynerf.data.images import read_image
from raynerf.data.scene import Scene
from raynerf.errors import RaynerfError

CACHE_VERSION = 1


def default_cache_dir(configured: str = "") -> Path:
    """``configured`` (config.data.cache_dir) or ``$RAYNERF_CACHE`` or ``~/.cache/raynerf``."""
    if configured:
        return Path(configured).expanduser()
    env = os.environ.get("RAYNERF_CACHE")
    if env:
        return Path(env).expanduser()
    return Path.home() / ".cache" / "raynerf"


def fingerprint(scene: Scene) -> dict:
    """What the cached pixels depend on: every source file's name, size and mtime."""
    files = []
    for i in range(scene.num_images):
        path = scene.image_path(i)
        try:
            stat = path.stat()
        except OSError:
            raise RaynerfError(f"image {path} is absent or unreadable; restore it") from None
        files.append([scene.names[i], stat.st_size, stat.st_mtime_ns])
    return {
        "version": CACHE_VERSION,
        "image_dir": str(scene.image_dir.resolve()),
        "factor": scene.factor,
        "files": files,
        "sizes": [[int(h), int(w)] for h, w in zip(scene.heights, scene.widths)],
    }


def cache_folder(scene: Scene, cache_dir: Path) -> Path:
    """``cache_dir/pixels/<name>-<path hash>/factor_<f>``."""
    digest = hashlib.sha256(str(scene.path.resolve()).encode()).hexdigest()[:12]
    return Path(cache_dir) / "pixels" / f"{scene.path.resolve().name}-{digest}" / f"factor_{scene.factor}"


def _spec(path: Path, shape: tuple[int, ...] | None = None) -> dict:
    spec: dict = {"driver": "zarr", "kvstore": {"driver": "file", "path": str(path)}}
    if shape is not None:
        spec["metadata"] = {
            "shape": list(shape),
            "chunks": [1, *shape[1:]],
            "dtype": "|u1",
            "compressor": {"id": "zstd", "level": 1},
        }
    return spec


def _write(scene: Scene, folder: Path, stamp: dict, progress: bool) -> None:
    """Decodes every image and writes the array + fingerprint into ``folder`` atomically."""
    shape = (scene.num_images, int(scene.heights.max()), int(scene.widths.max()), 3)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}-", dir=folder.parent))
    try:
        array = ts.open(_spec(tmp / "pixels.zarr", shape), create=True).result()

        def store(i: int) -> None:
            pixels = read_image(scene.image_path(i))
            h, w = int(scene.heights[i]), int(scene.widths[i])
            if pixels.shape[:2] != (h, w):
                raise RaynerfError(
                    f"image {scene.image_path(i)} changed size while loading "
                    f"({pixels.shape[1]}x{pixels.shape[0]}, expected {w}x{h}); re-run"
                )
            padded = np.zeros(shape[1:], np.uint8)
            padded[:h, :w] = pixels
            array[i].write(padded).result()

        with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
            done = pool.map(store, range(scene.num_images))
            if progress:
                from tqdm import tqdm

                done = tqdm(
                    done, total=scene.num_images, desc=f"caching {scene.image_dir.name}", unit="image"
                )
            for _ in done:
                pass
        (tmp / "fingerprint.json").write_text(json.dumps(stamp))
        _install(tmp, folder, stamp)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def _install(tmp: Path, folder: Path, stamp: dict) -> None:
    """Moves the finished ``tmp`` to ``folder`` with renames only, safe against other
    processes caching the same scene at the same time: a matching cache another one
    installed meanwhile is kept (``tmp`` is dropped), and a stale one is renamed aside
    before it is deleted, so nobody ever deletes a folder another process installed."""
    for _ in range(10):
        if _matches(folder, stamp):
            return
        if folder.exists():
            stale = Path(tempfile.mkdtemp(prefix=f".{folder.name}-stale-", dir=folder.parent))
            try:
                os.replace(folder, stale / "old")
            except FileNotFoundError:  # another process moved it first
                pass
            shutil.rmtree(stale, ignore_errors=True)
        try:
            os.replace(tmp, folder)
            return
        except OSError:  # another process installed its copy between the two renames
            continue
    raise RaynerfError(
        f"could not install the pixel cache in {folder}: other processes keep replacing it; re-run"
    )


def _matches(folder: Path, stamp: dict) -> bool:
    try:
        return json.loads((folder / "fingerprint.json").read_text()) == stamp
    except (OSError, ValueError):
        return False


def load_pixels(
    scene: Scene, cache_dir: Path | str | None = None, progress: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """The scene's decoded images, from the cache (built or rebuilt when stale).

    Returns:
      (pixels uint8 [N, Hmax, Wmax, 3] zero-padded, sizes int [N, 2] as (height, width)).
    """
    folder = cache_folder(scene, Path(cache_dir) if cache_dir else default_cache_dir())
    stamp = fingerprint(scene)
    if not _matches(folder, stamp):
        try:
            _write(scene, folder, stamp, progress)
        except PermissionError as exc:
            raise RaynerfError(
                f"cannot write the pixel cache in {folder.parent} ({exc.strerror}); set "
                "--set data.cache_dir=DIR or $RAYNERF_CACHE to a writable folder"
            ) from None
    pixels = ts.open(_spec(folder / "pixels.zarr")).result().read().result()
    sizes = np.stack([scene.heights, scene.widths], axis=-1).astype(np.int64)
    return np.asarray(pixels), sizes


def is_cached(scene: Scene, cache_dir: Path | str | None = None) -> bool:
    """Whether :func:`load_pixels` would read the cache without decoding images."""
    folder = cache_folder(scene, Path(cache_dir) if cache_dir else default_cache_dir())
    return _matches(folder, fingerprint(scene))
