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
    alike = describe_failures({2: KeyError("k"), 0: OSError("same"), 1: OSError("same")})
    assert alike == "hosts 0, 1: OSError: same; host 2: KeyError: 'k'"


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


def _ages(step, no_progress_s, silent_s, silent, where=""):
    return {
        "where": where,
        "step": step,
        "no_progress_s": no_progress_s,
        "silent_s": silent_s,
        "silent": silent,
    }


def test_stall_warnings_name_the_silent_host_once():
    from raynerf.distributed.hosts import stall_warnings

    warned: set = set()
    ages = {
        0: _ages(7, 12.0, 0.4, False),  # blocked in a collective, still beating
        1: _ages(7, 12.0, 11.0, True),  # stopped
        2: _ages(7, 12.0, 3.5, False),  # a beat or two late: not judged yet
        3: _ages(8, 2.0, 0.3, False),  # progressing
    }
    lines = stall_warnings(ages, 10.0, warned)
    assert lines == [
        "host 0 has made no progress for 12 s (since step 7) but is alive (waiting for another host?)",
        "host 1 has made no progress for 12 s (since step 7) and has not responded for 11 s: "
        "hung, stopped or unreachable",
    ]
    assert stall_warnings(ages, 10.0, warned) == []  # said once
    ages[2] = _ages(7, 14.0, 6.0, True)  # now silent too
    ages[0] = _ages(None, 30.0, 0.1, False)  # a new group's host that has not logged a step
    assert stall_warnings(ages, 10.0, warned) == [
        "host 0 has made no progress for 30 s (since it joined the group) but is alive "
        "(waiting for another host?)",
        "host 2 has made no progress for 14 s (since step 7) and has not responded for 6 s: "
        "hung, stopped or unreachable",
    ]
    assert stall_warnings(ages, 60.0, set()) == []  # under the threshold: nothing


def test_a_host_that_went_silent_is_named_with_the_failure(ray_local):
    """Ray reports the healthy host 0 (JAX's service ended it); the restart cause also
    names host 1, whose heartbeat had stopped, and not host 0, which beat to the end."""
    import time

    from raynerf.distributed.hosts import RunMonitor

    monitor = RunMonitor.remote(silent_after_s=0.5)
    attempt = ray_local.get(monitor.begin_attempt.remote())
    for rank in (0, 1):
        ray_local.get(monitor.register.remote(attempt, rank, 1000 + rank))
    ray_local.get(monitor.host_step.remote(attempt, 0, 3))
    ray_local.get(monitor.host_step.remote(attempt, 1, 3))
    for _ in range(10):  # host 0 beats, host 1 is silent
        ray_local.get(monitor.alive.remote(attempt, 0))
        time.sleep(0.1)
    hosts = ray_local.get(monitor.state.remote())["hosts"]
    assert hosts[1]["silent"] and not hosts[0]["silent"] and hosts[0]["step"] == 3
    ray_local.get(monitor.record_failure.remote("host 0: WorkerHealthCheckFailedError: unhealthy"))
    ray_local.get(monitor.begin_attempt.remote())
    (event,) = ray_local.get(monitor.take_unwritten_events.remote())
    cause = event["cause"]
    assert cause.startswith("host 0: WorkerHealthCheckFailedError: unhealthy; host 1 had stopped responding")
    assert "host 0 had stopped" not in cause
    assert ray_local.get(monitor.state.remote())["hosts"] == {}  # the new group starts afresh


def test_the_first_host_to_fall_silent_is_named_first():
    from raynerf.distributed.hosts import silent_note

    ages = {
        0: _ages(6, 16.0, 5.5, True),  # ended by JAX after host 1 hung, before Ray noticed
        1: _ages(6, 16.0, 15.2, True),
        2: _ages(6, 16.0, 0.5, False),
    }
    assert silent_note(ages) == (
        "; host 1 had stopped responding 15 s before (hung, stopped or unreachable)"
        "; host 0 stopped responding later (6 s before)"
    )
    assert silent_note({2: ages[2]}) == ""


def test_a_tpu_host_is_named_with_its_worker_id_and_address():
    from raynerf.distributed.hosts import silent_note, stall_warnings

    ages = {1: _ages(7, 12.0, 11.0, True, "TPU worker 0, 10.0.0.3")}
    assert stall_warnings(ages, 10.0, set()) == [
        "host 1 (TPU worker 0, 10.0.0.3) has made no progress for 12 s (since step 7) and has not "
        "responded for 11 s: hung, stopped or unreachable"
    ]
    assert silent_note(ages).startswith("; host 1 (TPU worker 0, 10.0.0.3) had stopped responding 11 s")


@pytest.mark.parametrize(
    "option, message",
    [
        (("--stall-warning", "0"), "Error: --stall-warning must be a positive number of seconds, got 0.0"),
        (("--max-restarts", "-1"), "Error: --max-restarts must be 0 or more, got -1"),
    ],
)
def test_bad_host_group_options_are_one_error_line(tmp_path, option, message):
    """Checked before Ray or JAX start: one Error line, exit 1."""
    from click.testing import CliRunner
    from small_run import small_scene

    from raynerf.cli import main

    scene = small_scene(tmp_path)
    args = ["train", "--scene", scene.name, "--data-dir", str(scene.parent), "--workdir", str(tmp_path / "w")]
    result = CliRunner().invoke(main, [*args, "--hosts", "2", *option])
    assert result.exit_code == 1 and result.output.strip().splitlines()[-1] == message, result.output
