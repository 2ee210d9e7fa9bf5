"""`raynerf bench`: the JSON fields the issue names, with values that add up."""

import json
import statistics

import pytest
from click.testing import CliRunner
from small_run import SMALL

from raynerf.cli import main


def _bench(tmp_path, *args):
    out = tmp_path / "bench.json"
    sets = [a for s in SMALL if s.startswith("model.") for a in ("--set", s)]
    result = CliRunner().invoke(
        main, ["bench", "--config", "tiny", *sets, "--batch-size", "64", "--json", str(out), *args]
    )
    assert result.exit_code == 0, result.output
    return json.loads(out.read_text()), result.output


def test_bench_reports_throughput_flops_mfu_and_memory(tmp_path):
    r, output = _bench(
        tmp_path, "--steps", "2", "--only", "train", "--only", "render", "--render-chunk", "256"
    )
    t = r["train"]
    assert r["device_count"] == 1 and r["backend"] == "cpu" and r["device_kind"]
    assert t["rays_per_sec"] == pytest.approx(64 / statistics.median(t["step_seconds"]))
    assert t["steps_per_sec"] == pytest.approx(1 / statistics.median(t["step_seconds"]))
    assert t["flops_per_step"] > 0 and t["flops_per_ray"] * 64 == pytest.approx(t["flops_per_step"])
    # The peak is measured beside every timed step; MFU pairs each step with its own.
    assert len(t["step_peak_flops"]) == len(t["step_seconds"]) == 2
    assert r["matmul_peak_flops"] == pytest.approx(statistics.median(t["step_peak_flops"]))
    assert t["mfu"] == pytest.approx(
        statistics.median(
            t["flops_per_step"] / (s * p) for s, p in zip(t["step_seconds"], t["step_peak_flops"])
        )
    )
    assert 0 < t["mfu"] < 1.5 and r["matmul_peak_flops"] > 1e8
    assert t["xla_temp_bytes"] > 0 and r["peak_memory_bytes"] > t["xla_temp_bytes"]
    # A training ray costs the forward pass, the MLPs' backward (about twice their
    # forward) and the losses; a render ray the forward alone: 1.5x fewer FLOPs in this
    # small model, 2.3x in `tiny`. The chunk counts whole though the CPU renders it as 8
    # passes of 32 rays (a loop body counted once would read 8x fewer).
    assert r["render"]["rays_per_sec"] > 0 and 1.2 < t["flops_per_ray"] / r["render"]["flops_per_ray"] < 4
    assert "train rays/s" in output and "render rays/s" in output


@pytest.mark.long
def test_micro_batches_shrink_the_memory_plan(tmp_path):
    """Compile-only runs: 4 micro-batches keep the FLOPs (one pass over the batch) and
    plan far fewer temporary bytes than one pass over the whole batch; the CPU's own
    choice (the default) is 32 passes of 32 rays, with a smaller plan still."""

    def plan(*overrides):
        args = ["--steps", "0", "--only", "train", "--batch-size", "1024"]
        return _bench(tmp_path, *args, *[a for o in overrides for a in ("--set", o)])

    whole, _ = plan("train.grad_accum_steps=1")
    micro, output = plan("train.grad_accum_steps=4")
    default, _ = plan()
    assert "rays_per_sec" not in micro["train"] and "train XLA buffers" in output
    assert whole["train"]["grad_accum_steps"] == 1 and micro["train"]["grad_accum_steps"] == 4
    assert default["train"]["grad_accum_steps"] == 32
    for run in (micro, default):
        assert abs(run["train"]["flops_per_step"] / whole["train"]["flops_per_step"] - 1) < 0.1
    assert micro["train"]["xla_temp_bytes"] < 0.5 * whole["train"]["xla_temp_bytes"]
    assert default["train"]["xla_temp_bytes"] < 0.5 * micro["train"]["xla_temp_bytes"]


def test_flops_counted_on_a_cpu_lowering_match_the_direct_count():
    """Where the backend counts no lowered program (GPU, TPU), the step is lowered anew
    for one CPU device from its arguments' shapes alone: that count must equal the
    count of the devices' own lowering of the same step."""
    from raynerf import bench
    from raynerf.config import load_config
    from raynerf.mesh import global_batch, make_mesh
    from raynerf.model.mipnerf360 import MipNerf360
    from raynerf.training.optim import make_optimizer
    from raynerf.training.step import create_train_state, jit_train_step

    config = load_config("tiny", list(SMALL) + ["train.batch_size=64"])
    mesh = make_mesh()
    model, tx = MipNerf360(config.model), make_optimizer(config.train)
    state = create_train_state(config, model, tx, mesh)
    batch = global_batch(mesh, bench.synthetic_batch(64))
    build = lambda m: jit_train_step(config, model, tx, m, state)
    direct = bench._flops(build(mesh).lower(state, batch))
    on_cpu = bench.count_flops_on_cpu(build, state, batch)
    assert direct > 1e6 and on_cpu == pytest.approx(direct, rel=1e-6)


def _load_step_profile():
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "step_profile.py"
    spec = importlib.util.spec_from_file_location("step_profile", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_step_profile_sums_the_gpu_streams_else_the_host_ops():
    profile = _load_step_profile()
    meta = [
        {"ph": "M", "name": "process_name", "pid": 1, "args": {"name": "/device:GPU:0"}},
        {"ph": "M", "name": "process_name", "pid": 2, "args": {"name": "/host:CPU"}},
    ]
    gpu = {"ph": "X", "pid": 1, "name": "nvjet_sm90_tst_128x160", "dur": 5}
    host_op = {"ph": "X", "pid": 2, "name": "ynn_fusion.3", "dur": 7}
    host_frames = [
        {"ph": "X", "pid": 2, "name": n, "dur": 9}
        for n in ("$api.py:120 __call__", "ThunkExecutor::Execute", "end: ynn_fusion.3")
    ]
    assert profile.device_events({"traceEvents": meta + [gpu, host_op] + host_frames}) == [gpu]
    assert profile.device_events({"traceEvents": meta[1:] + [host_op] + host_frames}) == [host_op]
    assert [
        profile.kind(n)
        for n in (
            "gemm_fusion_dot_67",
            "ynn_fusion.3",
            "sort.7",
            "input_reduce_select_fusion_8",
            "loop_add_fusion",
        )
    ] == ["matmul", "matmul", "sort", "reduce", "other"]
