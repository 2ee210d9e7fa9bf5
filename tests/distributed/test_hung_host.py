"""A host that hangs (SIGSTOP) in a real 2-host group: the driver warns, naming it as
the (first) silent one; when JAX's coordination service gives up on it
(it ends the healthy process 0, which is what Ray then reports) the restart cause
names host 1 as the host that had stopped responding, and training finishes.

Slow: a 2-host group starts twice (about a minute on 2 busy cores).
"""

from __future__ import annotations

import os
import signal

import pytest
from conftest import tiny_config

from raynerf.distributed.hosts import HostGroupSpec
from raynerf.distributed.jaxdist import HEARTBEAT_ENV
from raynerf.distributed.launch import launch
from raynerf.training.metrics_log import read_metrics

pytestmark = pytest.mark.slow


def test_stopped_host_is_named_and_the_group_restarts(ray_local, tiny_scene, tmp_path, monkeypatch):
    scene, cache = tiny_scene
    monkeypatch.setenv(HEARTBEAT_ENV, "10")  # JAX gives up on a silent process after 10 s, not 100
    config = tiny_config(cache, "train.max_steps=60", "train.checkpoint_every=5", "train.keep_checkpoints=20")
    workdir = tmp_path / "hung"
    stopped: dict = {}
    seen: dict = {"warnings": []}

    def stop_host_1(state):
        seen["warnings"] = state["stall_warnings"]
        if not stopped and state["attempt"] == 1 and (state["step"] or 0) >= 6 and 1 in state["pids"]:
            stopped["pid"] = state["pids"][1]
            os.kill(stopped["pid"], signal.SIGSTOP)

    try:
        result = launch(
            config,
            scene,
            workdir,
            HostGroupSpec(2, 1, max_restarts=1),
            show_progress=False,
            on_state=stop_host_1,
            stall_after_s=3,
        )
    finally:
        if stopped:
            try:
                os.kill(stopped["pid"], signal.SIGCONT)
            except ProcessLookupError:
                pass
    assert stopped, "host 1 was never stopped"
    warnings = seen["warnings"]
    # The first host said to be silent is host 1 (host 0 may follow once JAX has ended it).
    silent = [w for w in warnings if "has not responded" in w]
    assert silent and silent[0].startswith("host 1 has made no progress"), warnings
    assert silent[0].endswith("hung, stopped or unreachable"), warnings
    assert result.step == 60 and not result.stopped
    (restart,) = result.restarts
    assert "host 1 had stopped responding" in restart["cause"], restart
    assert "host 0 had stopped" not in restart["cause"], restart
    logged = [r for r in read_metrics(workdir) if r.get("event") == "restart"]
    assert [r["cause"] for r in logged] == [restart["cause"]]
