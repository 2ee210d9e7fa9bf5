"""The grain pipeline: shard disjointness and coverage, determinism, exact resume, contents."""

import grain
import numpy as np
import orbax.checkpoint as ocp
import pytest

from raynerf.config import Config
from raynerf.data.cache import load_pixels
from raynerf.data.pipeline import RayBatches, epoch_key, make_train_iterator, permute
from raynerf.data.scene import load_scene
from raynerf.errors import RaynerfError


@pytest.fixture(scope="module")
def scene_and_pixels(small_scene, tmp_path_factory):
    scene = load_scene(small_scene, 8)  # 14 train images of 20 x 15 = 4200 pixels
    pixels, _ = load_pixels(scene, tmp_path_factory.mktemp("cache"))
    return scene, pixels


def _config(batch_size=256, seed=0):
    return Config().replace({"train": {"batch_size": batch_size, "seed": seed}})


@pytest.mark.parametrize("size", [1, 2, 3, 64, 1000, 4097])
def test_permute_is_a_bijection(size):
    out = permute(np.arange(size), size, epoch_key(5, np.zeros(size)))
    np.testing.assert_array_equal(np.sort(out), np.arange(size))


def test_two_processes_cover_an_epoch_exactly_once(scene_and_pixels):
    scene, pixels = scene_and_pixels
    shards = [RayBatches(scene, pixels, 0, 200, k, 2, 0.2, 1e6) for k in range(2)]
    total = shards[0].table.size
    assert total == 14 * 20 * 15
    steps = total // 200  # 4200 = 21 global batches exactly
    ids = [np.concatenate([s.pixel_ids(i) for i in range(steps)]) for s in shards]
    assert not set(ids[0].tolist()) & set(ids[1].tolist())
    np.testing.assert_array_equal(np.sort(np.concatenate(ids)), np.arange(total))
    images, _, _ = shards[0].table.locate(np.arange(total))
    assert set(images.tolist()) == set(scene.train_indices.tolist())  # no test-image pixels
    # the next epoch is a different order of the same pixels
    nxt = np.concatenate([shards[0].pixel_ids(i) for i in range(steps, 2 * steps)])
    assert not np.array_equal(nxt, ids[0])


def test_epoch_boundary_inside_a_batch_still_covers(scene_and_pixels):
    scene, pixels = scene_and_pixels
    batches = RayBatches(scene, pixels, 3, 256, 0, 1, 0.2, 1e6)  # 4200 is not a multiple of 256
    total = batches.table.size
    stream = np.concatenate([batches.pixel_ids(i) for i in range(40)])
    np.testing.assert_array_equal(np.sort(stream[:total]), np.arange(total))
    np.testing.assert_array_equal(np.sort(stream[total : 2 * total]), np.arange(total))


def test_batches_hold_the_right_pixels_and_rays(scene_and_pixels):
    scene, pixels = scene_and_pixels
    batch = next(make_train_iterator(scene, pixels, _config(512), 0, 2))
    assert batch["rgb"].shape == (256, 3) and batch["radii"].shape == (256, 1)
    assert all(v.dtype == np.float32 for k, v in batch.items() if k != "image_index")
    test_images = set(scene.test_indices.tolist())
    for j in range(0, 256, 17):
        i = int(batch["image_index"][j, 0])
        assert i not in test_images
        rays = scene.image_rays(i, 0.2, 1e6)
        image = scene.read_image(i)
        # find the pixel whose ray this is
        match = np.argwhere(np.all(np.abs(rays["directions"] - batch["directions"][j]) < 1e-6, axis=-1))
        assert len(match) == 1
        y, x = match[0]
        np.testing.assert_allclose(batch["rgb"][j], image[y, x], atol=1e-6)
        np.testing.assert_allclose(batch["origins"][j], rays["origins"][y, x])
        np.testing.assert_allclose(batch["radii"][j], rays["radii"][y, x], rtol=1e-6)


def test_same_seed_same_batches_other_seed_other_batches(scene_and_pixels):
    scene, pixels = scene_and_pixels
    a = [next(it)["rgb"] for it in [make_train_iterator(scene, pixels, _config(), 0, 1)] for _ in range(3)]
    b = [next(it)["rgb"] for it in [make_train_iterator(scene, pixels, _config(), 0, 1)] for _ in range(3)]
    c = next(make_train_iterator(scene, pixels, _config(seed=1), 0, 1))["rgb"]
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)
    assert not np.array_equal(a[0], c)


def test_orbax_checkpointed_state_reproduces_following_batches(scene_and_pixels, tmp_path):
    scene, pixels = scene_and_pixels
    iterator = make_train_iterator(scene, pixels, _config(), 0, 1)
    for _ in range(5):
        next(iterator)
    with ocp.CheckpointManager(tmp_path / "ckpt") as manager:
        manager.save(5, args=ocp.args.Composite(data=grain.checkpoint.CheckpointSave(iterator)))
        manager.wait_until_finished()
    expected = [next(iterator) for _ in range(4)]

    fresh = make_train_iterator(scene, pixels, _config(), 0, 1)
    next(fresh)  # a fresh iterator somewhere else in the stream
    with ocp.CheckpointManager(tmp_path / "ckpt") as manager:
        manager.restore(5, args=ocp.args.Composite(data=grain.checkpoint.CheckpointRestore(fresh)))
    for want in expected:
        got = next(fresh)
        for key in want:
            np.testing.assert_array_equal(got[key], want[key])


def test_batch_size_must_divide_by_process_count(scene_and_pixels):
    scene, pixels = scene_and_pixels
    with pytest.raises(RaynerfError, match="divisible"):
        make_train_iterator(scene, pixels, _config(255), 0, 2)
