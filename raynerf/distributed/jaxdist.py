"""``jax.distributed`` for CPU host groups: the environment and the initialisation.

Ray Train's ``JaxTrainer`` initialises ``jax.distributed`` itself on TPU and GPU
workers, but not on CPU workers. A CPU host group (local ``--hosts N`` runs, CPU
clusters) therefore does it here: each worker process is started with
:func:`cpu_worker_env` in its environment (so XLA sees ``K`` host devices from the
moment jax is first imported), and calls :func:`initialize_cpu` with the
coordinator address that rank 0 chose and holds (:class:`CoordinatorPort`) and broadcast.

Nothing in this module imports jax at import time.
"""

from __future__ import annotations

import os
import socket
import sys

from raynerf.errors import RaynerfError

DEVICE_COUNT_FLAG = "--xla_force_host_platform_device_count"


def cpu_worker_env(devices_per_host: int, base_xla_flags: str = "") -> dict[str, str]:
    """Environment variables for a CPU worker process with ``devices_per_host`` devices.

    ``base_xla_flags`` (e.g. the driver's ``XLA_FLAGS``) is kept, minus any earlier
    device-count flag.
    """
    if devices_per_host < 1:
        raise RaynerfError(f"--devices-per-host must be at least 1, got {devices_per_host}")
    kept = [f for f in base_xla_flags.split() if not f.startswith(DEVICE_COUNT_FLAG)]
    flags = " ".join(kept + [f"{DEVICE_COUNT_FLAG}={devices_per_host}"])
    return {"XLA_FLAGS": flags, "JAX_PLATFORMS": "cpu"}


class CoordinatorPort:
    """A port for the ``jax.distributed`` coordinator, held until JAX has bound it.

    Picking a free port and letting JAX bind it later leaves a gap in which another
    process may take it. The port is therefore kept bound here, with ``SO_REUSEPORT``
    and without listening, from the moment it is chosen until :meth:`release` (after
    ``jax.distributed.initialize`` has returned on this process). JAX's coordination
    service is a gRPC server, and gRPC binds with ``SO_REUSEPORT`` on Linux, so it can
    bind the held port while any other process that binds it without that option (or
    as another user) is refused. Connections only reach listening sockets, so every
    client reaches JAX's service, never this placeholder.
    """

    def __init__(self, host: str):
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if hasattr(socket, "SO_REUSEPORT"):
            self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        self._sock.bind(("", 0))
        self.port: int = self._sock.getsockname()[1]
        self.address = f"{host}:{self.port}"

    def release(self) -> None:
        self._sock.close()

    def __enter__(self) -> CoordinatorPort:
        return self

    def __exit__(self, *exc) -> None:
        self.release()


HEARTBEAT_ENV = "RAYNERF_JAX_HEARTBEAT_S"
DEFAULT_HEARTBEAT_S = 100  # jax.distributed's own default


def heartbeat_timeout_s() -> int:
    """How long JAX's coordination service waits for a silent process before it fails the
    job (``$RAYNERF_JAX_HEARTBEAT_S``, default 100 s as in JAX)."""
    value = os.environ.get(HEARTBEAT_ENV, "")
    try:
        seconds = int(value) if value else DEFAULT_HEARTBEAT_S
    except ValueError:
        raise RaynerfError(f"${HEARTBEAT_ENV} must be a whole number of seconds, got {value!r}") from None
    if seconds < 1:
        raise RaynerfError(f"${HEARTBEAT_ENV} must be at least 1, got {seconds}")
    return seconds


def initialize_cpu(coordinator: str, num_processes: int, process_id: int, devices_per_host: int) -> None:
    """Joins this process to the CPU ``jax.distributed`` job (gloo collectives) and
    checks that it sees ``devices_per_host`` local devices.

    Must run before anything creates a jax array or asks for devices.
    """
    already = "jax" in sys.modules
    import jax

    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(
        coordinator_address=coordinator,
        num_processes=num_processes,
        process_id=process_id,
        heartbeat_timeout_seconds=heartbeat_timeout_s(),
    )
    local = jax.local_device_count()
    if local != devices_per_host:
        hint = " (jax was imported before XLA_FLAGS was set in this process)" if already else ""
        raise RuntimeError(
            f"host {process_id} sees {local} CPU devices, expected {devices_per_host}{hint}; "
            f"XLA_FLAGS={os.environ.get('XLA_FLAGS', '')!r}"
        )
    if jax.process_count() != num_processes or jax.process_index() != process_id:
        raise RuntimeError(
            f"jax.distributed reports process {jax.process_index()} of {jax.process_count()}, "
            f"expected {process_id} of {num_processes}"
        )


def shutdown() -> None:
    """Leaves the ``jax.distributed`` job (a no-op if this process never joined)."""
    if "jax" not in sys.modules:
        return
    import jax

    try:
        jax.distributed.shutdown()
    except Exception:  # noqa: BLE001 - best effort at the end of a run
        pass


def set_local_devices(devices_per_host: int) -> None:
    """Gives this (single, in-process) host ``devices_per_host`` CPU devices; must run
    before jax is imported."""
    if "jax" in sys.modules:
        import jax

        if jax.local_device_count() != devices_per_host:
            raise RaynerfError(
                f"--devices-per-host {devices_per_host}: jax is already running with "
                f"{jax.local_device_count()} devices in this process"
            )
        return
    os.environ.update(cpu_worker_env(devices_per_host, os.environ.get("XLA_FLAGS", "")))
