"""``raynerf export pointcloud|mesh`` end to end on a run trained on the built-in scene,
whose true geometry (exact distances to its surfaces) and colours raynerf knows.

The bounds are in COLMAP world units: the scene's objects are spheres of radius 0.3
and 0.55 and boxes 0.4 to 1.4 units across, seen by cameras 3.6 units away, and a
training pixel covers about 0.1 units at the scene's centre (40 x 32 images, focal 36
pixels). Geometry within a pixel of the truth is all such a capture can give; a user
would accept less than that. Measured on a 2-core CPU (``pytest tests/export -rP``
prints them): the exported points lie a median 0.040 units from the nearest true
surface and the mesh's vertices (96^3 grid) 0.056; the median colour errors are 0.070
and 0.058 (of 1). The bounds are about twice those.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import plyfile
import pytest
import trimesh
from click.testing import CliRunner

from raynerf.cli import main
from raynerf.data import synthetic
from raynerf.data.poses import transform_points
from raynerf.data.scene import load_configured_scene

# Median distance to the nearest true surface, COLMAP world units (a training pixel at
# the scene's centre is 0.1): twice what was measured.
POINT_DISTANCE = 0.08
VERTEX_DISTANCE = 0.11
# Median over points of the mean absolute error of the three channels (colours in [0, 1]):
# a model of this size after a few hundred steps blurs the scene's checkers and stripes.
COLOUR_ERROR = 0.14


def export(*args: str):
    """``raynerf export ARGS`` in this process."""
    return CliRunner().invoke(main, ["export", *args])


def true_colours(points: np.ndarray, camtoworlds: np.ndarray) -> np.ndarray:
    """The true colour [P, 3] of world points [P, 3]: each seen from the camera (of
    ``camtoworlds`` [C, 3, 4]) whose true ray towards it ends closest to it, i.e. a
    camera that sees the surface there. (The scene's surfaces are Lambertian: any such
    camera sees the same colour.)"""
    best = np.full(len(points), np.inf)
    colours = np.zeros((len(points), 3))
    for centre in camtoworlds[:, :, 3]:
        offsets = points - centre
        distance = np.linalg.norm(offsets, axis=-1)
        rgb, hit = synthetic.shade(np.broadcast_to(centre, points.shape).copy(), offsets / distance[:, None])
        gap = np.abs(hit - distance)
        closer = gap < best
        best[closer], colours[closer] = gap[closer], rgb[closer]
    return colours


def colour_error(exported: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """Mean absolute error over the channels [P] of uint8 colours against [0, 1] ones."""
    return np.abs(exported.astype(np.float64) / 255.0 - truth).mean(axis=-1)


def test_pointcloud_lies_on_the_true_surfaces_in_the_true_colours(trained_small_run, tmp_path):
    run = trained_small_run
    out = tmp_path / "points.ply"
    result = export("pointcloud", *run.cli_args(), "--out", str(out))
    assert result.exit_code == 0, result.output
    vertex = plyfile.PlyData.read(str(out))["vertex"]
    assert [(p.name, p.val_dtype) for p in vertex.properties] == [
        ("x", "f4"),
        ("y", "f4"),
        ("z", "f4"),
        ("red", "u1"),
        ("green", "u1"),
        ("blue", "u1"),
    ]
    xyz = np.stack([vertex[a] for a in "xyz"], -1).astype(np.float64)
    rgb = np.stack([vertex[c] for c in ("red", "green", "blue")], -1)
    # fewer confident pixels than --points' default: every one of them is written
    assert f"{len(xyz):,} points (step {run.steps}, colmap frame) of {len(xyz):,} confident" in result.output
    assert len(xyz) > 2000
    distance = synthetic.surface_distance(xyz)
    error = colour_error(rgb, true_colours(xyz, run.camtoworlds[run.train_indices]))
    print(
        f"pointcloud: {len(xyz)} points, median distance {np.median(distance):.4f}, "
        f"median colour error {np.median(error):.4f}"
    )
    assert np.median(distance) < POINT_DISTANCE
    assert np.median(error) < COLOUR_ERROR


def test_mesh_vertices_lie_on_the_true_surfaces_in_the_true_colours(trained_small_run, tmp_path):
    run = trained_small_run
    out = tmp_path / "mesh.ply"
    result = export("mesh", *run.cli_args(), "--resolution", "96", "--out", str(out))
    assert result.exit_code == 0, result.output
    mesh = trimesh.load(out, process=False)
    assert f"{len(mesh.vertices):,} vertices, {len(mesh.faces):,} faces" in result.output
    assert len(mesh.faces) > 500
    distance = synthetic.surface_distance(mesh.vertices)
    colours = mesh.visual.vertex_colors[:, :3]
    error = colour_error(colours, true_colours(mesh.vertices, run.camtoworlds[run.train_indices]))
    print(
        f"mesh: {len(mesh.vertices)} vertices, median distance {np.median(distance):.4f}, "
        f"median colour error {np.median(error):.4f}"
    )
    assert np.median(distance) < VERTEX_DISTANCE
    assert np.median(error) < COLOUR_ERROR


def test_default_outputs_in_the_normalised_frame_and_contracted_space(trained_small_run):
    run = trained_small_run
    scene = load_configured_scene(run.scene, run.config.data)
    result = export("pointcloud", *run.cli_args(), "--views", "4", "--points", "300", "--frame", "normalised")
    assert result.exit_code == 0, result.output
    path = run.workdir / "export" / f"small_pointcloud_step_{run.steps}.ply"
    assert str(path) in result.output and "in 4 training views" in result.output
    vertex = plyfile.PlyData.read(str(path))["vertex"]
    xyz = np.stack([vertex[a] for a in "xyz"], -1).astype(np.float64)
    assert len(xyz) == 300 and np.all(np.linalg.norm(xyz, axis=-1) <= 1.0 + 1e-6)  # --radius 1
    world = transform_points(np.linalg.inv(scene.transform), xyz)
    assert np.median(synthetic.surface_distance(world)) < POINT_DISTANCE

    # The contracted grid covers all of space: the background the model placed far away
    # too. Its vertices within the unit ball are the scene's surfaces.
    result = export("mesh", *run.cli_args(), "--space", "contracted", "--resolution", "64")
    assert result.exit_code == 0, result.output
    path = run.workdir / "export" / f"small_mesh_step_{run.steps}.ply"
    mesh = trimesh.load(path, process=False)
    assert np.all(np.isfinite(mesh.vertices))
    normalised = transform_points(scene.transform, mesh.vertices)
    inner = np.linalg.norm(normalised, axis=-1) < 1.0
    assert inner.sum() > 100 and (~inner).sum() > 100
    assert np.median(synthetic.surface_distance(mesh.vertices[inner])) < VERTEX_DISTANCE
    assert sorted(p.name for p in path.parent.iterdir()) == [
        f"small_mesh_step_{run.steps}.ply",
        f"small_pointcloud_step_{run.steps}.ply",
    ]  # nothing half-written left behind


def _one_error_line(result, exit_code: int = 1) -> str:
    assert result.exit_code == exit_code, result.output
    assert "Traceback" not in result.output
    errors = [line for line in result.output.splitlines() if line.startswith("Error: ")]
    assert len(errors) == 1, result.output
    return errors[0]


def test_user_errors_are_one_line(trained_small_run, tmp_path: Path):
    run = trained_small_run
    empty = tmp_path / "empty"
    empty.mkdir()
    # a workdir without a trained run, with the scene named: no checkpoint
    line = _one_error_line(
        export("pointcloud", "--workdir", str(empty), "--scene", "small", "--data-dir", str(run.scene.parent))
    )
    assert "no checkpoint" in line and "train first" in line
    # a workdir without a trained run and no scene: nothing says which scene it is
    assert "holds no trained run" in _one_error_line(export("mesh", "--workdir", str(empty)))
    # an unknown space or frame: click's usage error
    bad = _one_error_line(export("mesh", *run.cli_args(), "--space", "warped"), exit_code=2)
    assert "Invalid value for '--space'" in bad
    bad = _one_error_line(export("pointcloud", *run.cli_args(), "--frame", "opengl"), exit_code=2)
    assert "Invalid value for '--frame'" in bad
    # values out of range, before anything is loaded
    assert "--points must be positive" in _one_error_line(
        export("pointcloud", *run.cli_args(), "--points", "0")
    )
    assert "--min-acc must be in [0, 1]" in _one_error_line(
        export("pointcloud", *run.cli_args(), "--min-acc", "2")
    )
    # an output folder that cannot be made (a file is in the way)
    blocker = tmp_path / "blocker"
    blocker.write_text("")
    line = _one_error_line(export("pointcloud", *run.cli_args(), "--out", str(blocker / "points.ply")))
    assert "cannot write to the output folder" in line and "a file of that name is in the way" in line
    # a density no part of the field reaches: no surface, and no file
    out = tmp_path / "mesh.ply"
    line = _one_error_line(
        export("mesh", *run.cli_args(), "--resolution", "16", "--density", "1e9", "--out", str(out))
    )
    assert "no surface at level 1e+09" in line and "--density" in line
    assert not out.exists()


@pytest.mark.parametrize("kind", ["pointcloud", "mesh"])
def test_help_names_the_options(kind):
    result = CliRunner().invoke(main, ["export", kind, "--help"])
    assert result.exit_code == 0
    wanted = ["--out", "--frame", "--workdir"] + (
        ["--points", "--views", "--min-acc", "--radius"]
        if kind == "pointcloud"
        else ["--resolution", "--space", "--density", "--min-faces"]
    )
    for option in wanted:
        assert option in result.output
