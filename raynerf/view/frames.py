"""Frames for the viewer: a browser camera -> rays -> the trained model -> an image.

The browser's camera is a pinhole with a vertical field of view and the page's aspect
ratio, posed in the normalised scene frame with OpenCV axes (x right, y down, z
forward), as viser reports it. :class:`FrameRenderer` renders it at a given number of
pixels, in bands of rows that each fit one compiled chunk, so a frame can be abandoned
between bands when the camera moves on. Sizes are chosen from the measured speed of
the device at hand (:func:`pixels_for`): a coarse image while the camera moves, a
sharper one once it rests.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from typing import Literal

import jax
import numpy as np

from raynerf.config import ModelConfig
from raynerf.data.cameras import camera_rays
from raynerf.mesh import make_mesh, replicated
from raynerf.model.mipnerf360 import MipNerf360
from raynerf.model.render_chunks import chunk_unit, make_render_fn, render_image, round_chunk
from raynerf.render.images import to_uint8, visualize_acc, visualize_distance

OutputKind = Literal["colour", "distance", "accumulation"]
OUTPUT_KINDS: tuple[OutputKind, ...] = ("colour", "distance", "accumulation")
# Seconds a frame may take while the camera moves (a few frames a second), and at rest
# (the sharper image that follows).
MOVING_SECONDS = 0.25
RESTING_SECONDS = 4.0
MIN_PIXELS = 48 * 36


def view_intrinsics(fov_y: float, width: int, height: int) -> np.ndarray:
    """A centred pinhole of vertical field of view ``fov_y`` (radians) for a
    ``width x height`` image: [8] ``(fx, fy, cx, cy, 0, 0, 0, 0)`` with square pixels."""
    if not 0 < fov_y < math.pi:
        raise ValueError(f"the field of view must lie in (0, pi) radians, got {fov_y}")
    focal = 0.5 * height / math.tan(0.5 * fov_y)
    return np.array([focal, focal, 0.5 * width, 0.5 * height, 0, 0, 0, 0], np.float64)


def image_size(aspect: float, pixels: float, max_height: int | None = None) -> tuple[int, int]:
    """(width, height) of about ``pixels`` pixels at ``aspect`` = width / height, the
    height at most ``max_height``; at least 1 x 1."""
    height = math.sqrt(max(pixels, 1.0) / aspect)
    if max_height is not None:
        height = min(height, max_height)
    height = max(1, round(height))
    return max(1, round(height * aspect)), height


def pixels_for(seconds: float, rays_per_second: float, lo: float = MIN_PIXELS, hi: float = math.inf) -> int:
    """The pixels one frame can have to take ``seconds`` at ``rays_per_second``, within [lo, hi]."""
    return int(min(max(seconds * rays_per_second, lo), hi))


def as_image(outputs: Mapping[str, np.ndarray], kind: OutputKind) -> np.ndarray:
    """A rendered frame's outputs (``rgb`` [H, W, 3], ``acc`` and ``distance_mean``
    [H, W] or [H, W, 1]) -> uint8 [H, W, 3] of the chosen ``kind``: the colour, the
    distance colour-mapped over this frame's range (faded where nothing was hit), or
    the accumulated opacity as gray."""
    if kind == "colour":
        return to_uint8(outputs["rgb"])
    if kind == "distance":
        return visualize_distance(outputs["distance_mean"], outputs["acc"])
    if kind == "accumulation":
        return visualize_acc(outputs["acc"])
    raise ValueError(f"unknown output {kind!r}; one of {OUTPUT_KINDS}")


class FrameRenderer:
    """Renders browser cameras with one set of trained parameters (replaceable).

    Every call renders chunks of ``chunk`` rays, so the renderer compiles once (in
    :meth:`warm_up`) whatever the image size. ``rays_per_second`` is measured there
    and refreshed by every completed frame.
    """

    def __init__(self, model_config: ModelConfig, params, chunk: int = 4096, devices=None):
        self.config = model_config
        self.mesh = make_mesh(jax.local_devices() if devices is None else devices)
        self.chunk = round_chunk(chunk, chunk_unit(self.mesh))
        self._render_fn = make_render_fn(MipNerf360(model_config), self.mesh)
        self.params = None
        self.set_params(params)
        self.rays_per_second = 0.0

    def set_params(self, params) -> None:
        """Uses ``params`` (host or device arrays) from the next band on."""
        self.params = jax.device_put(params, replicated(self.mesh))

    def warm_up(self) -> float:
        """Compiles the chunk renderer and measures its speed on a second call: rays/s."""
        width = max(1, int(math.sqrt(self.chunk)))
        height = max(1, self.chunk // width)
        pose = np.concatenate([np.eye(3), [[0.0], [0.0], [-1.0]]], axis=1)
        camera = view_intrinsics(math.radians(50), width, height)
        self.render(pose, camera, width, height)
        start = time.perf_counter()
        self.render(pose, camera, width, height)
        self.rays_per_second = width * height / max(time.perf_counter() - start, 1e-6)
        return self.rays_per_second

    def render(
        self,
        camtoworld: np.ndarray,
        intrinsics: np.ndarray,
        width: int,
        height: int,
        abandon: Callable[[], bool] = lambda: False,
    ) -> dict[str, np.ndarray] | None:
        """One frame: ``camtoworld`` [3, 4] (OpenCV axes, normalised frame), ``intrinsics``
        [8] -> {rgb [H, W, 3], acc [H, W], distance_mean [H, W], ...} float32, or
        None when ``abandon()`` turned true between two bands of rows."""
        start = time.perf_counter()
        params = self.params  # one set for the whole frame, though a newer one may arrive
        rays = camera_rays(camtoworld, intrinsics, width, height, self.config.near, self.config.far)
        rows = max(1, self.chunk // width)
        bands = []
        for top in range(0, height, rows):
            if abandon():
                return None
            band = {name: values[top : top + rows] for name, values in rays.items()}
            bands.append(render_image(self._render_fn, params, band, self.chunk, self.mesh))
        frame = {name: np.concatenate([band[name] for band in bands]) for name in bands[0]}
        self.rays_per_second = width * height / max(time.perf_counter() - start, 1e-6)
        return frame
