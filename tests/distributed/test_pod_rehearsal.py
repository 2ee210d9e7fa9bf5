"""A TPU pod slice rehearsed on one machine (issue 21 §2): a Ray cluster of three
raylets on this machine, a CPU head with ``CPU: 0`` and two nodes that look like the
two TPU VMs of a v4-16 slice as Ray sets them up on Google Cloud (``TPU: 4``,
``TPU-v4-16-head`` on worker 0 only, ``accelerator_type:TPU-V4``, and the
``ray.io/tpu-*`` and ``ray.io/accelerator-type`` labels). No chip is behind them.

What runs: raynerf's slice detection (:func:`~raynerf.distributed.hosts.detect_platform`)
and its TPU ``ScalingConfig`` (:func:`~raynerf.distributed.hosts.scaling_config`),
then Ray Train's own TPU placement with that config (``SlicePlacementGroup``: the
slice-head reservation, then one bundle per VM of that slice), running a probe in
each worker that records its node, the node's TPU worker id, ``TPU_VISIBLE_CHIPS`` and
raynerf's :func:`~raynerf.distributed.hosts.worker_location` (how its messages name the host).
What cannot run: ``JaxConfig(use_tpu=True)`` (Ray Train initialises
``jax.distributed`` for TPUs, which needs the chips), so the probe stands in for
:func:`~raynerf.distributed.hosts.host_main`.

Slow: a 3-node cluster starts (about 40-90 s on 2 busy cores).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from conftest import TINY, checkpoint_steps, tiny_config

pytestmark = pytest.mark.slow

SLICE = "rehearsal-slice"
TPU_ENV = ("JAX_PLATFORMS", "TPU_PROCESS_BOUNDS", "TPU_CHIPS_PER_PROCESS_BOUNDS", "TPU_VISIBLE_CHIPS")


def _tpu_vm(worker_id: int) -> dict:
    resources = {"TPU": 4, "accelerator_type:TPU-V4": 1}
    if worker_id == 0:
        resources["TPU-v4-16-head"] = 1
    labels = {
        "ray.io/tpu-slice-name": SLICE,
        "ray.io/tpu-worker-id": str(worker_id),
        "ray.io/tpu-topology": "2x2x2",
        "ray.io/tpu-pod-type": "v4-16",
        "ray.io/accelerator-type": "TPU-V4",
    }
    return {"num_cpus": 1, "resources": resources, "labels": labels}


def test_slice_is_detected_and_gets_one_worker_per_vm(ray_tmpdir, monkeypatch, tmp_path):
    import ray
    from ray.cluster_utils import Cluster
    from ray.train import RunConfig
    from ray.train.v2.jax import JaxConfig, JaxTrainer

    from raynerf.distributed.hosts import HostGroupSpec, detect_platform, scaling_config
    from raynerf.distributed.launch import start_monitor
    from raynerf.render.pool import cluster_nodes, plan_workers

    # Ray names a slice from GCE metadata on a TPU VM, from TPU_NAME elsewhere (GKE).
    monkeypatch.setenv("TPU_NAME", SLICE)
    out = tmp_path / "probes"
    out.mkdir()

    def probe(cfg: dict) -> None:  # defined here: pickled by value for the workers
        import json
        import os

        import ray
        import ray.train

        from raynerf.distributed.hosts import worker_location

        rank = ray.train.get_context().get_world_rank()
        node = ray.get_runtime_context().get_node_id()
        labels = next(n.get("Labels", {}) for n in ray.nodes() if n["NodeID"] == node)
        seen = {
            "rank": rank,
            "node": node,
            "worker_id": labels.get("ray.io/tpu-worker-id"),
            "visible_chips": os.environ.get("TPU_VISIBLE_CHIPS"),
            "location": worker_location(),
        }
        (Path(cfg["out"]) / f"rank{rank}.json").write_text(json.dumps(seen))

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "include_dashboard": False})
    try:
        vms = {k: cluster.add_node(**_tpu_vm(k)).node_id for k in (0, 1)}
        ray.init(address=cluster.address, log_to_driver=False)

        found = detect_platform()
        assert found == {
            "platform": "tpu",
            "hosts": 2,
            "devices_per_host": 4,
            "topology": "2x2x2",
            "accelerator_type": "TPU-V4",
        }
        spec = HostGroupSpec(
            hosts=found["hosts"],
            devices_per_host=found["devices_per_host"],
            platform="tpu",
            topology=found["topology"],
            accelerator_type=found["accelerator_type"],
            max_restarts=0,
        )
        trainer = JaxTrainer(
            probe,
            train_loop_config={"out": str(out)},
            jax_config=JaxConfig(use_tpu=False),  # the one departure: no chips to initialise
            scaling_config=scaling_config(spec),
            run_config=RunConfig(name="rehearsal", storage_path=str(tmp_path / "ray_train")),
        )
        trainer.fit()

        # Render workers, placed as raynerf's render pool places them (the plan's actor
        # options), each reporting its node and the TPU environment its process starts with.
        plan = plan_workers(cluster_nodes())

        class EnvProbe:
            def seen(self) -> dict:
                node = ray.get_runtime_context().get_node_id()
                return {"node": node, **{k: os.environ.get(k) for k in TPU_ENV}}

        probes = [ray.remote(EnvProbe).options(**plan.actor_options(0)).remote() for _ in range(plan.count)]
        rendered_on = ray.get([p.seen.remote() for p in probes], timeout=300)

        # The run's monitor stays on the driver's node, whichever of the three that is (a
        # soft affinity put it on a random node, the node lost in a CI run of the test below).
        driver_node = ray.get_runtime_context().get_node_id()
        monitors = [start_monitor() for _ in range(8)]
        node_of = lambda actor: ray.get_runtime_context().get_node_id()  # noqa: E731 - pickled by value
        monitor_nodes = ray.get([m.__ray_call__.remote(node_of) for m in monitors], timeout=120)
    finally:
        ray.shutdown()
        cluster.shutdown()

    reports = [json.loads(p.read_text()) for p in sorted(out.iterdir())]
    by_rank = {r["rank"]: r for r in reports}
    assert sorted(by_rank) == [0, 1], reports
    placed = {r["node"]: r["worker_id"] for r in by_rank.values()}
    assert placed == {vms[0]: "0", vms[1]: "1"}  # one worker on each VM, none on the head
    assert all(r["visible_chips"] == "0,1,2,3" for r in by_rank.values())
    # How raynerf's messages name each host: by the slice's worker id, not Ray Train's rank.
    assert all(r["location"].startswith(f"TPU worker {r['worker_id']}, ") for r in by_rank.values())
    # One render worker per VM, each told to run as a one-VM slice of its 4 chips.
    assert plan.count == 2 and sorted(r["node"] for r in rendered_on) == sorted(vms.values())
    assert monitor_nodes == [driver_node] * 8
    for seen in rendered_on:
        assert seen["TPU_PROCESS_BOUNDS"] == "1,1,1" and seen["TPU_CHIPS_PER_PROCESS_BOUNDS"] == "2,2,1"
        assert seen["TPU_VISIBLE_CHIPS"] == "0,1,2,3" and seen["JAX_PLATFORMS"] == ""


def test_training_resumes_after_a_node_is_lost_and_replaced(ray_tmpdir, tiny_scene, tmp_path):
    """Two worker nodes (CPU stand-ins for two VMs), one training host on each. Mid-run
    one node is removed outright (its raylet and every process on it killed, as when a
    VM is preempted) and a replacement node joins: the group restarts on the new node
    from the latest checkpoint, finishes, and ``metrics.jsonl`` records the restart."""
    import ray
    from ray.cluster_utils import Cluster

    from raynerf.distributed.hosts import HostGroupSpec
    from raynerf.distributed.launch import launch
    from raynerf.training.metrics_log import read_metrics

    scene, cache = tiny_scene
    config = tiny_config(cache, "train.max_steps=14", "train.checkpoint_every=4", "train.keep_checkpoints=10")
    workdir = tmp_path / "run"
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "include_dashboard": False})
    lost = {}
    try:
        nodes = [cluster.add_node(num_cpus=1) for _ in range(2)]

        def lose_a_node(state):
            if not lost and state["attempt"] == 1 and (state["step"] or 0) >= 6:
                # Not the raylet this driver is attached to (on one machine it may be any
                # of them; on a cluster it is the head's): a real driver's VM is not the
                # one lost here.
                here = ray.get_runtime_context().get_node_id()
                victim = next(node for node in nodes if node.node_id != here)
                lost["step"], lost["node"] = state["step"], victim.node_id
                cluster.remove_node(victim, allow_graceful=False)
                lost["replacement"] = cluster.add_node(num_cpus=1).node_id

        result = launch(
            config,
            scene,
            workdir,
            HostGroupSpec(2, 1, max_restarts=2),
            address=cluster.address,
            show_progress=False,
            on_state=lose_a_node,
        )
        alive = {n["NodeID"] for n in ray.nodes() if n["Alive"]}
    finally:
        ray.shutdown()
        cluster.shutdown()
    assert lost, "the run ended before a node could be removed"
    assert result.step == 14 and not result.stopped
    assert lost["replacement"] in alive and lost["node"] not in alive
    records = read_metrics(workdir)
    restarts = [r for r in records if r.get("event") == "restart"]
    assert len(restarts) >= 1 and restarts[0]["step"] >= 4, restarts
    assert [r["step"] for r in records if "loss" in r] == list(range(1, 15))
    assert checkpoint_steps(workdir)[-1] == 14


@pytest.mark.long
def test_train_command_on_a_cluster_as_a_submitted_job_runs_it(ray_tmpdir, tiny_scene, tmp_path):
    """``raynerf train --address auto`` with ``RAY_ADDRESS`` set, as ``ray job submit``
    runs its entrypoint on the head: the driver attaches to the cluster (no private
    instance), places one host on each worker node and trains."""
    import subprocess
    import sys

    from ray.cluster_utils import Cluster

    scene, cache = tiny_scene
    workdir = tmp_path / "run"
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "include_dashboard": False})
    try:
        for _ in range(2):
            cluster.add_node(num_cpus=1)
        sets = [a for kv in (*TINY, f"data.cache_dir={cache}") for a in ("--set", kv)]
        command = [
            sys.executable,
            "-c",
            "from raynerf.cli import main; main()",
            "train",
            "--scene",
            scene.name,
        ]
        command += ["--data-dir", str(scene.parent), "--config", "tiny", "--workdir", str(workdir)]
        command += ["--address", "auto", "--hosts", "2", "--steps", "4", *sets]
        address = cluster.address
        env = dict(os.environ, RAY_ADDRESS=address)
        done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)
    finally:
        cluster.shutdown()
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    assert f"attached to the cluster at auto ({address})" in output
    assert "host group: 2 x cpu host(s)" in output and "trained" in done.stdout
    assert checkpoint_steps(workdir)[-1] == 4
