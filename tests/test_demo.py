"""``raynerf demo`` at a very small scale: the time budget stops it resumably, a second
run finishes, evaluates and says where everything is."""

import json
import time

from click.testing import CliRunner
from small_run import SCENE, SMALL, STEPS

from raynerf.cli import main
from raynerf.cli.demo_cmd import time_budget
from raynerf.data.synthetic import SCENE_VERSION, make_scene


def test_time_budget_counts_from_the_first_step():
    assert not time_budget(0)(10**9)  # no limit
    assert not time_budget(-1)(1)
    should_stop = time_budget(1e-6)  # 60 microseconds
    time.sleep(0.01)  # before the first step: not counted
    assert not should_stop(1)
    time.sleep(0.01)
    assert should_stop(2)
    patient = time_budget(60)
    assert not patient(1) and not patient(2)


def test_demo_stops_on_its_budget_then_resumes_and_finishes(tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    # A small scene where the built-in one is cached stands in for it.
    make_scene(cache / f"synthetic-v{SCENE_VERSION}", **SCENE)
    monkeypatch.setenv("RAYNERF_CACHE", str(cache))
    workdir = tmp_path / "demo"
    # The tests' shared schedule (512-step warm-up) keeps the compiled step in the cache.
    sets = [
        arg for item in SMALL + ("train.lr_delay_steps=512", "render.frames=4") for arg in ("--set", item)
    ]
    args = ["demo", "--workdir", str(workdir), "--steps", str(STEPS), *sets]
    runner = CliRunner()

    first = runner.invoke(main, [*args, "--minutes", "1e-6", "--no-render"])
    assert first.exit_code == 0, first.output
    assert "stopped at step 2 of 8" in first.output and "raynerf demo` again" in first.output
    assert json.loads((workdir / "eval" / "metrics.json").read_text())["step"] == 2

    second = runner.invoke(main, [*args, "--minutes", "0"])
    assert second.exit_code == 0, second.output
    assert "stopped at" not in second.output
    summary = json.loads((workdir / "eval" / "metrics.json").read_text())
    assert summary["step"] == 8 and summary["scene"] == f"synthetic-v{SCENE_VERSION}"
    assert "depth_median_abs_error" in summary
    assert "lr_delay_steps = 512" in (workdir / "config.toml").read_text()
    for where in (str(cache), str(workdir / "eval" / "metrics.json"), "tensorboard --logdir"):
        assert where in second.output
    videos = second.output.split("videos", 1)[1].splitlines()[0]
    if "no `raynerf render` yet" not in videos:  # once rendering exists, the videos are there
        assert list((workdir / "render").glob("*_color.mp4"))
