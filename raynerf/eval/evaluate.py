"""Evaluation on the held-out test views: render, score, save images and metrics.json.

``WORKDIR/eval/metrics.json`` is strict JSON: a value that is not finite (the PSNR
of a view rendered exactly, which is infinite) is written as ``null``.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import jax
import numpy as np
from tqdm.auto import tqdm

from raynerf import storage
from raynerf.config import Config
from raynerf.data.cache import load_pixels
from raynerf.data.scene import Scene, image_rays, load_configured_scene
from raynerf.errors import RaynerfError
from raynerf.eval import metrics as image_metrics
from raynerf.mesh import make_mesh
from raynerf.model.mipnerf360 import MipNerf360
from raynerf.model.render_chunks import choose_chunk, chunk_unit, make_render_fn, render_image
from raynerf.render.images import to_uint8, visualize_acc, visualize_distance, write_png
from raynerf.training import checkpoints


def depth_abs_error(distance: np.ndarray, true_depth: np.ndarray, scale: float) -> np.ndarray:
    """Absolute error of rendered depth against ground-truth z-depth, in COLMAP units.

    Args:
      distance: [H, W] rendered ``distance_mean``: ``t`` along rays whose directions
        have unit depth, so it is z-depth in the normalised frame.
      true_depth: [H, W] z-depth in COLMAP world units (``depth_<factor>/<stem>.npy``).
      scale: normalised units per COLMAP unit (``Scene.scale``).
    Returns:
      [M] errors of the pixels whose true depth is finite and positive.
    """
    if distance.shape != true_depth.shape:
        raise ValueError(f"rendered {distance.shape} and true depth {true_depth.shape} differ in shape")
    valid = np.isfinite(true_depth) & (true_depth > 0)
    return np.abs(np.asarray(distance, np.float64)[valid] / scale - true_depth[valid])


def true_depth_path(scene: Scene, index: int) -> Path:
    return scene.path / f"depth_{scene.factor}" / f"{Path(scene.names[index]).stem}.npy"


def strict_json(value: Any) -> Any:
    """``value`` with every non-finite float replaced by None (JSON has no inf or NaN)."""
    if isinstance(value, dict):
        return {k: strict_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [strict_json(v) for v in value]
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(value) else None
    return value


def _mean(values: list[float]) -> float:
    return float(np.mean(values)) if values else math.nan


def evaluate(
    config: Config, scene_path: Path, workdir: Path, show_progress: bool = True, limit: int | None = None
) -> dict:
    """Renders every test view, writes ``workdir/eval/metrics.json`` and PNGs of colour,
    accumulation and distance per view; returns the summary written."""
    mesh = make_mesh()
    scene = load_configured_scene(scene_path, config.data)
    step, params = checkpoints.load_trained_params(config, scene_path, workdir, mesh)
    pixels, sizes = load_pixels(scene, config.data.cache_dir or None)
    render_fn = make_render_fn(MipNerf360(config.model), mesh)
    indices = list(scene.test_indices)[:limit]
    if not indices:
        raise RaynerfError(f"{scene.path} has no test views (data.llffhold={config.data.llffhold})")
    largest = max(int(scene.widths[i]) * int(scene.heights[i]) for i in indices)
    chunk = choose_chunk(config.eval.chunk_size, largest, chunk_unit(mesh), config.model)
    lpips = None if config.eval.lpips_net == "none" else image_metrics.lpips_fn(config.eval.lpips_net)
    out_dir = Path(workdir) / "eval"
    is_main = jax.process_index() == 0
    if is_main:
        out_dir.mkdir(parents=True, exist_ok=True)

    per_image, depth_errors, depth_relative = [], [], []
    for index in tqdm(indices, desc="eval", unit="view", disable=not (show_progress and is_main)):
        rays = image_rays(scene, index, config.model.near, config.model.far)
        out = render_image(render_fn, params, rays, chunk, mesh)
        height, width = sizes[index]
        target = pixels[index, :height, :width].astype(np.float32) / 255.0
        rgb = np.clip(out["rgb"], 0.0, 1.0)
        record = {
            "name": scene.names[index],
            "psnr": image_metrics.psnr(rgb, target),
            "ssim": image_metrics.ssim(rgb, target),
        }
        if lpips is not None:
            record["lpips"] = lpips(rgb, target)
        depth_file = true_depth_path(scene, index)
        if depth_file.is_file():
            truth = np.load(depth_file)
            errors = depth_abs_error(out["distance_mean"].reshape(height, width), truth, scene.scale)
            relative = errors / truth[np.isfinite(truth) & (truth > 0)]
            record["depth_median_abs_error"] = float(np.median(errors))
            record["depth_median_rel_error"] = float(np.median(relative))
            depth_errors.append(errors)
            depth_relative.append(relative)
        per_image.append(record)
        if is_main:
            stem = Path(scene.names[index]).stem
            write_png(out_dir / f"{stem}_color.png", to_uint8(rgb))
            write_png(out_dir / f"{stem}_acc.png", visualize_acc(out["acc"]))
            write_png(
                out_dir / f"{stem}_distance_mean.png", visualize_distance(out["distance_mean"], out["acc"])
            )

    summary = {
        "step": int(step),
        "scene": Path(scene_path).name,
        "factor": config.data.factor,
        "num_images": len(per_image),
        "image_names": [r["name"] for r in per_image],
        "psnr": _mean([r["psnr"] for r in per_image]),
        "ssim": _mean([r["ssim"] for r in per_image]),
        "lpips": _mean([r["lpips"] for r in per_image]) if lpips is not None else None,
        "lpips_net": config.eval.lpips_net if lpips is not None else None,
        "chunk_size": chunk,
    }
    if depth_errors:
        # The median over all test pixels, in COLMAP units (the scene's own scale).
        summary["depth_median_abs_error"] = float(np.median(np.concatenate(depth_errors)))
        summary["depth_median_rel_error"] = float(np.median(np.concatenate(depth_relative)))
    summary["images"] = per_image
    summary = strict_json(summary)
    if is_main:
        path = out_dir / "metrics.json"
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(summary, indent=2, allow_nan=False))
        os.replace(tmp, path)
        storage.push(workdir, "eval")
    return summary
