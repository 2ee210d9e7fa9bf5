"""The decoded-pixel cache: one tensorstore (zarr) array per scene and factor.

``<cache_dir>/pixels/<scene name>-<hash of its path>/factor_<f>/`` holds
``pixels.zarr`` (uint8 [N, Hmax, Wmax, 3], one chunk per image, zero padding
right and below smaller images), ``fingerprint.json`` (file names, sizes and
mtimes of the source images, the factor and the image sizes) and ``chunks.json``
(a CRC-32 of each image's padded pixels, taken when they were decoded). A run whose
fingerprint matches reads the array and checks every image against its CRC; a read
error, a missing chunk (which reads back as zeros) or a mismatch counts as a miss:
the cache is rebuilt, so training never sees pixels that were not verified.
Otherwise the images are decoded once and the array is written to a temporary
folder and renamed into place, so readers never see a half-written cache. The cache
never lives inside the scene folder.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import sys
import tempfile
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import tensorstore as ts

from raynerf.data.images import read_image
from raynerf.data.scene import Scene
from raynerf.errors import RaynerfError
from raynerf.storage import cache_root

# 2: chunks.json holds a CRC of each image (caches without one are rebuilt).
CACHE_VERSION = 2
CHECKSUMS = "chunks.json"


def default_cache_dir(configured: str = "") -> Path:
    """``configured`` (config.data.cache_dir) or ``$RAYNERF_CACHE`` or ``~/.cache/raynerf``."""
    if configured:
        return Path(configured).expanduser()
    return cache_root()


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
    _ordinary_mode(tmp)  # mkdtemp makes it private; a cache may be shared
    checksums = [0] * scene.num_images
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
            checksums[i] = _checksum(padded)
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
        (tmp / CHECKSUMS).write_text(json.dumps({"crc32": checksums}))
        (tmp / "fingerprint.json").write_text(json.dumps(stamp))
        _install(tmp, folder, stamp)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def _ordinary_mode(folder: Path) -> None:
    """Gives ``folder`` the mode a plain ``mkdir`` would (0777 less the umask)."""
    umask = os.umask(0)
    os.umask(umask)
    folder.chmod(0o777 & ~umask)


def _checksum(image: np.ndarray) -> int:
    """CRC-32 of one padded image's bytes."""
    return zlib.crc32(np.ascontiguousarray(image).data)


def _discard(folder: Path) -> None:
    """Renames ``folder`` aside, then deletes it (another process may install a fresh
    cache at ``folder`` meanwhile; that one is never touched)."""
    if not folder.exists():
        return
    stale = Path(tempfile.mkdtemp(prefix=f".{folder.name}-stale-", dir=folder.parent))
    try:
        os.replace(folder, stale / "old")
    except FileNotFoundError:  # another process moved it first
        pass
    shutil.rmtree(stale, ignore_errors=True)


def _read_verified(folder: Path, count: int) -> tuple[np.ndarray | None, str]:
    """(the cached pixels, "") when every image matches its CRC, else (None, what is wrong)."""
    try:
        checksums = json.loads((folder / CHECKSUMS).read_text())["crc32"]
        pixels = np.asarray(ts.open(_spec(folder / "pixels.zarr")).result().read().result())
    except Exception as exc:  # noqa: BLE001 - tensorstore, zstd, json, OS: all mean "damaged"
        first = (str(exc).strip().splitlines() or [""])[0][:160]
        return None, f"{type(exc).__name__}: {first}" if first else type(exc).__name__
    if len(checksums) != count or len(pixels) != count:
        return None, f"it holds {len(pixels)} images, the scene {count}"
    bad = [i for i in range(count) if _checksum(pixels[i]) != checksums[i]]
    if bad:
        return None, f"{len(bad)} image(s) differ from what was cached, the first is image {bad[0]}"
    return pixels, ""


def _install(tmp: Path, folder: Path, stamp: dict) -> None:
    """Moves the finished ``tmp`` to ``folder`` with renames only, safe against other
    processes caching the same scene at the same time: a matching cache another one
    installed meanwhile is kept (``tmp`` is dropped), and a stale one is renamed aside
    before it is deleted, so nobody ever deletes a folder another process installed."""
    for _ in range(10):
        if _matches(folder, stamp):
            return
        _discard(folder)
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
    for attempt in range(2):
        if not _matches(folder, stamp):
            try:
                _write(scene, folder, stamp, progress)
            except OSError as exc:
                if exc.errno not in (errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOSPC):
                    raise
                raise RaynerfError(
                    f"cannot write the pixel cache in {folder.parent} ({exc.strerror}); set "
                    "--set data.cache_dir=DIR or $RAYNERF_CACHE to a writable folder"
                ) from None
        pixels, problem = _read_verified(folder, scene.num_images)
        if pixels is not None:
            sizes = np.stack([scene.heights, scene.widths], axis=-1).astype(np.int64)
            return pixels, sizes
        if attempt == 0:
            print(f"the pixel cache in {folder} is damaged ({problem}); rebuilding it", file=sys.stderr)
            _discard(folder)
    raise RaynerfError(
        f"the pixel cache in {folder} does not read back as written even after a rebuild ({problem}); "
        "check the disk, or set --set data.cache_dir=DIR or $RAYNERF_CACHE to another folder"
    )


def is_cached(scene: Scene, cache_dir: Path | str | None = None) -> bool:
    """Whether :func:`load_pixels` would read the cache without decoding images."""
    folder = cache_folder(scene, Path(cache_dir) if cache_dir else default_cache_dir())
    return _matches(folder, fingerprint(scene))
