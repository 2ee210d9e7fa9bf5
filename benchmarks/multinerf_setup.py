"""multinerf's training set-up as its ``train.py`` makes it, shared by the benchmarks that
drive google-research/multinerf (``multinerf_step_worker.py``, ``multinerf_quality.py``).
Import it with a multinerf checkout on ``PYTHONPATH``; nothing of multinerf is here."""

from __future__ import annotations

from typing import NamedTuple

import flax
import jax
import jax.numpy as jnp
import numpy as np
from internal import datasets, train_utils  # multinerf's package


class Training(NamedTuple):
    """What multinerf's train loop steps with: ``train_pstep(keys, state, batch, cameras, ...)``,
    and the renderer its eval.py scores views with: ``render_eval_pfn(params, train_frac, ...)``."""

    state: object  # replicated over the local devices
    train_pstep: object
    render_eval_pfn: object
    cameras: tuple
    batches: object  # multinerf's prefetching iterator of training batches
    keys: jax.Array  # [local devices, 2]


def setup_training(config, seed_offset: int = 0) -> Training:
    """multinerf's seeds (shifted by ``seed_offset``), training data, model and step."""
    np.random.seed(20201473 + seed_offset)  # multinerf's train.py seeds
    key = jax.random.PRNGKey(20200823 + seed_offset)
    dataset = datasets.load_dataset("train", config.data_dir, config)
    cameras = tuple(jnp.array(x) if isinstance(x, np.ndarray) else x for x in dataset.cameras)
    key, init_key = jax.random.split(key)
    _, state, render_eval_pfn, train_pstep, _ = train_utils.setup_model(config, init_key, dataset=dataset)
    return Training(
        state=flax.jax_utils.replicate(state),
        train_pstep=train_pstep,
        render_eval_pfn=render_eval_pfn,
        cameras=cameras,
        batches=flax.jax_utils.prefetch_to_device(dataset, 3),
        keys=jax.random.split(key, jax.local_device_count()),
    )
