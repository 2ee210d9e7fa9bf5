"""metrics.jsonl after kills.

Promises: a line torn by a kill never blocks a resume (it is dropped, with a note);
the file is rewritten only atomically, so a kill during a rewrite keeps the history;
a second Ctrl-C still logs the metrics of the step it saved.
"""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner
from fault_helpers import assert_same_params
from small_run import STEPS, cli_args

from raynerf.cli import main
from raynerf.mesh import make_mesh
from raynerf.training import metrics_log
from raynerf.training.checkpoints import load_trained_params
from raynerf.training.loop import train
from raynerf.training.metrics_log import read_metrics, truncate_metrics

EXTRA = ("train.checkpoint_every=4",)


def test_a_torn_last_line_is_dropped_on_resume(run_copy, fault_scene, fault_cache):
    """`train` on a workdir whose metrics.jsonl ends in half a line (a kill mid-write)
    resumes, says it dropped the line, and leaves a file of whole records."""
    path = run_copy / "metrics.jsonl"
    before = read_metrics(run_copy)
    with open(path, "a") as f:
        f.write('{"step": 9, "loss": 0.2')
    result = CliRunner().invoke(main, ["train", *cli_args(fault_scene, run_copy, fault_cache, *EXTRA)])
    assert result.exit_code == 0, result.output
    assert "Traceback" not in result.output
    assert [line for line in result.output.splitlines() if "unreadable line" in line]
    assert [json.loads(line) for line in path.read_text().splitlines()] == before


def test_read_metrics_skips_a_torn_line_and_says_so(tmp_path):
    (tmp_path / "metrics.jsonl").write_text('{"step": 2, "loss": 1.0}\n{"step": 4, "lo')
    notes: list[str] = []
    assert read_metrics(tmp_path, notify=notes.append) == [{"step": 2, "loss": 1.0}]
    assert len(notes) == 1 and "1 unreadable line" in notes[0]


def test_a_kill_during_the_rewrite_keeps_the_history(tmp_path, monkeypatch):
    """The resume's rewrite goes through a temporary file: dying before the rename
    (here os.replace raises as a kill would stop it) leaves the old file whole."""
    path = tmp_path / "metrics.jsonl"
    text = "".join(json.dumps({"step": s, "loss": 1.0 / s}) + "\n" for s in (2, 4, 6, 8))
    path.write_text(text)

    def killed(*args):
        raise KeyboardInterrupt

    monkeypatch.setattr(metrics_log.os, "replace", killed)
    with pytest.raises(KeyboardInterrupt):
        truncate_metrics(tmp_path, 4)
    assert path.read_text() == text
    monkeypatch.undo()
    truncate_metrics(tmp_path, 4)
    assert [r["step"] for r in read_metrics(tmp_path)] == [2, 4]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.jsonl"]


def test_a_second_ctrl_c_logs_the_step_it_saved(fault_scene, config, straight_params, trained, tmp_path):
    """Two Ctrl-C: the second one raises KeyboardInterrupt out of the loop at step 5, a
    step that is not logged (log_every=2). The checkpoint of step 5 is saved with its
    metrics record, and resuming reaches the uninterrupted run's parameters and loss."""
    workdir = tmp_path / "run"

    def second_ctrl_c(step: int) -> bool:
        if step == 5:
            raise KeyboardInterrupt
        return False

    with pytest.raises(KeyboardInterrupt):
        train(config, fault_scene, workdir, show_progress=False, should_stop=second_ctrl_c)
    assert load_trained_params(config, fault_scene, workdir, make_mesh())[0] == 5
    assert [r["step"] for r in read_metrics(workdir)] == [2, 4, 5]

    assert train(config, fault_scene, workdir, show_progress=False).step == STEPS
    _, params = load_trained_params(config, fault_scene, workdir, make_mesh())
    assert_same_params(params, straight_params)
    records = read_metrics(workdir)
    assert [r["step"] for r in records] == [2, 4, 5, 6, 8]
    assert records[-1]["loss"] == pytest.approx(read_metrics(trained)[-1]["loss"], rel=1e-5)
