"""`raynerf plan`: the real train step compiled deviceless for TPU slices (libtpu)."""

from __future__ import annotations

import json
import math

import jax
import numpy as np
import pytest
from click.testing import CliRunner

from raynerf.cli import main
from raynerf.config import load_config
from raynerf.distributed import plan as planner
from raynerf.distributed import slices
from raynerf.model.mipnerf360 import MipNerf360
from raynerf.model.rays import Rays

needs_libtpu = pytest.mark.skipif(not slices.libtpu_installed(),
                                  reason="libtpu not installed (pip install 'raynerf[tpu]')")

# A config small enough to compile in seconds (the accumulation search compiles several).
MICRO = ("model.nerf_net_width=16", "model.prop_net_width=8", "model.num_prop_samples=16",
         "model.num_nerf_samples=8", "model.nerf_net_depth=2", "model.prop_net_depth=2")

# ---------------------------------------------------------------- HLO text and arithmetic

HLO = """
ENTRY %main {
  %all-reduce.60 = (f32[]{:T(128)}, f32[128,256]{1,0:T(8,128)S(3)}, /*index=2*/bf16[4]{0}) \
all-reduce(%a, %b, %c), channel_id=1, replica_groups=mesh['axis_0'=4,'axis_1'=2] {'axis_0','axis_1'}, \
use_global_device_ids=true, to_apply=%sum
  %all-reduce-start.2 = f32[10]{0} all-reduce-start(%d), replica_groups={{0,1},{2,3}}, to_apply=%sum
  %all-reduce-done.2 = f32[10]{0} all-reduce-done(%all-reduce-start.2)
  ROOT %ag = s8[3,5]{1,0} all-gather(%e), replica_groups=[2,4]<=[8], dimensions={0}
  %fusion.1 = f32[8]{0} fusion(%x), kind=kLoop, metadata={op_name="all-reduce(fake)"}
}
"""


def test_hlo_collectives_kinds_counts_bytes_groups():
    rows = {(r["kind"], r["group_size"]): r for r in planner.hlo_collectives(HLO, num_devices=8)}
    assert set(rows) == {("all-reduce", 8), ("all-reduce", 2), ("all-gather", 4)}
    assert rows[("all-reduce", 8)] == {"kind": "all-reduce", "count": 1, "group_size": 8,
                                       "bytes": 4 + 128 * 256 * 4 + 4 * 2}
    assert rows[("all-reduce", 2)]["bytes"] == 40  # the -start half only
    assert rows[("all-gather", 4)]["bytes"] == 15


def test_oom_message_parsed():
    text = ("RESOURCE_EXHAUSTED: Ran out of memory on HBM, the total memory required for HLO "
            "temporaries (37.32G) exceeds available HBM (15.75G).")
    used, usable = planner.oom_bytes(text)
    assert used == int(37.32 * 2**30) and usable == int(15.75 * 2**30)
    assert planner.oom_bytes("INTERNAL: something else") is None


def test_search_finds_the_smallest_fitting_divisor():
    for share in (1024, 96, 7, 640):
        divisors = [m for m in range(1, share + 1) if share % m == 0]
        for need in divisors[1:]:
            tried: list[int] = []

            def fits(m, need=need, tried=tried):
                tried.append(m)
                return m >= need

            assert planner.search_accumulation(fits, share, 1) == need
            assert len(tried) <= 2 * math.log2(share) + 2
    assert planner.search_accumulation(lambda m: False, 64, 1) is None


def test_accumulated_cost_counts_the_loop_body_per_pass():
    # compiled = body + update; with 4 passes the step runs the body 4 times.
    body, update = {"flops": 100.0, "hbm_bytes": 10.0}, {"flops": 3.0, "hbm_bytes": 2.0}
    compiled = {k: body[k] + update[k] for k in body}
    assert planner.accumulated_cost(compiled, update, 4) == {"flops": 403.0, "hbm_bytes": 42.0}


