"""Piecewise-constant functions along rays (histograms of weights over intervals) and
everything the proposal sampler and its losses do with them.

A step function is a pair ``(t, y)``: sorted knots ``t`` [..., n + 1] and one value per
interval ``y`` [..., n]. Values are either *weights* (mass per interval, summing to 1
for a distribution) or *pdf* values (mass per unit length); :func:`weight_to_pdf` and
:func:`pdf_to_weight` convert between the two.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp

Array = jnp.ndarray
_EPS = float(jnp.finfo(jnp.float32).eps)
_TINY_WIDTH = _EPS**2  # widths at or below this count as zero
_TINY = float(jnp.finfo(jnp.float32).tiny)


def _safe_div(num: Array, den: Array, ok: Array) -> Array:
    """``num / den`` where ``ok``, else 0, with finite gradients either way."""
    return jnp.where(ok, num / jnp.where(ok, den, 1.0), 0.0)


def on_tpu(tpu: Callable[..., Array], other: Callable[..., Array], *args: Array) -> Array:
    """``tpu(*args)`` in a program lowered for a TPU, ``other(*args)`` anywhere else
    (the choice is made when the program is lowered, so only one of them is compiled).

    XLA:TPU runs a gather along a row of a few dozen elements as one small transfer
    per gathered element: its cost analysis charges about 8.7 kB of memory traffic for
    each, thousands of times what the element weighs (8.8 kB on average over the 360
    train step, where they made 80% of its traffic: ``docs/accelerator_speed.md``). On
    a TPU the gathers here become comparisons of every query with every element of
    its row, fused into one reduction that reads each row once (and :mod:`coords`
    writes its tiny matmuls as products); the CPU and GPU keep their programs.
    """
    return jax.lax.platform_dependent(*args, tpu=tpu, default=other)


def _take(x: Array, idx: Array) -> Array:
    """``take_along_axis(x, idx, axis=-1)`` for ``x`` [..., k] and int ``idx`` [..., m]
    in ``[0, k)`` (batch dims equal) -> [..., m]; on a TPU without a gather (see
    :func:`on_tpu`): each query selects its element from the whole row and sums the
    row, in which every other element is an exact zero, so the value is unchanged."""
    return on_tpu(_select, lambda x, idx: jnp.take_along_axis(x, idx, axis=-1), x, idx)


def _select(x: Array, idx: Array) -> Array:
    """``take_along_axis(x, idx, axis=-1)`` without a gather: x [..., k], idx [..., m]
    -> [..., m] (an index outside ``[0, k)`` gives 0)."""
    hit = idx[..., :, None] == jnp.arange(x.shape[-1], dtype=idx.dtype)
    return jnp.sum(jnp.where(hit, x[..., None, :], jnp.zeros((), x.dtype)), axis=-1)


def searchsorted(a: Array, v: Array) -> tuple[Array, Array]:
    """Brackets queries in a sorted array.

    Args:
      a: [..., n] sorted (ties allowed).
      v: [..., m] queries; batch dims broadcast against ``a``'s.

    Returns:
      ``(idx_lo, idx_hi)``, int [..., m]: ``idx_lo`` is the last index with
      ``a[idx_lo] <= v`` and ``idx_hi`` the first with ``v < a[idx_hi]``, each clamped
      to ``[0, n - 1]`` (so below ``a[0]`` both are 0, at or above ``a[-1]`` both are
      ``n - 1``). Equivalent to ``numpy.searchsorted(a, v, side="right")`` (minus one
      for ``idx_lo``), clamped.
    """
    # A count of knots <= v; XLA fuses the compare into the reduction, so the
    # [..., m, n] comparison is not materialised, and it batches over any leading dims.
    count = jnp.sum(v[..., :, None] >= a[..., None, :], axis=-1, dtype=jnp.int32)
    n = a.shape[-1]
    return jnp.maximum(count - 1, 0), jnp.minimum(count, n - 1)


def _interp(x: Array, xp: Array, fp: Array) -> Array:
    """Batched ``numpy.interp``: x [..., m] (or [m]), xp sorted [..., k], fp [..., k]
    -> [..., m], constant beyond the ends."""
    batch = jnp.broadcast_shapes(xp.shape[:-1], fp.shape[:-1], x.shape[:-1])
    x = jnp.broadcast_to(x, batch + x.shape[-1:])
    xp = jnp.broadcast_to(xp, batch + xp.shape[-1:])
    fp = jnp.broadcast_to(fp, batch + fp.shape[-1:])
    idx_lo, idx_hi = searchsorted(xp, x)
    x_lo, x_hi = _take(xp, idx_lo), _take(xp, idx_hi)
    f_lo, f_hi = _take(fp, idx_lo), _take(fp, idx_hi)
    span = x_hi - x_lo
    frac = jnp.clip(_safe_div(x - x_lo, span, span > 0), 0.0, 1.0)
    return f_lo + frac * (f_hi - f_lo)


def integrate_weights(w: Array) -> Array:
    """CDF of weights w [..., n] (assumed to sum to 1) at the knots: [..., n + 1],
    exactly 0 first and 1 last, never above 1."""
    inner = jnp.minimum(1.0, jnp.cumsum(w[..., :-1], axis=-1))
    zeros = jnp.zeros(w.shape[:-1] + (1,), w.dtype)
    return jnp.concatenate([zeros, inner, jnp.ones_like(zeros)], axis=-1)


def invert_cdf(u: Array, t: Array, w_logits: Array) -> Array:
    """Inverse CDF of the step function with weights ``softmax(w_logits)``.

    Args:
      u: [..., m] quantiles in [0, 1].
      t: [..., n + 1] knots.
      w_logits: [..., n].

    Returns:
      [..., m] distances, by linear interpolation of the (piecewise-linear) CDF.
    """
    cdf = integrate_weights(jax.nn.softmax(w_logits, axis=-1))
    return _interp(u, cdf, t)


def sample(
    jitter: Array | None,
    t: Array,
    w_logits: Array,
    num_samples: int,
    deterministic_center: bool = False,
    eps: float = _EPS,
) -> Array:
    """Stratified samples from the step function ``(t, softmax(w_logits))``.

    The unit interval of quantiles is cut into ``num_samples`` strata.
    ``jitter`` [..., 1] or [..., num_samples], uniform in [0, 1), gives each stratum a
    random offset: one per ray shared by all its strata, or one per stratum. Without
    jitter the quantiles are fixed: the strata centres (``deterministic_center``) or
    ``num_samples`` evenly spaced values from 0 to ``1 - eps``.

    Returns:
      [..., num_samples] sorted samples inside ``[t[..., 0], t[..., -1]]``.
    """
    batch = jnp.broadcast_shapes(t.shape[:-1], w_logits.shape[:-1])
    strata = jnp.arange(num_samples, dtype=t.dtype)
    if jitter is None:
        if deterministic_center:
            u = (strata + 0.5) / num_samples
        else:
            u = jnp.linspace(0.0, 1.0 - eps, num_samples, dtype=t.dtype)
        u = jnp.broadcast_to(u, batch + (num_samples,))
    else:
        if jitter.shape[-1] not in (1, num_samples):
            raise ValueError(f"jitter has {jitter.shape[-1]} values per ray; need 1 or {num_samples}")
        u = jnp.minimum((strata + jitter.astype(t.dtype)) / num_samples, 1.0 - eps)
    return invert_cdf(u, t, w_logits)


def sample_intervals(
    jitter: Array | None,
    t: Array,
    w_logits: Array,
    num_samples: int,
    domain: tuple[float, float] = (0.0, 1.0),
) -> Array:
    """Intervals around stratified samples of the step function ``(t, softmax(w_logits))``.

    Draws ``num_samples`` points with :func:`sample` (strata centres without
    ``jitter``), puts knots halfway
    between neighbours and extends the first and last half-intervals outward by the
    same amount.

    Returns:
      [..., num_samples + 1] sorted knots clipped to ``domain``.
    """
    if num_samples < 2:
        raise ValueError(f"sample_intervals needs num_samples >= 2, got {num_samples}")
    centers = sample(jitter, t, w_logits, num_samples, deterministic_center=True)
    mids = 0.5 * (centers[..., 1:] + centers[..., :-1])
    first = jnp.minimum(2.0 * centers[..., :1] - mids[..., :1], mids[..., :1])
    last = jnp.maximum(2.0 * centers[..., -1:] - mids[..., -1:], mids[..., -1:])
    return jnp.clip(jnp.concatenate([first, mids, last], axis=-1), *domain)


def weight_to_pdf(t: Array, w: Array) -> Array:
    """Weights [..., n] -> pdf values [..., n] (mass / width; 0 on zero-width intervals)."""
    width = jnp.diff(t, axis=-1)
    return _safe_div(w, width, width > _TINY_WIDTH)


def pdf_to_weight(t: Array, p: Array) -> Array:
    """Pdf values [..., n] -> weights [..., n] (value * width)."""
    return p * jnp.diff(t, axis=-1)


def _searchsorted(a: Array, v: Array, side: str) -> Array:
    """``numpy.searchsorted(a, v, side)`` row by row: ``a`` [..., k] sorted, ``v``
    [..., m] with the same batch dims -> int [..., m]. On the CPU a binary search (log k
    steps), not a comparison with every element; on a TPU, where each step of a binary
    search is a gather (see :func:`on_tpu`), a count of the elements before each
    query: the same index for a sorted row, in one fused comparison and reduction."""

    def binary(a: Array, v: Array) -> Array:
        search = jax.vmap(lambda row, query: jnp.searchsorted(row, query, side=side, method="scan_unrolled"))
        found = search(a.reshape(-1, a.shape[-1]), v.reshape(-1, v.shape[-1]))
        return found.reshape(a.shape[:-1] + v.shape[-1:]).astype(jnp.int32)

    if side not in ("left", "right"):
        raise ValueError(f"side must be 'left' or 'right', got {side!r}")
    return on_tpu(lambda a, v: _count_before(a, v, side), binary, a, v)


def _count_before(a: Array, v: Array, side: str) -> Array:
    """Elements of each row ``a`` [..., k] below each query ``v`` [..., m] (``side="left"``)
    or at or below it (``"right"``) -> int [..., m]: ``numpy.searchsorted`` for sorted
    rows, by comparing every query with every element."""
    before = a[..., None, :] < v[..., :, None] if side == "left" else a[..., None, :] <= v[..., :, None]
    return jnp.sum(before, axis=-1, dtype=jnp.int32)


def _range_max(y: Array, start: Array, stop: Array) -> Array:
    """``max(y[..., start:stop])`` per query, 0 for an empty range.

    Args:
      y: [..., n] values (>= 0); start, stop: int [..., m] with ``0 <= start`` and
        ``stop <= n``.

    Returns:
      [..., m]. On the CPU a sparse table: level ``l`` holds the maxima of ``2^l``
      consecutive values, and a range is covered by two (overlapping) blocks of one
      level, so each query is two gathers instead of a scan over all ``n`` values. On
      a TPU (no gathers, see :func:`on_tpu`) the maximum over the whole row with the
      values outside the range masked to 0, in one fused reduction.
    """
    return on_tpu(_masked_max, _sparse_table_max, y, start, stop)


def _masked_max(y: Array, start: Array, stop: Array) -> Array:
    """:func:`_range_max` without a gather: the row's maximum over ``[start, stop)``
    with the values outside masked to 0 (y [..., n] >= 0; start, stop [..., m])."""
    j = jnp.arange(y.shape[-1], dtype=start.dtype)
    inside = (start[..., :, None] <= j) & (j < stop[..., :, None])
    return jnp.max(jnp.where(inside, y[..., None, :], jnp.zeros((), y.dtype)), axis=-1)


def _sparse_table_max(y: Array, start: Array, stop: Array) -> Array:
    """:func:`_range_max` by a sparse table and two gathers per query."""
    n = y.shape[-1]
    levels = [y]
    while (2 ** len(levels)) <= n:
        prev, shift = levels[-1], 2 ** (len(levels) - 1)
        shifted = jnp.concatenate([prev[..., shift:], jnp.zeros_like(prev[..., :shift])], axis=-1)
        levels.append(jnp.maximum(prev, shifted))
    table = jnp.concatenate(levels, axis=-1)  # [..., len(levels) * n]
    length = jnp.maximum(stop - start, 1)
    level = sum((length >= 2**k).astype(jnp.int32) for k in range(1, len(levels)))  # floor(log2)
    first = level * n + jnp.clip(start, 0, n - 1)
    second = level * n + jnp.clip(stop - 2**level, 0, n - 1)
    best = jnp.maximum(
        jnp.take_along_axis(table, first, axis=-1), jnp.take_along_axis(table, second, axis=-1)
    )
    return jnp.where(stop > start, best, 0.0)


def dilated_knots(t: Array, dilation: float | Array) -> tuple[Array, Array, Array]:
    """The knots of a step function with knots ``t`` [..., n + 1] max-dilated by
    ``dilation``: ``t`` itself, every interval's start moved back (``t[:-1] - dilation``)
    and every interval's end moved on (``t[1:] + dilation``), merged in order.

    The three lists are sorted already, so an element's place in the merge is its index
    in its own list plus how many elements of the other two come before it
    (:func:`_searchsorted`; ties put starts first, then knots, then ends), and the
    merge is one scatter (on a TPU one permutation by comparisons, :func:`_permute`),
    not a sort. The same counts say, at each place, how many moved starts and
    ends lie at or before it.

    Returns:
      ``(knots, starts_seen, ends_seen)``, each [..., 3n + 1]: the sorted knots, and
      for each knot how many moved starts and moved ends lie at or before its place.
      Input interval ``j`` covers the merged interval that begins at place ``k`` iff
      ``ends_seen[k] <= j < starts_seen[k]``.
    """
    starts, ends = t[..., :-1] - dilation, t[..., 1:] + dilation
    n = starts.shape[-1]
    ends_before_start = _searchsorted(ends, starts, "left")
    starts_to_knot = _searchsorted(starts, t, "right")
    ends_before_knot = _searchsorted(ends, t, "left")
    starts_to_end = _searchsorted(starts, ends, "right")
    index = jnp.arange(n + 1, dtype=jnp.int32)
    place = jnp.concatenate(
        [
            index[:-1] + _searchsorted(t, starts, "left") + ends_before_start,
            index + starts_to_knot + ends_before_knot,
            index[:-1] + _searchsorted(t, ends, "right") + starts_to_end,
        ],
        axis=-1,
    )
    own_count = jnp.broadcast_to(index[1:], starts.shape)  # a start (end) sees itself and those before it
    starts_seen = jnp.concatenate([own_count, starts_to_knot, starts_to_end], axis=-1)
    ends_seen = jnp.concatenate([ends_before_start, ends_before_knot, own_count], axis=-1)
    # One scatter moves each element with its counts (small integers, exact in float).
    payload = jnp.stack(
        [jnp.concatenate([starts, t, ends], axis=-1), starts_seen.astype(t.dtype), ends_seen.astype(t.dtype)],
        axis=-1,
    )
    total = 3 * n + 1

    def scatter(payload: Array, place: Array) -> Array:
        def one(rows: Array, where: Array) -> Array:
            return jnp.zeros((total, 3), rows.dtype).at[where].set(rows, unique_indices=True)

        moved = jax.vmap(one)(payload.reshape(-1, total, 3), place.reshape(-1, total))
        return moved.reshape(payload.shape)

    def permuted(payload: Array, place: Array) -> Array:
        return jnp.stack([_permute(payload[..., i], place) for i in range(3)], axis=-1)

    merged = on_tpu(permuted, scatter, payload, place)
    return merged[..., 0], merged[..., 1].astype(jnp.int32), merged[..., 2].astype(jnp.int32)


def _permute(values: Array, place: Array) -> Array:
    """``out[..., place[..., j]] = values[..., j]`` for ``place`` int [..., s] a
    permutation of ``[0, s)`` and ``values`` [..., s] -> [..., s], without a scatter:
    each place picks its value out of the whole row (the other terms exact zeros)."""
    hit = place[..., None, :] == jnp.arange(place.shape[-1], dtype=place.dtype)[:, None]
    return jnp.sum(jnp.where(hit, values[..., None, :], jnp.zeros((), values.dtype)), axis=-1)


def max_dilate(
    t: Array, w: Array, dilation: float | Array, domain: tuple[float, float] = (-jnp.inf, jnp.inf)
) -> tuple[Array, Array]:
    """Max-filter of a non-negative step function over a window of +-``dilation``.

    The result at ``x`` is the largest value the input takes within
    ``[x - dilation, x + dilation]`` (0 outside the input's support). It is again a step
    function; its knots are those of :func:`dilated_knots` (the input's knots, each
    interval's start moved back and its end moved on, as multinerf cuts it). The cut
    matters beyond the function itself: annealing (:func:`resample_logits`) acts per
    interval.

    Args:
      t: [..., n + 1] knots; w: [..., n] values (pdf values, >= 0).

    Returns:
      ``(t', w')``: [..., 3n + 1] knots clipped to ``domain`` and [..., 3n] values.
    """
    knots, starts_seen, ends_seen = dilated_knots(t, dilation)
    w_out = _range_max(w, ends_seen[..., :-1], starts_seen[..., :-1])
    return jnp.clip(knots, *domain), w_out


def max_dilate_weights(
    t: Array,
    w: Array,
    dilation: float | Array,
    domain: tuple[float, float] = (-jnp.inf, jnp.inf),
    renormalize: bool = True,
) -> tuple[Array, Array]:
    """:func:`max_dilate` applied to the pdf of weights ``w`` [..., n], back as weights.

    Returns:
      ``(t', w')``: [..., 3n + 1] knots and [..., 3n] weights (summing to 1 if
      ``renormalize``).
    """
    t_out, p_out = max_dilate(t, weight_to_pdf(t, w), dilation, domain)
    w_out = pdf_to_weight(t_out, p_out)
    if renormalize:
        w_out = w_out / jnp.maximum(jnp.sum(w_out, axis=-1, keepdims=True), _TINY)
    return t_out, w_out


def resample_logits(t: Array, w: Array, anneal: float | Array, padding: float) -> Array:
    """Sampling logits [..., n] for weights ``w`` [..., n]: ``anneal * log(w + padding)``
    on intervals of positive width, ``-inf`` on empty ones."""
    positive = jnp.diff(t, axis=-1) > 0
    safe_w = jnp.where(positive, w + padding, 1.0)
    return jnp.where(positive, anneal * jnp.log(safe_w), -jnp.inf)


def schlick_bias(x: Array | float, slope: float) -> Array:
    """Schlick's bias curve on [0, 1]: ``slope x / ((slope - 1) x + 1)``."""
    return (slope * x) / ((slope - 1.0) * x + 1.0)


def inner_outer(t0: Array, t1: Array, y1: Array) -> tuple[Array, Array]:
    """Bounds on the mass of the step function ``(t1, y1)`` (weights) over the
    intervals of ``t0``.

    Args:
      t0: [..., n0 + 1] query knots.
      t1: [..., n1 + 1], y1: [..., n1] (y1 >= 0).

    Returns:
      ``(inner, outer)``, each [..., n0]: per query interval, the summed ``y1`` of the
      intervals lying inside it and of those touching it.
    """
    batch = jnp.broadcast_shapes(t0.shape[:-1], t1.shape[:-1], y1.shape[:-1])
    t0 = jnp.broadcast_to(t0, batch + t0.shape[-1:])
    t1 = jnp.broadcast_to(t1, batch + t1.shape[-1:])
    y1 = jnp.broadcast_to(y1, batch + y1.shape[-1:])
    cum = jnp.concatenate([jnp.zeros(batch + (1,), y1.dtype), jnp.cumsum(y1, axis=-1)], axis=-1)
    idx_lo, idx_hi = searchsorted(t1, t0)
    cum_lo, cum_hi = _take(cum, idx_lo), _take(cum, idx_hi)
    outer = cum_hi[..., 1:] - cum_lo[..., :-1]
    inner = jnp.where(idx_hi[..., :-1] <= idx_lo[..., 1:], cum_lo[..., 1:] - cum_hi[..., :-1], 0.0)
    return inner, outer


def lossfun_outer(t: Array, w: Array, t_env: Array, w_env: Array, eps: float = _EPS) -> Array:
    """Penalty [..., n] on weights ``w`` over ``t`` that exceed the outer measure of
    the envelope ``(t_env, w_env)``: ``max(0, w - outer)^2 / (w + eps)``."""
    _, outer = inner_outer(t, t_env, w_env)
    return jnp.maximum(0.0, w - outer) ** 2 / (w + eps)


def lossfun_distortion(t: Array, w: Array) -> Array:
    """Distortion of the step function (t [..., n + 1], weights w [..., n]) -> [...].

    The exact value of ``integral integral |s - s'| w(s) w(s') ds ds'`` for the pdf
    ``w(s) = w_i / width_i``: pairs of distinct intervals contribute
    ``w_i w_j |m_i - m_j|`` (``m`` the midpoints) and each interval with itself
    ``w_i^2 width_i / 3``. The pair sum is evaluated in O(n) with running sums, since
    ``m`` is sorted: ``2 sum_i w_i sum_{j<i} w_j (m_i - m_j)``.
    """
    mids = 0.5 * (t[..., 1:] + t[..., :-1])
    widths = jnp.diff(t, axis=-1)
    zeros = jnp.zeros(w.shape[:-1] + (1,), w.dtype)

    def exclusive_cumsum(x: Array) -> Array:
        return jnp.concatenate([zeros, jnp.cumsum(x[..., :-1], axis=-1)], axis=-1)

    w_before = exclusive_cumsum(w)
    wm_before = exclusive_cumsum(w * mids)
    inter = 2.0 * jnp.sum(w * (mids * w_before - wm_before), axis=-1)
    intra = jnp.sum(w**2 * widths, axis=-1) / 3.0
    return inter + intra


def weighted_percentile(t: Array, w: Array, ps: Sequence[float] | Array) -> Array:
    """Percentiles ``ps`` (0..100) of the distribution with weights ``w`` [..., n]
    (normalised here) over knots ``t`` [..., n + 1] -> [..., len(ps)]."""
    w = w / jnp.maximum(jnp.sum(w, axis=-1, keepdims=True), _TINY)
    cdf = integrate_weights(w)
    return _interp(jnp.asarray(ps, dtype=t.dtype) / 100.0, cdf, t)
