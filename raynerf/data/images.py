"""Image files: folder naming, size checks, decoding with clear errors, downsampling."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from raynerf.errors import RaynerfError


def folder_name(factor: int) -> str:
    """``images`` for factor 1, else ``images_<factor>``."""
    return "images" if factor == 1 else f"images_{factor}"


def image_size(path: Path) -> tuple[int, int]:
    """``(width, height)`` from the file header, or a RaynerfError naming the file."""
    if not path.is_file():
        raise RaynerfError(_missing_message(path))
    try:
        with Image.open(path) as img:
            return img.size
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise RaynerfError(
            f"image {path} is corrupt or not an image ({exc}); replace it with an intact copy"
        ) from None


def read_image(path: Path) -> np.ndarray:
    """Decodes an image file to ``uint8 [H, W, 3]`` RGB, or raises RaynerfError."""
    if not path.is_file():
        raise RaynerfError(_missing_message(path))
    try:
        with Image.open(path) as img:
            img.load()
            return np.asarray(img.convert("RGB"), dtype=np.uint8)
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        raise RaynerfError(
            f"image {path} is corrupt or truncated ({exc}); replace it with an intact copy"
        ) from None


def _missing_message(path: Path) -> str:
    return (
        f"image {path} is named in the COLMAP model but absent on disk; restore it "
        f"to {path.parent} (the model and every images* folder must hold the same names)"
    )


def downsampled_size(width: int, height: int, factor: int) -> tuple[int, int]:
    """The size of a ``factor`` x smaller image (rounded, at least 1 pixel)."""
    return max(1, round(width / factor)), max(1, round(height / factor))


def create_downsampled_folder(scene_path: Path, names: Sequence[str], factor: int) -> Path:
    """Writes ``images_<factor>/`` from ``images/`` (Lanczos, same file names).

    Written to a temporary folder beside the target and renamed at the end, so an
    interrupted run leaves no half-written folder.
    """
    source = scene_path / folder_name(1)
    target = scene_path / folder_name(factor)
    if not source.is_dir():
        raise RaynerfError(f"cannot create {target}: the full-resolution folder {source} is missing too")
    try:
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=scene_path))
    except OSError as exc:
        raise RaynerfError(
            f"cannot create {target} ({exc.strerror}); copy the scene to a writable folder "
            f"or create {target.name}/ there yourself"
        ) from None
    try:
        for name in names:
            pixels = Image.fromarray(read_image(source / name))
            size = downsampled_size(pixels.width, pixels.height, factor)
            small = pixels.resize(size, Image.Resampling.LANCZOS)
            out = tmp / name
            out.parent.mkdir(parents=True, exist_ok=True)
            if out.suffix.lower() in (".jpg", ".jpeg"):
                small.save(out, quality=95)
            else:
                small.save(out)
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return target
