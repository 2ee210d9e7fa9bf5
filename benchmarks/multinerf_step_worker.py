"""A ``lockstep.py`` worker for google-research/multinerf: its own train step on its
own data pipeline, one step per line read from stdin, each step's seconds printed.

Nothing of multinerf is in this repository: point ``PYTHONPATH`` at a multinerf
checkout (and the pycolmap it needs), run from that checkout, and pass its gin flags:

    cd MULTINERF && PYTHONPATH=MULTINERF:PYCOLMAP python \\
        RAYNERF/benchmarks/multinerf_step_worker.py --gin_configs=configs/360.gin \\
        --gin_bindings="Config.data_dir='.../bonsai'" --gin_bindings=Config.factor=8 \\
        --gin_bindings=Config.batch_size=1024 --gin_bindings=NerfMLP.net_depth=4 ...

It sets up the model and data as multinerf's ``train.py`` does (its seeds, its
``setup_model``, its prefetching dataset), runs three warm-up steps, prints ``ready``,
and then times each step from taking the next batch to the step's results being ready.
multinerf's ``load_config`` writes the gin config into ``Config.checkpoint_dir``, so
bind one (any writable folder).
"""

from __future__ import annotations

import sys
import time

import jax
import jax.numpy as jnp
from absl import app
from internal import configs  # multinerf's package
from multinerf_setup import setup_training

configs.define_common_flags()


def main(_) -> None:
    config = configs.load_config()
    state, train_pstep, _, cameras, batches, keys = setup_training(config)
    done = 0

    def one_step():
        nonlocal state, keys, done
        train_frac = jnp.clip(done / (config.max_steps - 1), 0, 1)
        state, stats, keys = train_pstep(keys, state, next(batches), cameras, train_frac, 1.0)
        jax.block_until_ready(stats)
        done += 1

    for _ in range(3):
        one_step()
    print("ready", flush=True)
    for _ in sys.stdin:
        start = time.perf_counter()
        one_step()
        print(time.perf_counter() - start, flush=True)


if __name__ == "__main__":
    app.run(main)
