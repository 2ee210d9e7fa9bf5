"""benchmarks/lockstep.py: the turn-taking protocol and the paired ratios, with
workers that report fixed step times (no timing in the test)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

LOCKSTEP = Path(__file__).resolve().parents[1] / "benchmarks" / "lockstep.py"

# A worker that prints some noise, then `ready`, then for its i-th step the i-th of
# its arguments (cycling), and appends its name to a log at every step.
FAKE = """
import sys
name, log, seconds = sys.argv[1], sys.argv[2], [float(x) for x in sys.argv[3:]]
print("compiling..."); print("ready", flush=True)
for i, _ in enumerate(sys.stdin):
    open(log, "a").write(name + "\\n")
    print(seconds[i % len(seconds)], flush=True)
"""


def fake(tmp_path, name: str, seconds: str) -> str:
    """``--worker`` spec of a FAKE worker logging to tmp_path/order.log."""
    script = tmp_path / "fake.py"
    script.write_text(FAKE)
    return f"{name}={sys.executable} {script} {name} {tmp_path / 'order.log'} {seconds}"


def run(tmp_path, *workers: str, steps=4, turn_steps=1):
    """Runs lockstep.py with ``--worker`` specs: (process, the order steps were taken in)."""
    args = [
        sys.executable,
        str(LOCKSTEP),
        "--steps",
        str(steps),
        "--pause",
        "0",
        "--batch-size",
        "1000",
        "--turn-steps",
        str(turn_steps),
        "--json",
        str(tmp_path / "out.json"),
    ]
    for spec in workers:
        args += ["--worker", spec]
    proc = subprocess.run(args, capture_output=True, text=True, timeout=120)
    log = tmp_path / "order.log"
    return proc, log.read_text().split() if log.exists() else []


def test_paired_ratios_and_turn_order(tmp_path):
    # a's steps alternate 1 s and 2 s; b is steady at 0.5 s; c tracks a at half its time.
    proc, order = run(
        tmp_path,
        fake(tmp_path, "a", "1 2"),
        fake(tmp_path, "b", "0.5"),
        fake(tmp_path, "c", "0.5 1"),
        steps=4,
    )
    assert proc.returncode == 0, proc.stderr
    # Forward, reverse, forward, reverse: nobody always follows the same worker.
    assert order == ["a", "b", "c", "c", "b", "a", "a", "b", "c", "c", "b", "a"]
    result = json.loads((tmp_path / "out.json").read_text())
    assert result["turn_seconds"] == {"a": [1, 2, 1, 2], "b": [0.5] * 4, "c": [0.5, 1, 0.5, 1]}
    rows = {row["name"]: row for row in result["summary"]}
    # Paired by round: c is exactly 2x a in every round, though its times vary 2x.
    assert rows["c"]["speedup"] == rows["c"]["speedup_min"] == rows["c"]["speedup_max"] == 2.0
    assert (rows["b"]["speedup_min"], rows["b"]["speedup_max"]) == (2.0, 4.0)
    assert rows["a"]["speedup"] == 1.0
    assert rows["b"]["rays_per_sec"] == 2000.0  # 1000 rays / median 0.5 s
    assert "first/this 2.000 (2.00-2.00)" in proc.stdout


def test_turns_of_several_steps_drop_the_first(tmp_path):
    # Each turn of 3 steps: a slow first step, then two that differ.
    proc, order = run(
        tmp_path, fake(tmp_path, "a", "9 2 4"), fake(tmp_path, "b", "5 1 1"), steps=2, turn_steps=3
    )
    assert proc.returncode == 0, proc.stderr
    assert order == ["a"] * 3 + ["b"] * 3 + ["b"] * 3 + ["a"] * 3
    result = json.loads((tmp_path / "out.json").read_text())
    assert result["step_seconds"]["a"] == [[9, 2, 4], [9, 2, 4]]
    # The turn's time is the median of its steps after the first: 3 and 1.
    assert result["turn_seconds"] == {"a": [3, 3], "b": [1, 1]}
    rows = {row["name"]: row for row in result["summary"]}
    assert rows["b"]["speedup"] == 3.0


def test_a_worker_that_dies_is_named(tmp_path):
    proc, order = run(tmp_path, fake(tmp_path, "good", "1"), "broken=exit 3", steps=2)
    assert proc.returncode != 0 and order == []
    assert "worker 'broken' exited (code 3) before printing 'ready'" in proc.stderr


def test_a_worker_that_stops_answering_is_named(tmp_path):
    # Answers its first step, then exits.
    proc, _ = run(tmp_path, "quitter=echo ready; read x; echo 1.5; read x; exit 4", steps=3)
    assert proc.returncode != 0
    assert proc.stderr.strip().splitlines()[-1] == "worker 'quitter' answered '' instead of a step time"
