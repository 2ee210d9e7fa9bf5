"""Ctrl-C on a single-host `raynerf train` stops between steps with a checkpoint."""

import signal
import time

from small_run import cli_args, popen_cli, small_config, small_scene

from raynerf.mesh import make_mesh
from raynerf.training.checkpoints import load_trained_params
from raynerf.training.metrics_log import read_metrics


def test_sigint_saves_a_checkpoint_at_the_current_step_and_resumes(tmp_path):
    scene = small_scene(tmp_path / "scenes")
    cache, workdir = tmp_path / "cache", tmp_path / "run"
    steps = 400  # far more than run before the interrupt
    proc = popen_cli("train", *cli_args(scene, workdir, cache, "train.log_every=1", steps=steps))
    deadline = time.monotonic() + 240
    while not read_metrics(workdir) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    assert proc.poll() is None, proc.stdout.read()
    proc.send_signal(signal.SIGINT)
    output, _ = proc.communicate(timeout=120)
    assert proc.returncode == 130, output
    assert "Traceback" not in output
    stopped = max(r["step"] for r in read_metrics(workdir) if "event" not in r)
    assert f"stopped at step {stopped}" in output
    config = small_config(cache, steps=steps)
    step, _ = load_trained_params(config, scene, workdir, make_mesh())
    assert step == stopped < steps
