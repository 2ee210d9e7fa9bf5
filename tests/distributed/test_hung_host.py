"""A host that hangs (SIGSTOP) in a real 2-host group: the driver warns, naming it as
the (first) silent one; when JAX's coordination service gives up on it (it ends the
healthy process 0, which is what Ray then reports) the run's error names host 1 as
the host that had stopped responding. (That a restarted group resumes from the last
checkpoint is test_hosts_training.py's killed-host test; the restart event carries
the same cause, see test_hosts_units.py.)

Slow: a 2-host group starts and compiles (about a minute and a half on 2 busy cores).
"""

from __future__ import annotations

import os
import signal

import pytest
from conftest import tiny_config

from raynerf.distributed.hosts import HostGroupSpec
from raynerf.distributed.jaxdist import HEARTBEAT_ENV
from raynerf.distributed.launch import HostGroupError, launch

pytestmark = pytest.mark.slow


@pytest.mark.long
def test_stopped_host_is_named_in_the_warnings_and_the_error(ray_local, tiny_scene, tmp_path, monkeypatch):
    scene, cache = tiny_scene
    monkeypatch.setenv(HEARTBEAT_ENV, "10")  # JAX gives up on a silent process after 10 s, not 100
    config = tiny_config(cache, "train.max_steps=60", "train.checkpoint_every=5")
    stopped: dict = {}
    seen: dict = {"warnings": []}

    def stop_host_1(state):
        seen["warnings"] = state["stall_warnings"]
        if not stopped and (state["step"] or 0) >= 6 and 1 in state["pids"]:
            stopped["pid"] = state["pids"][1]
            os.kill(stopped["pid"], signal.SIGSTOP)

    try:
        with pytest.raises(HostGroupError) as failed:
            launch(
                config,
                scene,
                tmp_path / "hung",
                HostGroupSpec(2, 1, max_restarts=0),
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
    message = str(failed.value)
    assert message.startswith("training failed on host "), message  # what Ray reports (host 0, here)
    assert "; host 1 had stopped responding" in message, message  # what raynerf adds
    assert "host 0 had stopped" not in message, message