def test_roofline_picks_the_slower_bound():
    est = planner.roofline(flops=2e12, hbm_bytes=1e9, peak=1e12, bandwidth=1e12)
    assert est["step_seconds"] == 2.0 and est["bound"] == "compute"
    est = planner.roofline(flops=1e9, hbm_bytes=3e12, peak=1e12, bandwidth=1e12)
    assert est["step_seconds"] == 3.0 and est["bound"] == "HBM bandwidth"


def test_f32_peak_follows_the_matmul_precision():
    v4 = slices.parse_slice("v4-8")
    assert planner.peak_flops(v4, "bfloat16") == 275e12
    assert planner.peak_flops(v4, "float32", None) == 275e12
    assert planner.peak_flops(v4, "float32", "highest") == 275e12 / 6


def test_unknown_slice_and_missing_libtpu_are_one_error_line(monkeypatch):
    result = CliRunner().invoke(main, ["plan", "--tpu", "v9-8", "--config", "tiny"])
    assert result.exit_code == 1
    assert result.output.startswith("Error: unknown TPU slice 'v9-8'") and "v5p-32" in result.output
    monkeypatch.setattr(slices, "libtpu_installed", lambda: False)
    result = CliRunner().invoke(main, ["plan", "--tpu", "v4-8", "--config", "tiny"])
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error:") and "pip install 'raynerf[tpu]'" in lines[0]


# ---------------------------------------------------------------- compiled for TPU slices


def param_count(config) -> int:
    """The model's parameter count, from its own init (not the planner's state)."""
    ones = lambda k: np.ones((1, k), np.float32)
    rays = Rays(origins=ones(3), directions=ones(3), viewdirs=ones(3), radii=ones(1), near=ones(1),
                far=ones(1))
    params = jax.eval_shape(lambda: MipNerf360(config.model).init(jax.random.PRNGKey(0), None, rays))
    return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(params))


def check_compiled_step(config, name: str):
    """The step compiled for ``name``: the batch split over every device of every host,
    the state replicated, gradients summed over all devices."""
    tpu_slice = slices.parse_slice(name)
    mesh = planner.make_mesh(slices.topology_devices(tpu_slice))
    result, state, batch = planner.compile_train_step(config, mesh)
    executable = result.executable
    devices = mesh.devices.size
    assert devices == tpu_slice.devices
    assert len({d.process_index for d in mesh.devices.flat}) == tpu_slice.hosts
    (state_in, batch_in), _ = executable.input_shardings
    for sharding, leaf in zip(jax.tree.leaves(state_in), jax.tree.leaves(state)):
        assert sharding.is_fully_replicated and sharding.shard_shape(leaf.shape) == leaf.shape
    for name_, sharding in batch_in.items():
        shape = batch[name_].shape
        assert sharding.shard_shape(shape) == (config.train.batch_size // devices, shape[1])
        assert len(sharding.device_set) == devices
    params_bytes = param_count(config) * 4  # float32 parameters
    memory = planner.memory_of(result, state, batch, devices, hbm_bytes=2**40)
    assert memory["params_bytes"] == params_bytes
    assert memory["opt_state_bytes"] >= 2 * params_bytes  # Adam's two moments
    assert memory["batch_bytes"] == config.train.batch_size // devices * (3 + 3 + 3 + 1 + 1 + 1 + 3) * 4
    # The gradients (at least the parameters' size) are all-reduced over every device.
    rows = planner.hlo_collectives(executable.as_text(), devices)
    spanning = [r for r in rows if r["kind"] == "all-reduce" and r["group_size"] == devices]
    assert spanning and sum(r["bytes"] for r in spanning) >= params_bytes
    return memory


@needs_libtpu
def test_tiny_on_one_host():
    check_compiled_step(load_config("tiny"), "v4-8")


@needs_libtpu
def test_tiny_on_four_hosts():
    memory = check_compiled_step(load_config("tiny"), "v4-32")
    assert memory["batch_bytes"] == 1024 // 16 * 15 * 4


@needs_libtpu
def test_plan_command_table_and_json(tmp_path):
    """The command on a one-host slice with 8 chips: its JSON, its table, the render call."""
    out = tmp_path / "plan.json"
    args = ["plan", "--tpu", "v5litepod-8", "--config", "tiny", "--json", str(out)]
    for override in MICRO:
        args += ["--set", override]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())
    config = load_config("tiny", MICRO)
    assert (report["slice"], report["hosts"], report["chips_per_host"], report["devices"]) == (
        "v5litepod-8", 1, 8, 8)
    assert report["batch_size"] == 1024 and report["batch_per_host"] == 1024
    assert report["batch_per_device"] == 128
    assert report["grad_accum_steps"] == 1 and report["fits"]
    memory = report["memory"]
    assert memory["params_bytes"] == param_count(config) * 4
    assert memory["hbm_bytes"] == 16 * 2**30
    parts = (memory["arguments_bytes"] + memory["outputs_not_donated_bytes"]
             + memory["temporaries_bytes"] + memory["code_bytes"])
    assert memory["per_chip_bytes"] == parts
    step, est = report["step"], report["estimate"]
    assert step["flops"] > 0 and step["hbm_bytes"] > 0
    assert [c["group_size"] for c in step["collectives"] if c["kind"] == "all-reduce"] == [8]
    assert est["step_seconds"] == pytest.approx(max(step["flops"] / 197e12, step["hbm_bytes"] / 819e9))
    assert est["rays_per_sec"] == pytest.approx(1024 / est["step_seconds"])
    assert est["schedule_hours"] == pytest.approx(config.train.max_steps * est["step_seconds"] / 3600)
    assert report["render"]["fits"] and report["render"]["chunk_rays"] % 8 == 0
    assert "estimate: step time" in result.output and "v5litepod-8" in result.output


