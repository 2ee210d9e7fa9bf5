"""Geometry out of a trained run: coloured point clouds and meshes as PLY files.

:mod:`raynerf.export.pointcloud` back-projects the rendered distance of the training
views; :mod:`raynerf.export.mesh` runs marching cubes on the NeRF level's density.
Both compute in the scene's normalised frame (:class:`~raynerf.data.scene.Scene`:
the cameras inside the cube [-1, 1]^3) and by default write in the **COLMAP world
frame and units** (``frame="colmap"``, the inverse of ``Scene.transform``), so that the
files line up with ``sparse/0`` and whatever else was made from that reconstruction;
``frame="normalised"`` keeps the model's own frame.

This module holds what both share: the frames, the trained run, the output path.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh

from raynerf.config import Config
from raynerf.data.poses import transform_points
from raynerf.data.scene import Scene, load_configured_scene
from raynerf.errors import RaynerfError
from raynerf.mesh import make_mesh
from raynerf.training import checkpoints

FRAMES = ("colmap", "normalised")
EXPORT_DIR = "export"  # WORKDIR/export/ holds the files when no output path is given


def check_frame(frame: str) -> str:
    if frame not in FRAMES:
        raise RaynerfError(f"unknown frame {frame!r}: choose one of {', '.join(FRAMES)}")
    return frame


def to_frame(points: np.ndarray, transform: np.ndarray, frame: str) -> np.ndarray:
    """Points of the normalised frame [..., 3] -> the output ``frame`` [..., 3] (float64).

    ``transform`` [4, 4] is ``Scene.transform`` (COLMAP world -> normalised); "colmap"
    applies its inverse, "normalised" returns the points unchanged.
    """
    points = np.asarray(points, np.float64)
    if check_frame(frame) == "normalised":
        return points
    return transform_points(np.linalg.inv(np.asarray(transform, np.float64)), points)


@dataclasses.dataclass(frozen=True)
class TrainedRun:
    """What an export needs of a run: its scene (normalised frame), newest checkpoint's
    parameters (replicated on ``mesh``) and step."""

    config: Config
    scene: Scene
    step: int
    params: Any
    mesh: Mesh


def load_run(config: Config, scene_path: Path, workdir: Path) -> TrainedRun:
    """The newest checkpoint of ``workdir`` on this process's devices (a RaynerfError
    when there is none, or when it belongs to another scene or model)."""
    mesh = make_mesh(jax.local_devices())
    step, params = checkpoints.load_trained_params(config, scene_path, workdir, mesh)
    scene = load_configured_scene(scene_path, config.data)
    return TrainedRun(config=config, scene=scene, step=int(step), params=params, mesh=mesh)


def default_output(workdir: Path, scene_name: str, kind: str, step: int) -> Path:
    """``WORKDIR/export/<scene>_<kind>_step_<step>.ply``."""
    return Path(workdir) / EXPORT_DIR / f"{scene_name}_{kind}_step_{step}.ply"
