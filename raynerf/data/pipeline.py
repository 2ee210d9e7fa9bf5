"""The grain pipeline: shuffled training pixels -> sharded ray batches, resumable.

The stream. All training pixels (pixels of training images only) are numbered
0 .. P-1. Epoch ``e`` visits them in the order of a keyed bijection of [0, P)
(a Feistel network with cycle walking, keyed by the seed and ``e``), so no
permutation is ever stored. The epochs are laid end to end; global batch ``i``
is stream positions ``[i * B, (i + 1) * B)``, and process ``k`` of ``n`` takes
the ``k``-th contiguous slice of ``B / n`` positions. Hence the shards of all
processes are disjoint, an epoch's positions cover every training pixel exactly
once, and batch ``i`` is a pure function of ``(seed, i, k, n)``: a grain
``MapDataset`` over batch indices whose iterator state (the next index) is all a
checkpoint needs.
"""

from __future__ import annotations

import sys
import time

import grain
import numpy as np

from raynerf.config import Config
from raynerf.data.cameras import pixel_rays
from raynerf.data.scene import Scene
from raynerf.errors import RaynerfError

_MASK64 = np.uint64(0xFFFFFFFFFFFFFFFF)
FEISTEL_ROUNDS = 4


def _mix64(x: np.ndarray) -> np.ndarray:
    """A 64-bit integer hash (splitmix64 finaliser) of uint64 arrays."""
    x = np.asarray(x, np.uint64)
    with np.errstate(over="ignore"):
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def epoch_key(seed: int, epoch: np.ndarray) -> np.ndarray:
    """uint64 [...] key of each epoch's permutation."""
    with np.errstate(over="ignore"):
        return _mix64(
            np.uint64(seed & 0xFFFFFFFF) * np.uint64(0x9E3779B97F4A7C15) + np.asarray(epoch, np.uint64)
        )


def _feistel(x: np.ndarray, key: np.ndarray, half_bits: int) -> np.ndarray:
    """A keyed bijection of [0, 4**half_bits) (balanced Feistel network), elementwise."""
    shift, mask = np.uint64(half_bits), np.uint64((1 << half_bits) - 1)
    left, right = x >> shift, x & mask
    for round_ in range(FEISTEL_ROUNDS):
        with np.errstate(over="ignore"):
            f = _mix64(right ^ _mix64(key + np.uint64(round_))) & mask
        left, right = right, left ^ f
    return (left << shift) | right


