"""Paired timing of train steps: worker processes take turns of one or more steps.

This host's speed drifts by tens of percent within minutes, so two programs timed one
after the other (even alternating) can differ by more than the change being measured.
Here every worker keeps its compiled step in memory and runs one step when told; the
workers take turns, so each round of steps sees the same host, and each worker's
time is compared with the first worker's time in the same round.

    python benchmarks/lockstep.py --steps 20 --batch-size 1024 \\
        --turn-steps 3 --worker 'now=python benchmarks/step_worker.py --config tiny' \\
        --worker 'fast=XLA_FLAGS=--xla_cpu_enable_fast_math=true \\
                  python benchmarks/step_worker.py --config tiny'

On this host the first step after another program's turn (or after a pause) runs
slower than the steps that follow it, by up to a second of extra CPU time, while a
training run's steps all follow their own kind. ``--turn-steps N`` gives each worker N
steps per turn and drops the first: the turn's time is the median of the other N - 1.
Use it when comparing programs whose steps differ in length, where the same penalty
weighs more on the shorter step.

A worker is any shell command that compiles and warms up, prints a line ``ready``,
then for each line it reads runs one train step and prints that step's seconds;
``step_worker.py`` is raynerf's, ``multinerf_step_worker.py`` drives a multinerf
checkout the same way (see its docstring). Workers warm up one at a time, then step in
forward order, next round in reverse order (no worker always follows the same one),
optionally after ``--pause`` seconds of quiet each.

Prints, for each worker: median step time and rays/s, and the median (and range) over
rounds of ``first worker's turn time / this worker's turn time``: above 1 means faster than the
first. ``--json PATH`` keeps every step time.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time


def parse_worker(spec: str) -> tuple[str, str]:
    """``NAME=COMMAND`` -> (name, command)."""
    name, sep, command = spec.partition("=")
    if not sep or not name or not command:
        raise SystemExit(f"--worker takes NAME=COMMAND, got {spec!r}")
    return name, command


def start(name: str, command: str) -> subprocess.Popen:
    """Start a worker and wait for its ``ready`` line."""
    proc = subprocess.Popen(["bash", "-c", command], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    for line in proc.stdout:
        if line.strip() == "ready":
            return proc
    raise SystemExit(f"worker {name!r} exited (code {proc.wait()}) before printing 'ready'")


def step(name: str, proc: subprocess.Popen) -> float:
    """One step of a ready worker: its own measure of the step, in seconds."""
    line = ""
    try:
        proc.stdin.write("step\n")
        proc.stdin.flush()
        line = proc.stdout.readline()
        return float(line)
    except (BrokenPipeError, ValueError):
        raise SystemExit(f"worker {name!r} answered {line.strip()!r} instead of a step time") from None


def turn(name: str, proc: subprocess.Popen, steps: int, pause: float) -> tuple[float, list[float]]:
    """One worker's turn: ``steps`` steps; the first is dropped when there are more.
    ``(the turn's median step, every step's seconds)``."""
    times = []
    for _ in range(steps):
        time.sleep(pause)
        times.append(step(name, proc))
    return statistics.median(times[1:] if steps > 1 else times), times


def round_orders(num_workers: int, rounds: int) -> list[list[int]]:
    """Forward order, then reverse, alternately."""
    forward = list(range(num_workers))
    return [forward if r % 2 == 0 else forward[::-1] for r in range(rounds)]


def summarise(times: dict[str, list[float]], batch_size: int) -> list[dict]:
    """Per worker, from its turn times: median and min, rays/s, and the paired ratios
    ``first[r] / this[r]`` over rounds r (median, min, max)."""
    first = next(iter(times.values()))
    rows = []
    for name, seconds in times.items():
        ratios = [a / b for a, b in zip(first, seconds)]
        median = statistics.median(seconds)
        rows.append(
            dict(
                name=name,
                median_s=median,
                min_s=min(seconds),
                rays_per_sec=batch_size / median,
                speedup=statistics.median(ratios),
                speedup_min=min(ratios),
                speedup_max=max(ratios),
            )
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--worker", action="append", required=True, metavar="NAME=COMMAND")
    parser.add_argument("--steps", type=int, default=20, help="rounds: turns per worker")
    parser.add_argument("--batch-size", type=int, default=1024, help="rays per step (for rays/s)")
    parser.add_argument(
        "--turn-steps", type=int, default=1, help="steps per turn; with more than one the first is dropped"
    )
    parser.add_argument("--pause", type=float, default=0.0, help="seconds of quiet before each step")
    parser.add_argument("--json", help="write every step time and the summary here")
    args = parser.parse_args()
    workers = [parse_worker(spec) for spec in args.worker]
    if len({name for name, _ in workers}) != len(workers):
        raise SystemExit("worker names must differ")
    procs = {}
    try:
        for name, command in workers:
            procs[name] = start(name, command)
        names = list(procs)
        times = {name: [] for name in names}
        every = {name: [] for name in names}
        for order in round_orders(len(names), args.steps):
            for i in order:
                median, seconds = turn(names[i], procs[names[i]], args.turn_steps, args.pause)
                times[names[i]].append(median)
                every[names[i]].append(seconds)
    finally:
        for proc in procs.values():
            try:
                proc.stdin.close()
            except BrokenPipeError:  # the worker has gone already
                pass
            proc.wait()
    rows = summarise(times, args.batch_size)
    for row in rows:
        print(
            f"{row['name']:>16s}  median {row['median_s'] * 1e3:9.1f} ms  "
            f"{row['rays_per_sec']:9.1f} rays/s  min {row['min_s'] * 1e3:9.1f} ms  "
            f"first/this {row['speedup']:.3f} ({row['speedup_min']:.2f}-{row['speedup_max']:.2f})"
        )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(
                dict(
                    summary=rows,
                    turn_seconds=times,
                    step_seconds=every,
                    turn_steps=args.turn_steps,
                    batch_size=args.batch_size,
                ),
                f,
                indent=1,
            )


if __name__ == "__main__":
    sys.exit(main())
