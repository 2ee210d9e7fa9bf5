"""``raynerf make-scene`` (generate the procedural scene) and ``raynerf info`` (dataset report)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import click
import numpy as np

from raynerf.cli.options import scene_dir, scene_options
from raynerf.config import DataConfig
from raynerf.data.poses import RECENTRE_MODES, largest_azimuth_gap, orbit_kind
from raynerf.errors import RaynerfError
from raynerf.render.paths import default_path_kind


@click.command("make-scene")
@click.argument("directory", type=click.Path(path_type=Path))
@click.option("--images", "num_images", default=64, show_default=True, help="Number of views.")
@click.option("--width", default=640, show_default=True, help="Full-resolution width (multiple of 8).")
@click.option("--height", default=480, show_default=True, help="Full-resolution height (multiple of 8).")
@click.option("--seed", default=0, show_default=True, help="Seed of the camera jitter and 3D points.")
@click.option(
    "--arc",
    "arc_degrees",
    default=360.0,
    show_default=True,
    help="Degrees of the orbit the cameras cover (180: a half orbit, as a phone capture).",
)
@click.option(
    "--focal-spread",
    default=0.0,
    show_default=True,
    help="Give each image its own camera, focal length within +- this fraction (< 0.5).",
)
@click.option(
    "--max-k1",
    default=0.0,
    show_default=True,
    help="Give each image its own SIMPLE_RADIAL camera, k1 in [0, this] (<= 0.2).",
)
def make_scene(
    directory: Path,
    num_images: int,
    width: int,
    height: int,
    seed: int,
    arc_degrees: float,
    focal_spread: float,
    max_k1: float,
) -> None:
    """Render the procedural 360 scene into DIRECTORY in the Mip-NeRF 360 layout.

    Portrait images: a --height above the --width.
    """
    from raynerf.data.synthetic import make_scene as build

    if directory.exists() and (not directory.is_dir() or any(directory.iterdir())):
        raise RaynerfError(f"{directory} already exists and is not empty; pick a new folder")
    if width <= 0 or height <= 0 or width % 8 or height % 8:
        raise RaynerfError(f"--width and --height must be positive multiples of 8, got {width}x{height}")
    if num_images < 2:
        raise RaynerfError(f"--images must be at least 2, got {num_images}")
    if not 0 < arc_degrees <= 360:
        raise RaynerfError(f"--arc must be in (0, 360] degrees, got {arc_degrees:g}")
    if not 0 <= focal_spread < 0.5:
        raise RaynerfError(f"--focal-spread must be in [0, 0.5), got {focal_spread:g}")
    if not 0 <= max_k1 <= 0.2:
        raise RaynerfError(f"--max-k1 must be in [0, 0.2], got {max_k1:g}")
    build(
        directory,
        num_images=num_images,
        width=width,
        height=height,
        seed=seed,
        progress=True,
        arc_degrees=arc_degrees,
        focal_spread=focal_spread,
        max_k1=max_k1,
    )
    orbit = "a full orbit" if arc_degrees >= 360 else f"a {arc_degrees:g} degree arc"
    cameras = "one camera per image" if focal_spread or max_k1 else "one camera"
    click.echo(
        f"wrote {num_images} views ({width}x{height}, factors 1/2/4/8, {orbit}, {cameras}) to {directory}"
    )


def _folder_report(path: Path, names: list[str]) -> list[str]:
    """One line per images* folder: its size(s) over the model's image names."""
    from raynerf.data.images import image_size

    lines = []
    for folder in sorted(p for p in path.glob("images*") if p.is_dir()):
        sizes = Counter()
        missing = 0
        for name in names:
            if (folder / name).is_file():
                sizes[image_size(folder / name)] += 1
            else:
                missing += 1
        text = ", ".join(
            f"{w}x{h} ({n})" if len(sizes) > 1 else f"{w}x{h}" for (w, h), n in sizes.most_common()
        )
        extra = f", {missing} missing" if missing else ""
        lines.append(f"  {folder.name + '/':<11} {text or 'no model images'}{extra}")
    return lines


def _bounds(label: str, points: np.ndarray) -> str:
    if len(points) == 0:
        return f"  {label:<11} none"
    lo, hi = points.min(0), points.max(0)
    return (
        f"  {label:<11} [{lo[0]:.2f}, {hi[0]:.2f}] x [{lo[1]:.2f}, {hi[1]:.2f}] x [{lo[2]:.2f}, {hi[2]:.2f}]"
    )


