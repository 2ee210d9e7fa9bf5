"""The histogram each level resamples from: max-dilated, renormalised, trimmed and
annealed as multinerf does, checked against a dense-grid max filter integrated over the
reference's intervals (annealing acts per interval, so the cut is part of the result)."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.ndimage

from raynerf.config import load_config
from raynerf.model import stepfun
from raynerf.model.mipnerf360 import dilate_histogram

GRID_STEP = 1e-5
GRID = np.arange(0.0, 1.0 + GRID_STEP / 2, GRID_STEP)  # cell edges (the pdf is 0 outside [0, 1])


def _config(dilation, padding=0.0, trim=True):
    """A model config whose every level dilates by exactly ``dilation``."""
    overrides = [
        f"model.dilation_bias={dilation}",
        "model.dilation_multiplier=0.0",
        f"model.resample_padding={padding}",
        f"model.trim_dilated_ends={str(trim).lower()}",
    ]
    return load_config("360", overrides).model


def _reference_knots(t, d):
    """The reference's cut of the dilated histogram: the knots, every interval's start
    moved back by d and its end moved on by d, sorted and clipped to [0, 1]."""
    return np.clip(np.sort(np.concatenate([t, t[:-1] - d, t[1:] + d])), 0.0, 1.0)


def _filtered_mass(t, w, d, knots):
    """Mass of the max-filtered pdf of (t, w) over each interval of ``knots``, from a
    dense grid: the pdf sampled at cell centres, scipy's max filter over +-d, cumulated
    and interpolated at the knots."""
    centres = 0.5 * (GRID[1:] + GRID[:-1])
    idx = np.searchsorted(t, centres, side="right") - 1
    inside = (idx >= 0) & (idx < len(w))
    pdf = np.where(inside, (w / np.maximum(np.diff(t), 1e-30))[np.clip(idx, 0, len(w) - 1)], 0.0)
    filtered = scipy.ndimage.maximum_filter1d(pdf, size=2 * int(round(d / GRID_STEP)) + 1, mode="constant")
    cum = np.concatenate([[0.0], np.cumsum(filtered * GRID_STEP)])
    mass = np.diff(np.interp(knots, GRID, cum))
    # Rounding can leak a sliver of a cell into an empty interval; annealing by a small
    # power would blow that up (1e-12 ** 0.2 = 0.004), so slivers count as empty.
    return np.where(mass > 1e-9, mass, 0.0)


def _reference_resampling_cdf(t, w, d, anneal, s, padding=0.0):
    """The resampling CDF at ``s`` as the reference builds it: masses over its intervals,
    normalised over all of them, outermost interval at each end dropped, padded, annealed
    per interval (empty intervals get nothing), normalised, integrated linearly."""
    knots = _reference_knots(t, d)
    mass = _filtered_mass(t, w, d, knots)
    mass = mass / mass.sum()
    knots, mass = knots[1:-1], mass[1:-1]
    annealed = np.where(np.diff(knots) > 0, (mass + padding) ** anneal, 0.0)
    cdf = np.concatenate([[0.0], np.cumsum(annealed / annealed.sum())])
    return np.interp(s, knots, cdf)


@functools.partial(jax.jit, static_argnames=("config",))
def _resampling_histogram(config, t, w, anneal):
    sdist, weights = dilate_histogram(config, 1, t, w)
    logits = stepfun.resample_logits(sdist, weights, anneal, config.resample_padding)
    return sdist, stepfun.integrate_weights(jax.nn.softmax(logits, axis=-1))


_dilated_knots = jax.jit(stepfun.dilated_knots)
_dilate_histogram = jax.jit(dilate_histogram, static_argnums=(0, 1))


def _ours(t, w, d, anneal, s, padding=0.0):
    """raynerf's resampling CDF at ``s``: dilate_histogram, resample_logits, softmax."""
    t, w = jnp.asarray(t, jnp.float32), jnp.asarray(w, jnp.float32)
    sdist, cdf = _resampling_histogram(_config(d, padding), t, w, anneal)
    return np.interp(s, np.asarray(sdist, np.float64), np.asarray(cdf, np.float64))


EXAMPLE_T = np.array([0.0, 0.25, 0.5, 0.75, 1.0])
EXAMPLE_W = np.array([0.1, 0.6, 0.2, 0.1])
EXAMPLE_S = np.array([0.25, 0.5, 0.75])


@pytest.mark.parametrize("anneal, expected", [(0.5, [0.1908, 0.5828, 0.8536]), (1.0, [0.1667, 0.6667, 0.9])])
def test_the_issue_example_matches_the_reference(anneal, expected):
    """t = [0, .25, .5, .75, 1], w = [.1, .6, .2, .1], dilation 0.05 (the figures
    measured with multinerf, issue 18); the 2n + 2 knot cut gave 0.2117 / 0.5772 /
    0.8230 at anneal 0.5."""
    ref = _reference_resampling_cdf(EXAMPLE_T, EXAMPLE_W, 0.05, anneal, EXAMPLE_S)
    np.testing.assert_allclose(ref, expected, atol=6e-5)  # the dense-grid reference itself
    np.testing.assert_allclose(_ours(EXAMPLE_T, EXAMPLE_W, 0.05, anneal, EXAMPLE_S), expected, atol=6e-5)


