"""A capture folder (Mip-NeRF 360 layout) -> a checked, normalised :class:`Scene`.

Layout: ``images/``, ``images_<factor>/`` (same file names, smaller), and a COLMAP
model in ``sparse/0``. Every problem with the folder is a RaynerfError that names
the file at fault and the fix.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from raynerf.config import DataConfig
from raynerf.data import cameras as cam
from raynerf.data import images as img
from raynerf.data import poses
from raynerf.data.colmap import read_model
from raynerf.errors import RaynerfError

SIZE_TOLERANCE = 1  # pixels: images_<f>/ may round sizes either way


@dataclasses.dataclass(frozen=True, eq=False)
class Scene:
    """A loaded capture at one resolution factor, in the normalised frame.

    Attributes:
      path: the scene folder.
      image_dir: the folder images are read from (``images_<factor>/``).
      names: [N] image file names, sorted.
      factor: the resolution factor (1 = ``images/``).
      camtoworlds: [N, 3, 4] float32 camera-to-world poses in the normalised
        frame; camera axes in the OpenCV/COLMAP convention (x right, y down,
        z = viewing direction).
      cameras: [N] per-image :class:`~raynerf.data.cameras.Intrinsics` at this
        factor (scaled by the actual image size on disk).
      intrinsics: [N, 8] float64 ``(fx, fy, cx, cy, k1, k2, p1, p2)`` of ``cameras``.
      widths, heights: [N] int image sizes at this factor.
      train_indices, test_indices: image indices; every ``llffhold``-th image of
        the name-sorted list is a test image.
      transform: [4, 4] maps COLMAP world points to the normalised frame
        (rotation times a uniform scale, plus translation).
      points: [P, 3] float32 the model's 3D points, normalised.
      forward_facing: True when the cameras face the scene from one side rather
        than surround it.
    """

    path: Path
    image_dir: Path
    names: list[str]
    factor: int
    camtoworlds: np.ndarray
    cameras: list[cam.Intrinsics]
    intrinsics: np.ndarray
    widths: np.ndarray
    heights: np.ndarray
    train_indices: np.ndarray
    test_indices: np.ndarray
    transform: np.ndarray
    points: np.ndarray
    forward_facing: bool

    @property
    def num_images(self) -> int:
        return len(self.names)

    @property
    def kind(self) -> str:
        return "forward-facing" if self.forward_facing else "360"

    @property
    def scale(self) -> float:
        """Normalised units per COLMAP world unit."""
        return poses.transform_scale(self.transform)

    def image_path(self, i: int) -> Path:
        return self.image_dir / self.names[i]

    def image_rays(self, i: int, near: float, far: float) -> dict[str, np.ndarray]:
        """All rays of image ``i``: dict of [H, W, 3] / [H, W, 1] float32."""
        return image_rays(self, i, near, far)

    def read_image(self, i: int) -> np.ndarray:
        """Image ``i`` decoded from disk: float32 [H, W, 3] in [0, 1]."""
        return img.read_image(self.image_path(i)).astype(np.float32) / 255.0


def image_rays(scene: Scene, i: int, near: float, far: float) -> dict[str, np.ndarray]:
    """All rays of the scene's image ``i``: dict of [H, W, 3] / [H, W, 1] float32."""
    return cam.camera_rays(
        scene.camtoworlds[i], scene.intrinsics[i], int(scene.widths[i]), int(scene.heights[i]), near, far
    )


def split_indices(count: int, llffhold: int) -> tuple[np.ndarray, np.ndarray]:
    """(train, test) indices: every ``llffhold``-th index (0, llffhold, ...) is test."""
    indices = np.arange(count)
    if llffhold <= 0:
        return indices, indices[:0]
    test = indices % llffhold == 0
    return indices[~test], indices[test]


def _image_dir(path: Path, factor: int, names: list[str], downsample_missing: bool) -> Path:
    folder = path / img.folder_name(factor)
    if folder.is_dir():
        return folder
    if factor != 1 and downsample_missing:
        return img.create_downsampled_folder(path, names, factor)
    present = sorted(p.name for p in path.glob("images*") if p.is_dir())
    how = (
        "create it from images/ with --downsample (or --set data.downsample_missing=true)"
        if factor != 1
        else "restore the full-resolution images there"
    )
    raise RaynerfError(
        f"image folder {folder} is missing (folders present: {', '.join(present) or 'none'}); "
        f"{how}, or pick a factor that exists"
    )


def _checked_sizes(
    image_dir: Path, names: list[str], model_cams: list[cam.Intrinsics], factor: int
) -> tuple[np.ndarray, np.ndarray]:
    """Each image's (width, height) on disk, checked against the model's size / factor."""
    widths, heights = np.zeros(len(names), np.int64), np.zeros(len(names), np.int64)
    for i, (name, model_cam) in enumerate(zip(names, model_cams)):
        w, h = img.image_size(image_dir / name)
        want_w, want_h = model_cam.width / factor, model_cam.height / factor
        if abs(w - want_w) > SIZE_TOLERANCE or abs(h - want_h) > SIZE_TOLERANCE:
            raise RaynerfError(
                f"image {image_dir / name} is {w}x{h} but the COLMAP model says "
                f"{model_cam.width}x{model_cam.height}, i.e. about {want_w:.0f}x{want_h:.0f} "
                f"in {image_dir.name}/; regenerate {image_dir.name}/ from images/ "
                "(all images of a folder must match the model's sizes / factor)"
            )
        widths[i], heights[i] = w, h
    return widths, heights


def load_scene(
    path: Path | str,
    factor: int,
    llffhold: int = 8,
    downsample_missing: bool = False,
    recentre: str = "focus",
) -> Scene:
    """Loads, checks and normalises a capture folder (see :class:`Scene`;
    ``recentre``: the normalised frame's origin, see :func:`poses.normalise_360`)."""
    path = Path(path)
    if not path.is_dir():
        raise RaynerfError(f"scene folder {path} does not exist")
    if factor < 1:
        raise RaynerfError(f"factor must be a positive integer, got {factor}")
    model = read_model(path)
    image_dir = _image_dir(path, factor, model.names, downsample_missing)
    widths, heights = _checked_sizes(image_dir, model.names, model.cameras, factor)
    cameras = [c.scaled(int(w), int(h)) for c, w, h in zip(model.cameras, widths, heights)]
    camtoworlds, transform = poses.normalise_360(model.camtoworlds, recentre)
    train, test = split_indices(len(model.names), llffhold)
    return Scene(
        path=path,
        image_dir=image_dir,
        names=model.names,
        factor=factor,
        camtoworlds=camtoworlds.astype(np.float32),
        cameras=cameras,
        intrinsics=np.stack([c.as_array() for c in cameras]),
        widths=widths,
        heights=heights,
        train_indices=train,
        test_indices=test,
        transform=transform,
        points=poses.transform_points(transform, model.points).astype(np.float32),
        forward_facing=not poses.surrounds_scene(model.camtoworlds),
    )


def load_configured_scene(path: Path | str, data: DataConfig) -> Scene:
    """:func:`load_scene` with the factor, split and frame of a run's ``data`` config."""
    return load_scene(path, data.factor, data.llffhold, data.downsample_missing, data.recentre)