def permute(positions: np.ndarray, size: int, key: np.ndarray) -> np.ndarray:
    """A keyed bijection of [0, size) applied to ``positions`` [B] (keys [B] or scalar).

    Feistel over the smallest even power of two >= size, with cycle walking
    (re-applying until the value falls inside [0, size)).
    """
    half_bits = max(1, (max(size - 1, 1).bit_length() + 1) // 2)
    key = np.broadcast_to(np.asarray(key, np.uint64), np.shape(positions))
    out = _feistel(np.asarray(positions, np.uint64), key, half_bits)
    outside = out >= size
    while outside.any():
        out[outside] = _feistel(out[outside], key[outside], half_bits)
        outside = out >= size
    return out.astype(np.int64)


class PixelTable:
    """Numbering of the training pixels: pixel id <-> (image index, row, column)."""

    def __init__(self, scene: Scene):
        self.images = np.asarray(scene.train_indices, np.int64)
        if len(self.images) == 0:
            raise RaynerfError(f"scene {scene.path} has no training images (check data.llffhold)")
        self.widths = scene.widths[self.images].astype(np.int64)
        counts = self.widths * scene.heights[self.images].astype(np.int64)
        self.starts = np.concatenate([[0], np.cumsum(counts)])
        self.size = int(self.starts[-1])

    def locate(self, pixel_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """pixel ids [B] -> (image index [B], row y [B], column x [B])."""
        slot = np.searchsorted(self.starts, pixel_ids, side="right") - 1
        local = pixel_ids - self.starts[slot]
        width = self.widths[slot]
        return self.images[slot], local // width, local % width


class RayBatches:
    """Global batch index -> this process's ray batch (a pure function of the index)."""

    def __init__(
        self,
        scene: Scene,
        pixels: np.ndarray,
        seed: int,
        global_batch: int,
        process_index: int,
        process_count: int,
        near: float,
        far: float,
    ):
        if global_batch % process_count:
            raise RaynerfError(
                f"train.batch_size {global_batch} is not divisible by the {process_count} "
                "processes; pick a multiple of the process count"
            )
        self.scene, self.pixels, self.seed = scene, pixels, seed
        self.table = PixelTable(scene)
        self.global_batch = global_batch
        self.local_batch = global_batch // process_count
        self.offset = process_index * self.local_batch
        self.near, self.far = near, far

    def pixel_ids(self, step: int) -> np.ndarray:
        """int64 [b] training-pixel ids of this process's shard of global batch ``step``."""
        start = step * self.global_batch + self.offset
        positions = np.arange(start, start + self.local_batch, dtype=np.int64)
        epochs, within = np.divmod(positions, self.table.size)
        return permute(within, self.table.size, epoch_key(self.seed, epochs))

    def __call__(self, step: int) -> dict[str, np.ndarray]:
        image, y, x = self.table.locate(self.pixel_ids(int(step)))
        batch = pixel_rays(self.scene, image, x, y, self.near, self.far)
        batch["rgb"] = self.pixels[image, y, x].astype(np.float32) / np.float32(255.0)
        batch["image_index"] = image.astype(np.int32)[:, None]
        return batch


def make_dataset(
    scene: Scene,
    pixels: np.ndarray,
    config: Config,
    process_index: int,
    process_count: int,
    near: float,
    far: float,
) -> grain.MapDataset:
    """The infinite grain ``MapDataset`` of this process's batches (index = global step)."""
    batches = RayBatches(
        scene, pixels, config.train.seed, config.train.batch_size, process_index, process_count, near, far
    )
    return grain.MapDataset.range(sys.maxsize).map(batches)


def make_train_iterator(
    scene: Scene,
    pixels: np.ndarray,
    config: Config,
    process_index: int | None = None,
    process_count: int | None = None,
    near: float | None = None,
    far: float | None = None,
    prefetch_threads: int = 2,
) -> grain.DatasetIterator:
    """This process's iterator of training batches.

    Each batch is a dict of float32 numpy arrays: origins, directions, viewdirs,
    rgb [b, 3]; radii, near, far [b, 1]; plus image_index int32 [b, 1]; with
    ``b = config.train.batch_size // process_count``. The iterator has
    ``get_state()`` / ``set_state()`` (checkpoint it with
    ``grain.checkpoint.CheckpointSave`` / ``CheckpointRestore`` in orbax).
    ``process_index`` / ``process_count`` default to JAX's.
    """
    if process_index is None or process_count is None:
        import jax

        process_index, process_count = jax.process_index(), jax.process_count()
    near = config.model.near if near is None else near
    far = config.model.far if far is None else far
    dataset = make_dataset(scene, pixels, config, process_index, process_count, near, far)
    iter_dataset = dataset.to_iter_dataset(
        grain.ReadOptions(num_threads=prefetch_threads, prefetch_buffer_size=2 * max(prefetch_threads, 1))
    )
    if config.data.worker_count > 0:  # worker processes; threads are faster for in-memory pixels
        from absl import flags

        if not flags.FLAGS.is_parsed():  # grain's workers read absl flags
            flags.FLAGS.mark_as_parsed()
        iter_dataset = iter_dataset.mp_prefetch(
            grain.MultiprocessingOptions(num_workers=config.data.worker_count)
        )
    return iter(iter_dataset)


def measure_pipeline(
    scene: Scene,
    pixels: np.ndarray,
    config: Config,
    seconds: float = 5.0,
    process_index: int = 0,
    process_count: int = 1,
) -> float:
    """Rays per second this process's iterator yields, measured for about ``seconds``."""
    iterator = make_train_iterator(scene, pixels, config, process_index, process_count)
    next(iterator)  # start-up (threads, first batch) is not counted
    rays, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        rays += len(next(iterator)["rgb"])
    return rays / (time.perf_counter() - start)