def _random_histogram(rng, n):
    """Knots [n + 1] inside [0, 1] (sometimes spanning it, with a zero-width interval
    and near-coincident knots) and weights [n] summing to 1, some zero."""
    ends = np.array([0.0, 1.0]) if rng.uniform() < 0.5 else np.sort(rng.uniform(0.0, 1.0, 2))
    inner = np.sort(rng.uniform(ends[0], ends[1], n - 1))
    t = np.concatenate([[ends[0]], inner, [ends[1]]])
    t[n // 2] = t[n // 2 + 1]  # a zero-width interval
    t = np.round(t / GRID_STEP) * GRID_STEP  # knots on the grid: the reference is exact there
    w = rng.uniform(0.05, 1.0, n) * (rng.uniform(size=n) > 0.3) * (np.diff(t) > 0)
    w[np.argmax(np.diff(t))] += 0.1
    return t, w / w.sum()


@pytest.mark.parametrize("anneal", [0.2, 0.5, 1.0])
def test_random_histograms_resample_like_the_reference(anneal):
    rng = np.random.default_rng(18)
    s = np.linspace(0.0, 1.0, 401)
    for trial in range(8):
        t, w = _random_histogram(rng, [2, 5, 11][trial % 3])
        d = float(rng.choice([0.0025, 0.01, 0.05, 0.2]))
        ref = _reference_resampling_cdf(t, w, d, anneal, s)
        np.testing.assert_allclose(_ours(t, w, d, anneal, s), ref, atol=2e-4, err_msg=f"trial {trial}")


def test_padding_is_added_after_renormalising_the_untrimmed_histogram():
    """A histogram away from the domain's ends, so the trimmed outer intervals hold
    mass: the padding must see weights normalised with that mass included."""
    t, w, d, padding = np.array([0.2, 0.3, 0.6, 0.8]), np.array([0.5, 0.2, 0.3]), 0.05, 0.05
    s = np.linspace(0.0, 1.0, 201)
    ref = _reference_resampling_cdf(t, w, d, 0.5, s, padding=padding)
    np.testing.assert_allclose(_ours(t, w, d, 0.5, s, padding=padding), ref, atol=1e-4)
    # Renormalising after the trim instead would give a measurably different CDF.
    knots = _reference_knots(t, d)
    mass = _filtered_mass(t, w, d, knots)[1:-1]
    annealed = (mass / mass.sum() + padding) ** 0.5 * (np.diff(knots[1:-1]) > 0)
    other = np.interp(s, knots[1:-1], np.concatenate([[0.0], np.cumsum(annealed / annealed.sum())]))
    assert np.max(np.abs(other - ref)) > 1e-3


def test_dilated_knots_are_the_sorted_union_of_three_lists():
    rng = np.random.default_rng(3)
    for trial in range(30):
        n = [1, 2, 7, 19][trial % 4]
        t = np.sort(rng.choice(np.linspace(0, 1, 9), n + 1) if trial % 5 < 2 else rng.uniform(0, 1, n + 1))
        d = float(rng.choice([0.0, 0.125, 0.03]))  # 0 and grid-aligned: many ties
        knots, starts_seen, ends_seen = map(np.asarray, _dilated_knots(jnp.asarray(t, jnp.float32), d))
        t32 = t.astype(np.float32)
        starts, ends = t32[:-1] - np.float32(d), t32[1:] + np.float32(d)
        assert knots.shape == (3 * n + 1,)
        np.testing.assert_array_equal(knots, np.sort(np.concatenate([t32, starts, ends])))
        # Counts of moved starts / ends at or before each position, on positive-width gaps.
        gap = np.diff(knots) > 0
        for seen, moved in ((starts_seen, starts), (ends_seen, ends)):
            np.testing.assert_array_equal(seen[:-1][gap], np.sum(moved[None] <= knots[:-1, None], -1)[gap])


def test_dilated_knots_batch_and_model_shapes():
    rng = np.random.default_rng(4)
    t = np.sort(rng.uniform(0, 1, (2, 3, 9)), axis=-1)
    knots, _, _ = _dilated_knots(jnp.asarray(t, jnp.float32), 0.02)
    assert knots.shape == (2, 3, 25)
    np.testing.assert_array_equal(knots[1, 2], _dilated_knots(jnp.asarray(t[1, 2], jnp.float32), 0.02)[0])
    w = jnp.full((2, 3, 8), 1 / 8)
    sdist, weights = _dilate_histogram(_config(0.02), 1, jnp.asarray(t, jnp.float32), w)
    assert sdist.shape == (2, 3, 23) and weights.shape == (2, 3, 22)  # 3n + 1 knots, one trimmed each end
    sdist, weights = _dilate_histogram(_config(0.02, trim=False), 1, jnp.asarray(t, jnp.float32), w)
    assert sdist.shape == (2, 3, 25) and weights.shape == (2, 3, 24)
    np.testing.assert_allclose(np.sum(weights, -1), 1.0, rtol=1e-5)
