"""Train google-research/multinerf for ``Config.max_steps`` steps and score every test
view, the reference figure beside a ``raynerf train`` + ``raynerf eval`` run.

Nothing of multinerf is in this repository: point ``PYTHONPATH`` at a multinerf
checkout and the pycolmap it vendors, run from that checkout, and pass its gin flags
(the ``tiny`` shape of docs/fidelity.md):

    cd MULTINERF && PYTHONPATH=MULTINERF:MULTINERF/internal/pycolmap python \\
        RAYNERF/benchmarks/multinerf_quality.py --gin_configs=configs/360.gin \\
        --gin_bindings="Config.data_dir='SCENE_DIR'" --gin_bindings=Config.factor=8 \\
        --gin_bindings=Config.batch_size=1024 --gin_bindings=Config.max_steps=400 \\
        --gin_bindings=NerfMLP.net_depth=4 --gin_bindings=NerfMLP.net_width=128 \\
        --gin_bindings=PropMLP.net_depth=4 --gin_bindings=PropMLP.net_width=64

Training follows multinerf's ``train.py`` (its fixed seeds, ``setup_model``, its
prefetching dataset, its training fraction) and scoring its ``eval.py`` (the final
parameters at training fraction 1, ``render_image``, ``MetricHarness``: the mean over
views of each view's PSNR and SSIM), without its TensorBoard writer or checkpoints, so
TensorFlow is not needed. ``--seed_offset K`` adds K to both of its seeds, so that its
seed-to-seed spread can be measured as raynerf's is with ``train.seed``. The last line
printed is JSON: ``psnr``, ``ssim``, ``views``, ``seed_offset``. multinerf reads only the
first COLMAP camera, so give it captures with one camera.
"""

from __future__ import annotations

import functools
import json
import time

import flax
import jax.numpy as jnp
import numpy as np
from absl import app, flags
from internal import configs, datasets, image, models  # multinerf's package
from multinerf_setup import setup_training

configs.define_common_flags()
SEED_OFFSET = flags.DEFINE_integer("seed_offset", 0, "Added to multinerf's JAX and numpy seeds.")


def train(config):
    """multinerf's parameters after ``config.max_steps`` steps (unreplicated) and its
    renderer for them."""
    state, train_pstep, render_eval_pfn, cameras, batches, keys = setup_training(config, SEED_OFFSET.value)
    start = time.perf_counter()
    for step in range(1, config.max_steps + 1):
        train_frac = jnp.clip((step - 1) / (config.max_steps - 1), 0, 1)
        state, stats, keys = train_pstep(keys, state, next(batches), cameras, train_frac, 1.0)
        if step % 50 == 0:
            psnr = float(flax.jax_utils.unreplicate(stats)["psnr"])
            print(f"step {step}: train PSNR {psnr:.2f} dB, {time.perf_counter() - start:.0f} s", flush=True)
    return flax.jax_utils.unreplicate(state).params, render_eval_pfn


def score(config, params, render_eval_pfn) -> dict:
    """Mean PSNR and SSIM over the test split, as multinerf's eval.py computes them."""
    test = datasets.load_dataset("test", config.data_dir, config)
    render = functools.partial(render_eval_pfn, params, 1.0)
    harness = image.MetricHarness()
    views = []
    for index in range(test.size):
        batch = next(test)
        rendering = models.render_image(render, batch.rays, None, config)
        views.append(harness(np.asarray(rendering["rgb"], np.float64), np.asarray(batch.rgb, np.float64)))
        print(f"view {index}: {views[-1]}", flush=True)
    return {
        "psnr": float(np.mean([v["psnr"] for v in views])),
        "ssim": float(np.mean([v["ssim"] for v in views])),
        "views": len(views),
        "seed_offset": SEED_OFFSET.value,
    }


def main(_) -> None:
    config = configs.load_config(save_config=False)
    print(json.dumps(score(config, *train(config))))


if __name__ == "__main__":
    app.run(main)
