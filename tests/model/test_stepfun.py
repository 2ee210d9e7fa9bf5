"""Checks of the step-function toolkit against numpy, scipy and brute force on grids."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.ndimage
import scipy.stats

from raynerf.model import stepfun as _stepfun


def _with_jitter(fn, static):
    """``fn(jitter, t, logits, num_samples, ...)`` called as ``(key, t, logits,
    num_samples, single_jitter, ...)``: the jitter is drawn here from ``key``
    (None for deterministic sampling)."""

    def call(key, t, logits, num_samples, single_jitter, **kwargs):
        jitter = None
        if key is not None:
            batch = jnp.broadcast_shapes(t.shape[:-1], logits.shape[:-1])
            jitter = jax.random.uniform(key, batch + (1 if single_jitter else num_samples,))
        return jitted(jitter, t, logits, num_samples=num_samples, **kwargs)

    jitted = jax.jit(fn, static_argnames=("num_samples",) + static)
    return call


class stepfun:  # noqa: N801 - the module's functions, jitted (much faster than eager on CPU)
    searchsorted = jax.jit(_stepfun.searchsorted)
    integrate_weights = jax.jit(_stepfun.integrate_weights)
    invert_cdf = jax.jit(_stepfun.invert_cdf)
    sample = staticmethod(_with_jitter(_stepfun.sample, ("deterministic_center",)))
    sample_intervals = staticmethod(_with_jitter(_stepfun.sample_intervals, ("domain",)))
    weight_to_pdf = jax.jit(_stepfun.weight_to_pdf)
    pdf_to_weight = jax.jit(_stepfun.pdf_to_weight)
    max_dilate = jax.jit(_stepfun.max_dilate, static_argnames=("domain",))
    max_dilate_weights = jax.jit(_stepfun.max_dilate_weights, static_argnames=("domain", "renormalize"))
    resample_logits = jax.jit(_stepfun.resample_logits)
    schlick_bias = staticmethod(_stepfun.schlick_bias)
    inner_outer = jax.jit(_stepfun.inner_outer)
    lossfun_distortion = jax.jit(_stepfun.lossfun_distortion)
    weighted_percentile = jax.jit(_stepfun.weighted_percentile)


def _random_histogram(rng, batch, n, zero_frac=0.0, lo=0.0, hi=1.0):
    """Sorted knots [batch, n + 1] spanning exactly [lo, hi] and weights [batch, n]
    summing to 1 (a fraction of them zero)."""
    inner = np.sort(rng.uniform(lo, hi, size=(batch, n - 1)), axis=-1)
    t = np.concatenate([np.full((batch, 1), lo), inner, np.full((batch, 1), hi)], axis=-1)
    w = rng.uniform(0.1, 1.0, size=(batch, n)) * (rng.uniform(size=(batch, n)) >= zero_frac)
    w[:, rng.integers(n)] += 0.1  # never all zero
    return t, w / w.sum(-1, keepdims=True)


def _step_eval(t, y, x):
    """Reference evaluation of the step function (t [n + 1], y [n]) at x; 0 outside."""
    idx = np.searchsorted(t, x, side="right") - 1
    inside = (idx >= 0) & (idx < len(y))
    return np.where(inside, y[np.clip(idx, 0, len(y) - 1)], 0.0)


def _hist_cdf(t, w):
    """Reference CDF function of a histogram (float64)."""
    cdf = np.concatenate([[0.0], np.cumsum(w)])
    return lambda x: np.interp(x, t, cdf)


# ------------------------------------------------------------------------- searching


def test_searchsorted_matches_numpy_including_ties():
    rng = np.random.default_rng(0)
    a = np.sort(rng.integers(0, 12, size=(20, 15)), axis=-1).astype(np.float32)  # many ties
    v = rng.integers(-2, 14, size=(20, 30)).astype(np.float32)  # hits knots exactly, and beyond
    v[:, :5] += rng.uniform(0, 1, size=(20, 5)).astype(np.float32)
    idx_lo, idx_hi = stepfun.searchsorted(jnp.asarray(a), jnp.asarray(v))
    for row in range(a.shape[0]):
        right = np.searchsorted(a[row], v[row], side="right")
        np.testing.assert_array_equal(idx_lo[row], np.clip(right - 1, 0, a.shape[1] - 1))
        np.testing.assert_array_equal(idx_hi[row], np.clip(right, 0, a.shape[1] - 1))
    inside = (v >= a[:, :1]) & (v < a[:, -1:])
    a_lo = np.take_along_axis(a, np.asarray(idx_lo), -1)
    a_hi = np.take_along_axis(a, np.asarray(idx_hi), -1)
    assert np.all((a_lo <= v)[inside]) and np.all((v < a_hi)[inside])


def test_integrate_weights_starts_at_zero_ends_at_one():
    rng = np.random.default_rng(1)
    _, w = _random_histogram(rng, 10, 9)
    w = (w * 1.001).astype(np.float32)  # slightly over-full: the CDF must still stay <= 1
    cdf = np.asarray(stepfun.integrate_weights(jnp.asarray(w)))
    assert cdf.shape == (10, 10)
    np.testing.assert_array_equal(cdf[:, 0], 0.0)
    np.testing.assert_array_equal(cdf[:, -1], 1.0)
    assert np.all(cdf <= 1.0) and np.all(np.diff(cdf, axis=-1) >= 0)
    np.testing.assert_allclose(cdf[:, 1:-1], np.minimum(1, np.cumsum(w, -1)[:, :-1]), rtol=1e-6)


def test_invert_cdf_matches_numpy_interp():
    rng = np.random.default_rng(2)
    t, w = _random_histogram(rng, 6, 8)
    u = rng.uniform(size=(6, 50))
    out = stepfun.invert_cdf(
        jnp.asarray(u, jnp.float32), jnp.asarray(t, jnp.float32), jnp.log(jnp.asarray(w, jnp.float32))
    )
    for row in range(6):
        cdf = np.concatenate([[0], np.cumsum(w[row])])
        np.testing.assert_allclose(out[row], np.interp(u[row], cdf, t[row]), atol=2e-5)


# -------------------------------------------------------------------------- sampling


def test_random_samples_follow_the_histogram_ks():
    rng = np.random.default_rng(3)
    t, w = _random_histogram(rng, 1, 7, zero_frac=0.3)
    num_rays = 4000
    tb = jnp.broadcast_to(jnp.asarray(t, jnp.float32), (num_rays, 8))
    logits = jnp.broadcast_to(jnp.log(jnp.asarray(w, jnp.float32)), (num_rays, 7))
    for single_jitter in (True, False):
        s = stepfun.sample(jax.random.PRNGKey(0), tb, logits, num_samples=1, single_jitter=single_jitter)
        result = scipy.stats.kstest(np.asarray(s[:, 0], np.float64), _hist_cdf(t[0], w[0]))
        assert result.pvalue > 1e-3, result
    # Stratified draws of several samples per ray follow it as well (pooled).
    s = stepfun.sample(jax.random.PRNGKey(1), tb[:500], logits[:500], num_samples=8, single_jitter=False)
    assert scipy.stats.kstest(np.asarray(s, np.float64).ravel(), _hist_cdf(t[0], w[0])).pvalue > 1e-3


def test_stratified_samples_are_within_one_stratum_of_the_cdf():
    rng = np.random.default_rng(4)
    t, w = _random_histogram(rng, 1, 10, zero_frac=0.3)
    n = 400
    s = stepfun.sample(
        jax.random.PRNGKey(2),
        jnp.asarray(t, jnp.float32),
        jnp.log(jnp.asarray(w, jnp.float32)),
        num_samples=n,
        single_jitter=False,
    )
    cdf_at_samples = _hist_cdf(t[0], w[0])(np.asarray(s[0], np.float64))
    # The i-th sample's quantile lies in the i-th stratum [i / n, (i + 1) / n).
    strata = np.arange(n) / n
    assert np.all(cdf_at_samples >= strata - 1e-5) and np.all(cdf_at_samples <= strata + 1 / n + 1e-5)


@pytest.mark.parametrize("key", [None, jax.random.PRNGKey(5)])
def test_samples_sorted_inside_and_off_empty_intervals(key):
    rng = np.random.default_rng(5)
    t, w = _random_histogram(rng, 30, 12, zero_frac=0.4, lo=0.2, hi=3.0)
    t[:, 5] = t[:, 4]  # a zero-width interval
    logits = np.where(w > 0, np.log(np.maximum(w, 1e-30)), -np.inf)
    s = np.asarray(
        stepfun.sample(
            key,
            jnp.asarray(t, jnp.float32),
            jnp.asarray(logits, jnp.float32),
            num_samples=64,
            single_jitter=False,
        )
    )
    assert s.shape == (30, 64)
    assert np.all(np.diff(s, axis=-1) >= 0)
    assert np.all(s >= t[:, :1] - 1e-6) and np.all(s <= t[:, -1:] + 1e-6)
    for row in range(30):  # nothing strictly inside an interval of zero weight
        idx = np.searchsorted(t[row], s[row], side="right") - 1
        strictly_inside = (s[row] > t[row][idx] + 1e-5) & (s[row] < t[row][np.minimum(idx + 1, 12)] - 1e-5)
        assert np.all(w[row][np.clip(idx, 0, 11)][strictly_inside] > 0)


def test_deterministic_sampling_is_repeatable_and_uses_strata_centres():
    rng = np.random.default_rng(6)
    t, w = _random_histogram(rng, 3, 5)
    args = (jnp.asarray(t, jnp.float32), jnp.log(jnp.asarray(w, jnp.float32)))
    a = stepfun.sample(None, *args, num_samples=16, single_jitter=True, deterministic_center=True)
    b = stepfun.sample(None, *args, num_samples=16, single_jitter=False, deterministic_center=True)
    np.testing.assert_array_equal(a, b)
    for row in range(3):
        cdf = np.concatenate([[0], np.cumsum(w[row])])
        np.testing.assert_allclose(a[row], np.interp((np.arange(16) + 0.5) / 16, cdf, t[row]), atol=2e-5)
    ends = stepfun.sample(None, *args, num_samples=16, single_jitter=True)
    np.testing.assert_allclose(ends[:, 0], t[:, 0], atol=1e-6)
    np.testing.assert_allclose(ends[:, -1], t[:, -1], atol=1e-5)


def test_single_jitter_shares_one_offset_per_ray():
    # On the uniform histogram over [0, 1] a sample equals its quantile.
    t = jnp.broadcast_to(jnp.array([0.0, 1.0]), (50, 2))
    logits = jnp.zeros((50, 1))
    n = 10
    strata = np.arange(n) / n
    shared = (
        np.asarray(stepfun.sample(jax.random.PRNGKey(7), t, logits, num_samples=n, single_jitter=True))
        - strata
    )
    own = (
        np.asarray(stepfun.sample(jax.random.PRNGKey(7), t, logits, num_samples=n, single_jitter=False))
        - strata
    )
    for offsets in (shared, own):
        assert np.all(offsets >= -1e-6) and np.all(offsets < 1 / n + 1e-6)
    np.testing.assert_allclose(shared.std(axis=-1), 0.0, atol=1e-6)
    assert shared[:, 0].std() > 0.01  # but different across rays
    assert np.all(own.std(axis=-1) > 1e-4)


@pytest.mark.parametrize("key", [None, jax.random.PRNGKey(8)])
def test_sample_intervals_sorted_in_domain(key):
    rng = np.random.default_rng(8)
    t, w = _random_histogram(rng, 20, 6, zero_frac=0.3)
    logits = np.where(w > 0, np.log(np.maximum(w, 1e-30)), -np.inf)
    knots = np.asarray(
        stepfun.sample_intervals(
            key,
            jnp.asarray(t, jnp.float32),
            jnp.asarray(logits, jnp.float32),
            num_samples=32,
            single_jitter=True,
            domain=(0.0, 1.0),
        )
    )
    assert knots.shape == (20, 33)
    assert np.all(np.diff(knots, axis=-1) >= 0)
    assert np.all((knots >= 0) & (knots <= 1))
    if key is None:  # the test-mode knots are midpoints of the strata-centre samples
        centres = np.asarray(
            stepfun.sample(
                None,
                jnp.asarray(t, jnp.float32),
                jnp.asarray(logits, jnp.float32),
                num_samples=32,
                single_jitter=True,
                deterministic_center=True,
            )
        )
        np.testing.assert_allclose(knots[:, 1:-1], 0.5 * (centres[:, 1:] + centres[:, :-1]), atol=1e-6)
        assert np.all((centres >= knots[:, :-1]) & (centres <= knots[:, 1:]))


def test_sample_intervals_from_the_initial_single_interval():
    knots = stepfun.sample_intervals(
        None, jnp.array([[0.0, 1.0]]), jnp.zeros((1, 1)), num_samples=4, single_jitter=True
    )
    np.testing.assert_allclose(knots, [[0.0, 0.25, 0.5, 0.75, 1.0]], atol=1e-6)


# --------------------------------------------------------------------- pdf / weights


def test_pdf_weight_round_trip_and_zero_width():
    t = jnp.array([0.0, 0.5, 0.5, 2.0])
    w = jnp.array([0.25, 0.5, 0.25])
    p = stepfun.weight_to_pdf(t, w)
    np.testing.assert_allclose(p, [0.5, 0.0, 0.25 / 1.5], rtol=1e-6)
    np.testing.assert_allclose(stepfun.pdf_to_weight(t, p), [0.25, 0.0, 0.25], rtol=1e-6)
    grad = jax.grad(lambda tt: jnp.sum(_stepfun.weight_to_pdf(tt, w)))(t)
    assert np.all(np.isfinite(grad))


# ------------------------------------------------------------------------ dilation


def test_max_dilate_equals_brute_force_max_filter():
    rng = np.random.default_rng(9)
    dilation, domain = 0.03, (0.0, 1.0)
    grid = np.linspace(-0.1, 1.1, 24001)
    step = grid[1] - grid[0]
    half_window = int(round(dilation / step))
    for _ in range(4):
        t, w = _random_histogram(rng, 1, 12, zero_frac=0.3, lo=0.05, hi=0.95)
        t[0, 6] = t[0, 5]  # a zero-width interval
        p = np.asarray(_stepfun.weight_to_pdf(jnp.asarray(t), jnp.asarray(w)))[0]
        t_d, p_d = stepfun.max_dilate(
            jnp.asarray(t[0], jnp.float32), jnp.asarray(p, jnp.float32), dilation, domain=domain
        )
        t_d, p_d = np.asarray(t_d, np.float64), np.asarray(p_d, np.float64)
        assert t_d.shape == (37,) and p_d.shape == (36,)  # 3n + 1 knots
        assert np.all(np.diff(t_d) >= 0) and np.all((t_d >= 0) & (t_d <= 1))
        original = _step_eval(t[0], p, grid)
        brute = scipy.ndimage.maximum_filter1d(original, size=2 * half_window + 1, mode="constant")
        dilated = _step_eval(t_d, p_d, grid)
        # Compare away from the knots, where the grid cannot resolve the exact edges.
        near_knot = (
            np.min(
                np.abs(grid[:, None] - np.concatenate([t_d, t[0] - dilation, t[0] + dilation])[None]), axis=1
            )
            < 3 * step
        )
        inside = (grid >= domain[0]) & (grid < domain[1]) & ~near_knot
        np.testing.assert_allclose(dilated[inside], brute[inside], rtol=1e-5)
        assert np.all(dilated[inside] >= original[inside] * (1 - 1e-6))


def test_max_dilate_weights_is_normalised_and_covers_the_original():
    rng = np.random.default_rng(10)
    t, w = _random_histogram(rng, 8, 16, zero_frac=0.5)
    t_d, w_d = stepfun.max_dilate_weights(
        jnp.asarray(t, jnp.float32), jnp.asarray(w, jnp.float32), 0.01, domain=(0.0, 1.0)
    )
    assert t_d.shape == (8, 49) and w_d.shape == (8, 48)
    np.testing.assert_allclose(np.sum(w_d, -1), 1.0, rtol=1e-5)
    assert np.all(np.asarray(w_d) >= 0)
    # Without renormalisation the dilated histogram bounds the original from above:
    # its measure over every original interval is at least that interval's weight.
    t_d, w_d = stepfun.max_dilate_weights(
        jnp.asarray(t, jnp.float32), jnp.asarray(w, jnp.float32), 0.01, domain=(0.0, 1.0), renormalize=False
    )
    t_d, w_d = np.asarray(t_d, np.float64), np.asarray(w_d, np.float64)
    for row in range(8):
        cdf = np.concatenate([[0], np.cumsum(w_d[row])])
        measure = np.diff(np.interp(t[row], t_d[row], cdf))  # exact for a piecewise-constant pdf
        assert np.all(measure >= w[row] * (1 - 1e-4) - 1e-6)


def test_resample_logits_and_schlick_bias():
    t = jnp.array([0.0, 0.2, 0.2, 0.7, 1.0])
    w = jnp.array([0.3, 0.0, 0.5, 0.2])
    logits = np.asarray(stepfun.resample_logits(t, w, 0.5, 0.01))
    assert logits[1] == -np.inf
    np.testing.assert_allclose(logits[[0, 2, 3]], 0.5 * np.log(np.array([0.31, 0.51, 0.21])), rtol=1e-6)
    x = np.linspace(0, 1, 101)
    b = np.asarray(stepfun.schlick_bias(x, 10.0))
    assert b[0] == 0.0 and abs(b[-1] - 1.0) < 1e-7 and np.all(np.diff(b) > 0)
    np.testing.assert_allclose((stepfun.schlick_bias(1e-6, 10.0) - 0) / 1e-6, 10.0, rtol=1e-4)  # slope at 0
    assert np.all(b >= x)  # the curve lies above the diagonal: it front-loads annealing


# --------------------------------------------------------------------- inner/outer


def test_inner_outer_bound_the_measure():
    rng = np.random.default_rng(11)
    for _ in range(5):
        t0 = np.sort(rng.uniform(0.1, 0.9, size=9))
        t1, y1 = _random_histogram(rng, 1, 14, zero_frac=0.2)
        t1, y1 = t1[0], y1[0]
        inner, outer = (
            np.asarray(a, np.float64)
            for a in stepfun.inner_outer(
                jnp.asarray(t0, jnp.float32), jnp.asarray(t1, jnp.float32), jnp.asarray(y1, jnp.float32)
            )
        )
        # The measure of the step function over each interval, on a fine grid.
        grid = np.linspace(0, 1, 200_001)
        density = _step_eval(t1, y1 / np.diff(t1), 0.5 * (grid[1:] + grid[:-1])) * np.diff(grid)
        cum = np.concatenate([[0], np.cumsum(density)])
        measure = np.diff(np.interp(t0, grid, cum))
        assert np.all(inner <= measure + 1e-4) and np.all(measure <= outer + 1e-4)
        # And they are the sums over the intervals inside / touching each interval.
        for i in range(len(t0) - 1):
            a, b = t0[i], t0[i + 1]
            touching = (t1[1:] > a) & (t1[:-1] < b)
            contained = (t1[:-1] >= a) & (t1[1:] <= b)
            np.testing.assert_allclose(outer[i], y1[touching].sum(), atol=1e-6)
            np.testing.assert_allclose(inner[i], y1[contained].sum(), atol=1e-6)


# ----------------------------------------------------------------------- distortion


def _distortion_pairs(t, w):
    """O(n^2) reference in float64."""
    mids = 0.5 * (t[..., 1:] + t[..., :-1])
    inter = np.sum(
        w[..., :, None] * w[..., None, :] * np.abs(mids[..., :, None] - mids[..., None, :]), axis=(-1, -2)
    )
    return inter + np.sum(w**2 * np.diff(t, axis=-1), -1) / 3


def test_distortion_equals_brute_force_double_integral():
    rng = np.random.default_rng(12)
    cells_per_interval = 500
    for _ in range(3):
        t, w = _random_histogram(rng, 1, 6, zero_frac=0.2)
        t, w = t[0], w[0]
        # A midpoint-rule double integral on a fine grid whose cells are aligned with the
        # knots (so no cell straddles a jump of the pdf).
        grid = np.concatenate(
            [np.linspace(a, b, cells_per_interval, endpoint=False) for a, b in zip(t[:-1], t[1:])] + [t[-1:]]
        )
        centres, ds = 0.5 * (grid[1:] + grid[:-1]), np.diff(grid)
        mass = _step_eval(t, w / np.diff(t), centres) * ds  # w(s) ds per cell
        brute = mass @ np.abs(centres[:, None] - centres[None, :]) @ mass
        closed = float(stepfun.lossfun_distortion(jnp.asarray(t, jnp.float32), jnp.asarray(w, jnp.float32)))
        np.testing.assert_allclose(closed, brute, rtol=2e-3)


def test_distortion_matches_pairwise_form_batched_with_empty_intervals():
    rng = np.random.default_rng(13)
    t, w = _random_histogram(rng, 64, 32, zero_frac=0.3)
    t[:, 10] = t[:, 9]
    w[:, 9] = 0.0
    closed = stepfun.lossfun_distortion(jnp.asarray(t, jnp.float32), jnp.asarray(w, jnp.float32))
    assert closed.shape == (64,)
    np.testing.assert_allclose(closed, _distortion_pairs(t, w), rtol=1e-4, atol=1e-7)
    # A single narrow interval has almost no distortion; two far-apart spikes have |a - b| / 2.
    spikes = stepfun.lossfun_distortion(jnp.array([0.1, 0.1001, 0.9, 0.9001]), jnp.array([0.5, 0.0, 0.5]))
    np.testing.assert_allclose(spikes, 0.5 * 0.5 * 0.8 * 2, rtol=1e-3)


# ---------------------------------------------------------------------- percentiles


def test_weighted_percentile_matches_interpolated_cdf():
    rng = np.random.default_rng(14)
    t, w = _random_histogram(rng, 5, 9, lo=0.2, hi=40.0)
    ps = [0.0, 10.0, 50.0, 73.0, 100.0]
    out = stepfun.weighted_percentile(
        jnp.asarray(t, jnp.float32), jnp.asarray(3.0 * w, jnp.float32), jnp.asarray(ps)
    )
    assert out.shape == (5, 5)
    for row in range(5):
        cdf = np.concatenate([[0], np.cumsum(w[row])])
        np.testing.assert_allclose(out[row], np.interp(np.array(ps) / 100, cdf, t[row]), rtol=1e-4)
