"""The package's layers depend downward only (benchmarks/import_graph.py), imports
inside functions included."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import raynerf

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "import_graph.py"


def _graph_module():
    spec = importlib.util.spec_from_file_location("import_graph", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_installed_package_imports_only_downward():
    graph = _graph_module()
    package_dir = Path(raynerf.__file__).parent
    edges = graph.import_graph(package_dir)
    assert {"data", "model", "training", "render", "eval", "distributed", "cli"} <= set(edges)
    assert graph.upward_imports(edges) == []


def test_an_upward_import_inside_a_function_is_found(tmp_path):
    graph = _graph_module()
    (tmp_path / "training").mkdir()
    (tmp_path / "render").mkdir()
    (tmp_path / "training" / "loop.py").write_text(
        "def f():\n    from raynerf.render.frames import make_render_fn\n"
    )
    (tmp_path / "render" / "job.py").write_text("import raynerf.training.step\n")
    (tmp_path / "newthing.py").write_text("")
    edges = graph.import_graph(tmp_path)
    assert edges["training"] == {"render"} and edges["render"] == {"training"}
    assert graph.upward_imports(edges) == [("training", "render")]
