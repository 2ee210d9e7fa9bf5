"""Saved render frames that were damaged after being written.

Promise: a frame file that does not read back whole (torn, bit-flipped, emptied) is
never used: it counts as not rendered, so the render redoes it, and it is moved aside to
``*.damaged.npz``, not deleted. Intact frames are kept as they are.
"""

from __future__ import annotations

import numpy as np

from raynerf.render.pool import FRAME_OUTPUTS, FrameStore


def _frame(value: float) -> dict[str, np.ndarray]:
    return {
        name: np.full((6, 5, 3) if name == "rgb" else (6, 5), value, np.float32) for name in FRAME_OUTPUTS
    }


def test_damaged_frames_are_moved_aside_and_counted_as_missing(tmp_path):
    notes = []
    store = FrameStore(tmp_path / "frames", notify=notes.append)
    for index in range(4):
        store.save(index, _frame(index / 4))
    torn, flipped, emptied = store.path(1), store.path(2), store.path(3)
    torn.write_bytes(torn.read_bytes()[: torn.stat().st_size // 2])
    data = bytearray(flipped.read_bytes())
    data[len(data) // 3] ^= 0xFF  # inside the stored arrays: the zip's CRC no longer matches
    flipped.write_bytes(bytes(data))
    emptied.write_bytes(b"")

    assert [store.has(i) for i in range(5)] == [True, False, False, False, False]
    assert len(notes) == 3 and all("moved aside" in n for n in notes), notes
    for path in (torn, flipped, emptied):
        assert not path.exists() and path.with_suffix(".damaged.npz").is_file()
    np.testing.assert_array_equal(store.load(0)["rgb"], _frame(0.0)["rgb"])
    store.save(2, _frame(0.5))  # rendered again
    assert store.has(2) and float(store.load(2)["rgb"][0, 0, 0]) == 0.5