@needs_libtpu
def test_accumulation_search_finds_the_smallest_count_that_fits():
    config = load_config("tiny", MICRO + ("train.batch_size=4096",))
    tpu_slice = slices.parse_slice("v4-8")
    devices = slices.topology_devices(tpu_slice)
    whole = planner.plan(config, tpu_slice, hbm_bytes=2**40, render=False, devices=devices)
    assert whole["grad_accum_steps"] == 1 and whole["fits"]
    memory = whole["memory"]
    assert memory["temporaries_bytes"] > 0
    # Room for half the one-pass temporaries: one pass no longer fits.
    hbm = memory["per_chip_bytes"] - memory["temporaries_bytes"] // 2
    report = planner.plan(config, tpu_slice, hbm_bytes=hbm, render=False, devices=devices)
    assert report["fits"] and report["memory"]["per_chip_bytes"] <= hbm
    chosen = report["grad_accum_steps"]
    assert chosen > 1
    tried = {s["grad_accum_steps"]: s for s in report["search"]}
    assert tried[chosen]["fits"] and not tried[1]["fits"]
    share = report["batch_per_device"]
    below = max(m for m in range(1, chosen) if share % m == 0)
    assert below in tried and not tried[below]["fits"]  # the next smaller count was tried and failed
    # The accumulated step does the one-pass step's arithmetic (its loop counted per pass).
    assert report["step"]["flops"] == pytest.approx(whole["step"]["flops"], rel=0.05)


@needs_libtpu
@pytest.mark.slow
def test_360_at_batch_16384_fits_a_v4_32():
    config = load_config("360", ("model.compute_dtype=bfloat16",))
    report = planner.plan(config, slices.parse_slice("v4-32"), render=False)
    assert report["batch_size"] == 16384 and report["devices"] == 16
    assert report["fits"] and report["memory"]["per_chip_bytes"] <= 32 * 2**30
    assert report["estimate"]["step_seconds"] > 0
