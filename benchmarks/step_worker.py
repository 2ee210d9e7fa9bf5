"""A ``lockstep.py`` worker: raynerf's train step on a synthetic batch, one step per
line read from stdin, each step's seconds printed.

    python benchmarks/step_worker.py --config tiny [--batch-size 1024] [--set k=v ...]

The step is the one ``raynerf bench`` times (compiled ahead, donated state, synthetic
rays), under the allocator tunables the ``raynerf`` command sets.
"""

from __future__ import annotations

import argparse
import sys

from raynerf.hostmem import reexec_with_malloc_tunables


def main() -> None:
    reexec_with_malloc_tunables(sys.argv)

    from raynerf.bench import synthetic_train_setup, time_steps
    from raynerf.config import load_config
    from raynerf.mesh import make_mesh

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="tiny")
    parser.add_argument("--batch-size", type=int, default=1024)
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    parser.add_argument("--warmup", type=int, default=3)
    args = parser.parse_args()
    config = load_config(args.config, args.overrides)
    config = config.replace({"train": {"batch_size": args.batch_size}})
    setup = synthetic_train_setup(config, make_mesh())
    state, batch, step_fn = setup.state, setup.batch, setup.step_fn
    step = step_fn.lower(state, batch).compile()
    state, _ = time_steps(step, state, batch, 0, warmup=args.warmup)
    print("ready", flush=True)
    for _ in sys.stdin:
        state, (seconds,) = time_steps(step, state, batch, 1, warmup=0)
        print(seconds, flush=True)


if __name__ == "__main__":
    main()