def _capture_line(camtoworlds: np.ndarray) -> str:
    """How the cameras go around the scene, e.g. ``partial orbit (largest azimuth gap 186 degrees)``."""

    kind = orbit_kind(camtoworlds)
    meaning = {
        "full orbit": "cameras surround the scene",
        "partial orbit": "cameras on one side of an orbit",
        "forward-facing": "cameras face the scene from one side",
    }[kind]
    gap = largest_azimuth_gap(camtoworlds)
    return f"capture     {kind}: {meaning} (largest azimuth gap {gap:.0f} degrees)"


def _path_line(camtoworlds: np.ndarray, forward_facing: bool) -> str:
    """Which path ``raynerf render`` draws by default (:func:`raynerf.render.paths.default_path_kind`)."""
    kind = default_path_kind(camtoworlds, forward_facing)
    meaning = {
        "ellipse": "an ellipse around the scene",
        "arc": "there and back along the cameras' arc",
        "spiral": "an ellipse among the (parallel) cameras",
    }[kind]
    return f"path        {kind}: {meaning} (raynerf render's default)"


def _frame_line(recentre: str) -> str:
    """Which origin the normalised frame has (``data.recentre``)."""
    origin = {"focus": "the point the cameras look at", "cameras": "the mean camera centre"}[recentre]
    return f"frame       origin at {origin} (data.recentre = {recentre})"


@click.command("info")
@scene_options
@click.option(
    "--factor",
    default=DataConfig().factor,
    show_default=True,
    help="Resolution factor: images_<factor>/ (1 = images/).",
)
@click.option(
    "--llffhold",
    default=DataConfig().llffhold,
    show_default=True,
    help="Every llffhold-th image (sorted by name) is a test image.",
)
@click.option("--downsample", is_flag=True, help="Create a missing images_<factor>/ from images/.")
@click.option(
    "--check/--no-check",
    default=True,
    show_default=True,
    help="Decode every image at this factor to catch corrupt files.",
)
@click.option(
    "--recentre",
    type=click.Choice(RECENTRE_MODES),
    default=DataConfig().recentre,
    show_default=True,
    help="The normalised frame's origin (data.recentre).",
)
def info(
    scene: str, data_dir: str, factor: int, llffhold: int, downsample: bool, check: bool, recentre: str
) -> None:
    """Print a report on a scene: splits, resolutions, cameras, capture kind, frame, points, bounds."""
    from raynerf.data.images import read_image
    from raynerf.data.scene import load_scene

    path = scene_dir(data_dir, scene)
    loaded = load_scene(path, factor, llffhold=llffhold, downsample_missing=downsample, recentre=recentre)
    if check:
        for i in range(loaded.num_images):
            read_image(loaded.image_path(i))
    models = Counter(c.model for c in loaded.cameras)
    centres = loaded.camtoworlds[:, :, 3]
    radius = np.linalg.norm(centres, axis=-1)
    lines = [
        f"scene       {path}",
        f"images      {loaded.num_images} ({len(loaded.train_indices)} train, "
        f"{len(loaded.test_indices)} test, llffhold {llffhold})",
        "folders",
        *_folder_report(path, loaded.names),
        f"factor      {factor}: {loaded.image_dir.name}/ "
        f"{int(loaded.widths.max())}x{int(loaded.heights.max())}",
        "cameras     " + ", ".join(f"{m} ({n} images)" for m, n in models.items()),
        f"  image 0   fx {loaded.cameras[0].fx:.2f}  fy {loaded.cameras[0].fy:.2f}  "
        f"cx {loaded.cameras[0].cx:.2f}  cy {loaded.cameras[0].cy:.2f} (at factor {factor})",
        _capture_line(loaded.camtoworlds),
        _path_line(loaded.camtoworlds, loaded.forward_facing),
        _frame_line(recentre),
        f"points      {len(loaded.points)}",
        f"normalised  scale {loaded.scale:.4g} per COLMAP unit; cameras {radius.min():.2f} "
        f"to {radius.max():.2f} from the centre",
        _bounds("cameras", centres),
        _bounds("points", loaded.points),
        _bounds("points 98%", np.percentile(loaded.points, [1, 99], axis=0)) if len(loaded.points) else "",
    ]
    click.echo("\n".join(line for line in lines if line))
