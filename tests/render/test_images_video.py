"""Videos and PNGs decode as written; distance colouring is ordered and robust."""

import imageio.v2 as imageio
import numpy as np
import pytest

from raynerf.render import images, video


def _colour_frames(n, h, w):
    """Smooth moving colour gradients (lossy codecs keep these close)."""
    y, x = np.mgrid[0:h, 0:w]
    frames = []
    for i in range(n):
        r = 0.5 + 0.4 * np.sin(x / w * 2 * np.pi + i * 0.5)
        g = 0.5 + 0.4 * np.cos(y / h * 2 * np.pi - i * 0.3)
        b = np.full((h, w), 0.2 + 0.6 * i / max(n - 1, 1))
        frames.append(images.to_uint8(np.stack([r, g, b], -1)))
    return frames


@pytest.mark.parametrize("size", [(48, 64), (33, 45)])
def test_video_decodes_with_frame_count_size_fps(tmp_path, size):
    h, w = size
    frames = _colour_frames(7, h, w)
    path = tmp_path / "sub" / "color.mp4"
    video.write_video(path, iter(frames), fps=5)
    n, width, height, fps = video.read_video_info(path)
    assert (n, fps) == (7, 5.0)
    assert (width, height) == video.encoded_size(w, h)
    decoded = np.stack(imageio.mimread(path, format="FFMPEG"))
    assert decoded.shape == (7, height, width, 3)
    # Lossy (4:2:0 chroma at these tiny sizes costs a few levels), but close.
    error = np.abs(decoded[:, :h, :w].astype(float) - np.stack(frames).astype(float))
    assert error.mean() < 6.0
    # Frames come back in order: the blue channel ramps up.
    assert np.all(np.diff(decoded[:, :h, :w, 2].mean(axis=(1, 2))) > 0)
    assert [p.name for p in path.parent.iterdir()] == ["color.mp4"]


def test_encoded_size():
    assert video.encoded_size(64, 48) == (64, 48)
    assert video.encoded_size(45, 33) == (46, 34)


def test_interrupted_video_leaves_nothing(tmp_path):
    path = tmp_path / "v.mp4"

    def frames():
        yield from _colour_frames(3, 16, 16)
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        video.write_video(path, frames(), fps=5)
    assert list(tmp_path.iterdir()) == []


def test_interrupted_video_keeps_previous_file(tmp_path):
    path = tmp_path / "v.mp4"
    video.write_video(path, _colour_frames(2, 16, 16), fps=5)
    before = path.read_bytes()
    bad = _colour_frames(2, 16, 16) + [np.zeros((8, 8, 3), np.uint8)]
    with pytest.raises(ValueError, match="frame 2"):
        video.write_video(path, bad, fps=5)
    assert path.read_bytes() == before
    assert list(tmp_path.iterdir()) == [path]


def test_write_png_round_trip(tmp_path):
    image = np.random.default_rng(0).integers(0, 256, size=(9, 11, 3), dtype=np.uint8)
    images.write_png(tmp_path / "a" / "x.png", image)
    np.testing.assert_array_equal(imageio.imread(tmp_path / "a" / "x.png"), image)
    images.write_png(tmp_path / "g.png", np.linspace(0, 1, 20).reshape(4, 5))
    assert imageio.imread(tmp_path / "g.png")[-1, -1] == 255
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "g.png"]


def test_to_uint8_and_acc():
    out = images.to_uint8(np.array([-1.0, 0.0, 0.5, 1.0, 2.0, np.nan]))
    np.testing.assert_array_equal(out, [0, 0, 128, 255, 255, 0])
    acc = images.visualize_acc(np.array([[0.0, 1.0]]))
    assert acc.shape == (1, 2, 3) and acc.dtype == np.uint8
    np.testing.assert_array_equal(acc[0], [[0, 0, 0], [255, 255, 255]])


def _lut_index(rgb):
    """Index of each RGB in the turbo table (exact match)."""
    lut = images._colormap_lut()
    hits = np.all(rgb[..., None, :] == lut, axis=-1)
    assert hits.any(axis=-1).all()
    return hits.argmax(axis=-1)


def test_distance_ramp_is_ordered_on_the_colour_map():
    ramp = np.geomspace(0.5, 50.0, 64)[None, :]
    rgb = images.visualize_distance(ramp, lo=0.5, hi=50.0)
    assert rgb.shape == (1, 64, 3) and rgb.dtype == np.uint8
    index = _lut_index(rgb)[0]
    # Near is the hot end (high index); a log ramp fills the table evenly.
    assert index[0] == 255 and index[-1] == 0
    assert np.all(np.diff(index) < 0)
    np.testing.assert_allclose(index, np.linspace(255, 0, 64), atol=1)


def test_distance_robust_to_outliers_and_non_finite():
    rng = np.random.default_rng(0)
    d = rng.uniform(1.0, 2.0, size=(3, 20, 20))
    d[0, 0, 0], d[0, 0, 1], d[0, 0, 2], d[0, 0, 3], d[0, 0, 4] = np.inf, np.nan, -1.0, 0.0, 1e9
    lo, hi = images.distance_range(d)
    assert 1.0 <= lo < 1.02 and 1.98 < hi <= 2.0
    rgb = images.visualize_distance(d)
    index = _lut_index(rgb)
    assert index[0, 0, 0] == 0 and index[0, 0, 1] == 0 and index[0, 0, 4] == 0  # inf, nan, huge: far
    assert index[0, 0, 2] == 255 and index[0, 0, 3] == 255  # non-positive: near
    # The inliers use the whole table, so one outlier does not wash the colours out.
    inliers = index[1:]
    assert inliers.min() <= 3 and inliers.max() >= 252


def test_distance_range_shared_over_frames():
    near = np.full((4, 4), 1.0)
    far = np.full((4, 4), 10.0)
    both = images.visualize_distance(np.stack([near, far]))
    assert _lut_index(both[0]).min() == 255 and _lut_index(both[1]).max() == 0
    assert not np.array_equal(both[0], both[1])


def test_distance_percentiles_weighted_by_acc():
    d = np.concatenate([np.full(50, 2.0), np.full(50, 100.0)]).reshape(10, 10)
    acc = np.concatenate([np.ones(50), np.zeros(50)]).reshape(10, 10)
    lo, hi = images.distance_range(d, acc)
    assert lo == pytest.approx(2.0) and hi == pytest.approx(2.0)
    rgb = images.visualize_distance(d, acc)
    assert np.all(rgb.reshape(-1, 3)[50:] == 0)  # empty space fades to black
