"""The driver's own pieces, with real processes where it matters: the progress bar
shows each step's own loss, the coordinator port cannot be taken before JAX binds
it, a driver finds its own Ray with or without a ``ray start`` cluster on the
machine, and the local Ray it started dies with it (SIGKILL, SIGTERM). The Ray
tests are slow (each starts one or more Ray instances: 10-50 s on 2 busy cores)."""

from __future__ import annotations

import io
import os
import shutil
import signal
import socket
import subprocess
import sys
import time

import psutil
import pytest
from conftest import wait_gone

from raynerf.distributed import reaper
from raynerf.distributed.jaxdist import CoordinatorPort, cpu_worker_env
from raynerf.training.progress import ProgressBar

RAY = shutil.which("ray", path=os.path.dirname(sys.executable)) or "ray"


def _frames(text: str) -> list[str]:
    return [f for f in text.replace("\n", "\r").split("\r") if f.strip()]


def test_progress_bar_shows_each_steps_own_loss():
    out = io.StringIO()
    bar = ProgressBar(10, file=out, mininterval=0, miniters=1)  # redraw at every update
    for step in (1, 2, 3):
        bar.update(step, {"loss": step / 10, "psnr": 20.0 + step, "rays_per_sec": 100.0})
        last = _frames(out.getvalue())[-1]
        assert f"{step}/10" in last and f"loss={step / 10:.4f}" in last, last
    # New metrics for the step already shown are drawn too.
    bar.update(3, {"loss": 0.25, "psnr": 30.0, "rays_per_sec": 100.0})
    assert "loss=0.2500" in _frames(out.getvalue())[-1]
    bar.close()


_JOIN = """
import sys
from raynerf.distributed.jaxdist import initialize_cpu
initialize_cpu(sys.argv[1], 2, int(sys.argv[2]), 1)
import jax
print("joined", jax.process_index(), jax.device_count(), flush=True)
jax.distributed.shutdown()
"""


def test_coordinator_port_is_held_until_jax_binds_it():
    """While rank 0 holds the port nobody else can bind it, yet JAX's coordinator (two
    real processes joining over gloo) starts on it; after release it is free."""
    env = {**os.environ, **cpu_worker_env(1)}
    with CoordinatorPort("127.0.0.1") as port:
        intruder = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        with pytest.raises(OSError):
            intruder.bind(("", port.port))
        intruder.close()
        procs = [
            subprocess.Popen(
                [sys.executable, "-c", _JOIN, port.address, str(rank)],
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
            for rank in (0, 1)
        ]
        outputs = [p.communicate(timeout=180)[0] for p in procs]
    for rank, (proc, output) in enumerate(zip(procs, outputs)):
        assert proc.returncode == 0 and f"joined {rank} 2" in output, output[-2000:]
    free = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    free.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # past JAX's TIME_WAIT connections
    free.bind(("", port.port))  # would fail while the reservation (no SO_REUSEADDR) were held
    free.close()


_DRIVER = """
import os, time, ray
from raynerf.distributed.launch import connect
connect(None, 2)
@ray.remote(num_cpus=0)
class Probe:
    def pid(self):
        return os.getpid()
probes = [Probe.remote() for _ in range(2)]
print("ready", ray.get([p.pid.remote() for p in probes]), flush=True)
time.sleep(300)
"""


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM])
def test_local_ray_dies_with_its_driver(ray_tmpdir, sig):
    """Killed by ``sig``, a driver that started its own Ray takes all of it along:
    GCS, raylet, Ray's agents (which outlive a SIGKILLed driver by a minute without
    the watchdog) and the workers."""
    driver = subprocess.Popen(
        [sys.executable, "-c", _DRIVER], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
    )
    try:
        said = [driver.stdout.readline() for _ in range(2)]
        assert "started a private local instance" in said[0] and said[1].startswith("ready"), said
        time.sleep(1)  # the watchdog's list is refreshed every 0.25 s
        spawned = psutil.Process(driver.pid).children(recursive=True)
        names = {p.name() for p in spawned}
        assert {"gcs_server", "raylet"} <= names and any("Agent" in n for n in names), names
        driver.send_signal(sig)
        driver.wait(timeout=60)
        assert wait_gone(spawned, 30) == []
    finally:
        if driver.poll() is None:
            driver.kill()


_CONNECT = """
import ray
from raynerf.distributed.launch import connect, shutdown_local
started = connect(None, 2)
print("started", started, ray.get_runtime_context().gcs_address, flush=True)
print("cpus", ray.cluster_resources().get("CPU"), flush=True)
shutdown_local()
"""


@pytest.mark.slow
def test_no_address_with_a_ray_start_cluster_running_starts_a_private_instance(ray_tmpdir):
    """``ray start`` left a cluster on this machine: a bare ``ray.init(num_cpus=...)``
    attaches to it on its own and fails (the probe's ValueError); the driver instead
    starts its own instance, with the CPUs it asked for, and says so."""
    with socket.socket() as s:
        s.bind(("", 0))
        gcs_port = s.getsockname()[1]
    head = subprocess.Popen(
        [
            RAY,
            "start",
            "--head",
            f"--port={gcs_port}",
            "--num-cpus=1",
            "--include-dashboard=false",
            "--block",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        address_file = os.path.join(ray_tmpdir, "ray", "ray_current_cluster")
        deadline = time.time() + 120
        while not os.path.exists(address_file):
            assert head.poll() is None and time.time() < deadline, "ray start did not come up"
            time.sleep(0.5)
        existing = open(address_file).read().strip()
        assert existing.endswith(f":{gcs_port}")

        bare = subprocess.run(
            [sys.executable, "-c", "import ray; ray.init(num_cpus=2)"], capture_output=True, text=True
        )
        assert bare.returncode != 0 and "num_cpus and num_gpus must not be provided" in bare.stderr

        ours = subprocess.run([sys.executable, "-c", _CONNECT], capture_output=True, text=True, timeout=180)
        assert ours.returncode == 0, ours.stderr[-3000:]
        said = ours.stdout
        assert "started a private local instance" in said and existing in said, said
        assert "--address auto" in said
        started = next(line.split() for line in said.splitlines() if line.startswith("started "))
        assert started[1] == "True" and started[2] != existing
        assert "cpus 2.0" in said  # its own instance, not the 1-CPU cluster

        attach = _CONNECT.replace("connect(None, 2)", "connect('auto', None)")
        theirs = subprocess.run([sys.executable, "-c", attach], capture_output=True, text=True, timeout=180)
        assert theirs.returncode == 0, theirs.stderr[-3000:]
        assert "attached to the cluster at auto" in theirs.stdout and existing in theirs.stdout
        assert "started False" in theirs.stdout and "cpus 1.0" in theirs.stdout
    finally:
        spawned = psutil.Process(head.pid).children(recursive=True)
        head.terminate()
        head.wait(timeout=60)
        reaper.end_processes(_start_times(spawned))


def _start_times(procs: list[psutil.Process]) -> dict[int, float]:
    times = {}
    for p in procs:
        try:
            times[p.pid] = p.create_time()
        except psutil.NoSuchProcess:
            pass
    return times
