"""Frames written as mp4 videos.

Videos are H.264 in yuv420p (plays everywhere) encoded with the ffmpeg binary that
ships inside ``imageio-ffmpeg``, so no system ffmpeg is needed. A video is written to
a temporary name in the same folder and renamed into place, so an interrupted write
never leaves a damaged mp4 behind; the temporary file of a write that was killed
outright (``.<name>.<random>.partial.mp4``) is removed when the video is written again.
"""

from __future__ import annotations

import glob
import os
from collections.abc import Iterable
from pathlib import Path

import imageio.v2 as imageio
import numpy as np

from raynerf.storage import atomic_path

# Quality on imageio-ffmpeg's 0..10 scale (8 -> x264 constant rate factor of about 10).
VIDEO_QUALITY = 8


def encoded_size(width: int, height: int) -> tuple[int, int]:
    """The (width, height) a video of that frame size decodes at.

    H.264 in yuv420p needs even sizes, so an odd width or height gets one extra
    column or row, a copy of the last one.
    """
    return width + width % 2, height + height % 2


def _pad_to_even(frame: np.ndarray) -> np.ndarray:
    """uint8 [H, W, 3] -> [H + H % 2, W + W % 2, 3] by repeating the last row / column."""
    h, w = frame.shape[:2]
    return np.pad(frame, ((0, h % 2), (0, w % 2), (0, 0)), mode="edge")


def remove_stale_partials(path: str | os.PathLike) -> list[Path]:
    """Deletes the temporary files that killed writes of ``path`` left next to it
    (see :func:`raynerf.storage.atomic_path`); returns what was removed."""
    path = Path(path)
    pattern = f".{glob.escape(path.stem)}.*.partial{glob.escape(path.suffix)}"
    removed = []
    for stale in path.parent.glob(pattern):
        try:
            stale.unlink()
            removed.append(stale)
        except FileNotFoundError:
            pass
    return removed


def write_video(path: str | os.PathLike, frames: Iterable[np.ndarray], fps: float) -> None:
    """Encodes uint8 [H, W, 3] frames (all one size) as an H.264 mp4, atomically.

    Odd sizes are padded to even (see :func:`encoded_size`). Frames are consumed one at
    a time, so a generator keeps memory flat. The file appears only once it is complete.
    """
    if fps <= 0:
        raise ValueError(f"fps must be positive, got {fps}")
    remove_stale_partials(path)
    count, size = 0, None
    with atomic_path(path) as tmp:
        writer = imageio.get_writer(
            tmp,
            format="FFMPEG",
            mode="I",
            fps=fps,
            codec="libx264",
            pixelformat="yuv420p",
            quality=VIDEO_QUALITY,
            macro_block_size=1,
            ffmpeg_log_level="error",
        )
        try:
            for frame in frames:
                frame = np.asarray(frame)
                if frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[-1] != 3:
                    raise ValueError(f"frames must be uint8 [H, W, 3], got {frame.dtype} {frame.shape}")
                if size is None:
                    size = frame.shape
                elif frame.shape != size:
                    raise ValueError(f"frame {count} has shape {frame.shape}, expected {size}")
                writer.append_data(_pad_to_even(frame))
                count += 1
        finally:
            writer.close()
        if count == 0:
            raise ValueError(f"no frames to write to {path}")


def read_video_info(path: str | os.PathLike) -> tuple[int, int, int, float]:
    """(num_frames, width, height, fps) of a video file, by decoding it."""
    reader = imageio.get_reader(path, format="FFMPEG")
    try:
        meta = reader.get_meta_data()
        width, height = meta["size"]
        return reader.count_frames(), int(width), int(height), float(meta["fps"])
    finally:
        reader.close()
