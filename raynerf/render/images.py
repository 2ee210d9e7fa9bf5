"""Rendered buffers as viewable images: colour, accumulation and distance colour maps,
written as PNGs.

Every file is written to a temporary name in the same folder and renamed into place,
so an interrupted write never leaves a damaged file behind (:func:`raynerf.storage.atomic_path`).
"""

from __future__ import annotations

import os
from collections.abc import Iterable

import imageio.v2 as imageio
import numpy as np

from raynerf.storage import atomic_path

# Percentiles of the distance distribution mapped to the two ends of the colour map.
DISTANCE_PERCENTILES = (0.5, 99.5)
DISTANCE_COLORMAP = "turbo"


def to_uint8(image: np.ndarray) -> np.ndarray:
    """Floats in [0, 1] -> uint8 in [0, 255], clipped and rounded; NaN becomes 0. Same shape."""
    image = np.nan_to_num(np.asarray(image, np.float64), nan=0.0)
    return np.round(np.clip(image, 0.0, 1.0) * 255.0).astype(np.uint8)


def visualize_acc(acc: np.ndarray) -> np.ndarray:
    """Accumulated opacity as gray RGB: [..., H, W] or [..., H, W, 1] -> uint8 [..., H, W, 3]."""
    acc = np.asarray(acc)
    if acc.shape[-1:] == (1,):
        acc = acc[..., 0]
    return np.repeat(to_uint8(acc)[..., None], 3, axis=-1)


def _weighted_percentiles(
    values: np.ndarray, weights: np.ndarray, percentiles: Iterable[float]
) -> np.ndarray:
    """Percentiles of a weighted sample: values, weights [N] -> [len(percentiles)].

    Each value sits at the midpoint of its cumulative weight; between those points the
    quantile function is linear. With equal weights this is numpy's 'hazen' percentile.
    """
    order = np.argsort(values)
    values, weights = values[order], weights[order]
    cumulative = np.cumsum(weights)
    positions = (cumulative - 0.5 * weights) / cumulative[-1]
    return np.interp(np.asarray(percentiles, np.float64) / 100.0, positions, values)


def distance_range(distance: np.ndarray, acc: np.ndarray | None = None) -> tuple[float, float]:
    """Robust (lo, hi) for colouring ``distance`` ([...] any shape; ``acc`` the same).

    The 0.5th and 99.5th percentiles of the finite, positive distances, weighted by
    ``acc`` when given. Pass the whole sequence of frames to get one range for a video.
    """
    distance = np.asarray(distance, np.float64).ravel()
    weights = np.ones_like(distance) if acc is None else np.asarray(acc, np.float64).reshape(distance.shape)
    keep = np.isfinite(distance) & (distance > 0) & np.isfinite(weights) & (weights > 0)
    if not keep.any():
        return 1.0, 1.0
    lo, hi = _weighted_percentiles(distance[keep], weights[keep], DISTANCE_PERCENTILES)
    return float(lo), float(hi)


def _colormap_lut(name: str = DISTANCE_COLORMAP) -> np.ndarray:
    """The 256-entry RGB lookup table of a matplotlib colour map: uint8 [256, 3]."""
    from matplotlib import colormaps

    return to_uint8(colormaps[name](np.linspace(0.0, 1.0, 256))[:, :3])


def distance_to_unit(distance: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """Distances -> positions in [0, 1] on a log curve: ``lo`` -> 1 (near), ``hi`` -> 0 (far).

    Values outside [lo, hi] are clipped; NaN and +inf count as far, zero or negative as near.
    """
    tiny = np.finfo(np.float64).tiny
    lo = max(float(lo), tiny)
    hi = max(float(hi), lo)
    d = np.nan_to_num(np.asarray(distance, np.float64), nan=np.inf, posinf=np.inf)
    d = np.clip(d, lo, hi)
    span = np.log(hi) - np.log(lo)
    if span <= 0:
        return np.full(d.shape, 0.5)
    return (np.log(hi) - np.log(d)) / span


def visualize_distance(
    distance: np.ndarray,
    acc: np.ndarray | None = None,
    lo: float | None = None,
    hi: float | None = None,
) -> np.ndarray:
    """Colour-coded distances as uint8 RGB, as multinerf users know them.

    Distances go through a log curve between ``lo`` and ``hi`` (default: robust
    percentiles over everything given, see :func:`distance_range`) and the turbo colour
    map: near is red, far is blue. With ``acc``, the percentiles are weighted by it and
    the colours are faded to black where nothing was hit.

    Args:
      distance: [H, W] or [F, H, W] (a whole video, so the colours are stable).
      acc: None or the same shape (a trailing axis of 1 is accepted for both).
      lo, hi: optional fixed range overriding the percentiles.
    Returns:
      uint8 [..., H, W, 3].
    """
    distance = np.asarray(distance)
    if distance.shape[-1:] == (1,) and distance.ndim >= 3:
        distance = distance[..., 0]
    if acc is not None:
        acc = np.asarray(acc, np.float64).reshape(distance.shape)
    if lo is None or hi is None:
        auto_lo, auto_hi = distance_range(distance, acc)
        lo = auto_lo if lo is None else lo
        hi = auto_hi if hi is None else hi
    unit = distance_to_unit(distance, lo, hi)
    rgb = _colormap_lut()[np.round(unit * 255).astype(np.int64)]
    if acc is None:
        return rgb
    alpha = np.clip(np.nan_to_num(acc), 0.0, 1.0)[..., None]
    return to_uint8(rgb / 255.0 * alpha)


def write_png(path: str | os.PathLike, image: np.ndarray) -> None:
    """Writes an image as PNG atomically: uint8 [H, W] / [H, W, 3], or floats in [0, 1]."""
    image = np.asarray(image)
    if image.dtype != np.uint8:
        image = to_uint8(image)
    with atomic_path(path) as tmp:
        imageio.imwrite(tmp, image, format="PNG")
