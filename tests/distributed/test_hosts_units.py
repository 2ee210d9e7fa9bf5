"""Fast checks of the host-group pieces: the worker environment, the stop agreement,
and error descriptions (the cluster file: tests/test_cluster_file.py)."""

from __future__ import annotations

import pytest

from raynerf.distributed.hosts import describe_failures, is_user_error
from raynerf.distributed.jaxdist import cpu_worker_env
from raynerf.errors import RaynerfError


def test_cpu_worker_env_sets_device_count_and_keeps_other_flags():
    env = cpu_worker_env(3, "--xla_cpu_multi_thread_eigen=false --xla_force_host_platform_device_count=8")
    flags = env["XLA_FLAGS"].split()
    assert "--xla_cpu_multi_thread_eigen=false" in flags
    assert [f for f in flags if "device_count" in f] == ["--xla_force_host_platform_device_count=3"]
    assert env["JAX_PLATFORMS"] == "cpu"
    with pytest.raises(RaynerfError):
        cpu_worker_env(0)


class _Wrapped(Exception):
    """Like Ray's task errors: the original exception in ``cause``."""

    def __init__(self, cause):
        super().__init__("wrapped\nTraceback ...")
        self.cause = cause


def test_user_errors_are_recognised_through_wrappers():
    assert is_user_error(_Wrapped(RaynerfError("bad scene")))
    assert not is_user_error(_Wrapped(RuntimeError("gloo connection reset")))
    text = describe_failures({1: _Wrapped(RuntimeError("x\ny")), 0: ValueError("first line\nmore")})
    assert text == "host 0: ValueError: first line; host 1: RuntimeError: x"


def test_stop_step_is_agreed_by_hosts_at_different_steps(ray_local):
    """Host 0 runs ahead of host 1; after a stop request both stop at the same step,
    and neither has already passed it."""
    from raynerf.distributed.hosts import RunMonitor

    monitor = RunMonitor.remote()
    attempt = ray_local.get(monitor.begin_attempt.remote())
    ask = lambda step: ray_local.get(monitor.should_stop.remote(attempt, step))
    assert not ask(7)  # host 0 finished step 7
    assert not ask(5)  # host 1 finished step 5
    ray_local.get(monitor.request_stop.remote())
    assert not ask(6)  # host 1: the stop step is set to 8 (one past host 0's 7)
    assert ask(8)  # host 0 stops at 8
    assert not ask(7)  # host 1 goes on to 8 ...
    assert ask(8)  # ... and stops there too
    assert not ray_local.get(monitor.should_stop.remote(attempt - 1, 9))  # a stale group never stops


def test_stop_step_is_agreed_when_hosts_ask_only_at_logged_steps(ray_local):
    """Hosts ask every 5 steps (their logged steps). Host 0 has asked at 15, host 1 only
    at 10 when the stop is requested: the stop step is 20, the next asked step after 15,
    which neither has passed (host 1 is somewhere in 10..14, host 0 in 15..19)."""
    from raynerf.distributed.hosts import RunMonitor

    monitor = RunMonitor.remote()
    attempt = ray_local.get(monitor.begin_attempt.remote())
    ask = lambda step: ray_local.get(monitor.should_stop.remote(attempt, step, 5))
    assert not ask(10) and not ask(15) and not ask(10)
    ray_local.get(monitor.request_stop.remote())
    assert not ask(15)  # host 1 reaches 15: the stop step becomes 20
    assert ask(20)  # host 0
    assert ask(20)  # host 1, at the same step


def test_restart_event_carries_the_cause(ray_local):
    from raynerf.distributed.hosts import RunMonitor

    monitor = RunMonitor.remote()
    ray_local.get(monitor.begin_attempt.remote())
    ray_local.get(monitor.progress.remote(1, 6, {"loss": 1.0}))
    ray_local.get(monitor.record_failure.remote("host 1: ActorDiedError: killed"))
    ray_local.get(monitor.record_failure.remote("host 0: a later report of the same failure"))
    assert ray_local.get(monitor.begin_attempt.remote()) == 2
    events = ray_local.get(monitor.take_unwritten_events.remote())
    assert events == [
        {"event": "restart", "restart": 1, "cause": "host 1: ActorDiedError: killed", "step": 6}
    ]
    assert ray_local.get(monitor.take_unwritten_events.remote()) == []
