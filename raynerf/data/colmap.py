"""Reads a COLMAP sparse model (``sparse/0``) with PyPI's pycolmap into plain arrays."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from raynerf.data.cameras import Intrinsics, intrinsics_from_colmap
from raynerf.data.colmap_lib import pycolmap
from raynerf.errors import RaynerfError

MODEL_FILES = ("cameras.bin", "images.bin", "points3D.bin")


@dataclasses.dataclass(frozen=True)
class ColmapModel:
    """The registered images of a model, sorted by name, in COLMAP's world frame.

    Attributes:
      names: [N] image file names, sorted.
      camtoworlds: [N, 3, 4] float64 OpenCV-convention camera-to-world poses.
      cameras: [N] each image's intrinsics at the model's resolution.
      camera_ids: [N] COLMAP camera id of each image.
      points: [P, 3] float64 3D points.
    """

    names: list[str]
    camtoworlds: np.ndarray
    cameras: list[Intrinsics]
    camera_ids: list[int]
    points: np.ndarray


def sparse_dir(scene_path: Path) -> Path:
    """``scene/sparse/0`` with the model files, or a RaynerfError saying what is wrong."""
    path = scene_path / "sparse" / "0"
    if not path.is_dir():
        raise RaynerfError(
            f"COLMAP model folder {path} is missing; run COLMAP (or `raynerf make-scene`) "
            "so that sparse/0/{cameras,images,points3D}.bin exist"
        )
    has_binary = all((path / name).is_file() for name in MODEL_FILES)
    has_text = all((path / name.replace(".bin", ".txt")).is_file() for name in MODEL_FILES)
    if not (has_binary or has_text):
        raise RaynerfError(
            f"COLMAP model folder {path} is empty or incomplete (needs "
            f"{', '.join(MODEL_FILES)}); re-export the model there"
        )
    return path


def read_reconstruction(path: Path) -> pycolmap.Reconstruction:
    """``pycolmap.Reconstruction`` of a ``sparse/0`` folder, errors made readable."""
    try:
        return pycolmap.Reconstruction(str(path))
    except Exception as exc:  # pycolmap raises ValueError, IndexError, RuntimeError...
        raise RaynerfError(
            f"cannot read the COLMAP model in {path} ({type(exc).__name__}: {exc}); "
            "the .bin files are corrupt or truncated, re-export the model"
        ) from None


def read_model(scene_path: Path) -> ColmapModel:
    """The registered images, their cameras and the 3D points of ``scene/sparse/0``."""
    path = sparse_dir(scene_path)
    recon = read_reconstruction(path)
    images = sorted(
        (recon.images[i] for i in recon.reg_image_ids() if recon.images[i].has_pose),
        key=lambda image: image.name,
    )
    if not images:
        raise RaynerfError(
            f"the COLMAP model in {path / 'images.bin'} has no registered images; "
            "re-run the reconstruction (it failed to register any photo)"
        )
    poses, cameras = [], []
    for image in images:
        world_from_cam = image.cam_from_world().inverse().matrix()
        poses.append(world_from_cam)
        cam = recon.cameras[image.camera_id]
        cameras.append(
            intrinsics_from_colmap(
                cam.model_name,
                cam.width,
                cam.height,
                cam.params,
                source=f"camera {image.camera_id} in {path / 'cameras.bin'}",
            )
        )
    points = np.array([p.xyz for p in recon.points3D.values()], np.float64).reshape(-1, 3)
    return ColmapModel(
        names=[image.name for image in images],
        camtoworlds=np.stack(poses).astype(np.float64),
        cameras=cameras,
        camera_ids=[image.camera_id for image in images],
        points=points,
    )
