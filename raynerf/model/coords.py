"""Coordinate maps of Mip-NeRF 360: the s-space distance warp, the scene contraction
(for points and, linearised, for Gaussians), and the positional encodings.

Everything here is pure ``jax.numpy``, jit-compatible, and written so that gradients
stay finite at the awkward inputs the renderer produces (the origin, points a million
units away, zero-width intervals).
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

from raynerf.model.stepfun import on_tpu

Array = jnp.ndarray


def construct_ray_warps(near: Array, far: Array) -> tuple[Callable[[Array], Array], Callable[[Array], Array]]:
    """The pair of maps between metric distance ``t`` and normalised distance ``s``.

    With ``g(x) = 1 / x``, ``s = (g(t) - g(near)) / (g(far) - g(near))``: ``s = 0`` at
    ``near``, ``s = 1`` at ``far``, and evenly spaced ``s`` are evenly spaced in
    disparity. ``near`` and ``far`` (positive, e.g. ``[..., 1]``) broadcast against
    the distances (e.g. ``[..., n + 1]``).

    Returns:
      ``(t_to_s, s_to_t)``, each elementwise and the other's inverse.
    """
    g_near = 1.0 / near
    g_far = 1.0 / far
    span = g_far - g_near

    def t_to_s(t: Array) -> Array:
        return (1.0 / t - g_near) / span

    def s_to_t(s: Array) -> Array:
        # Interpolating g as (1 - s) g(near) + s g(far) is exact at s = 1.
        return 1.0 / ((1.0 - s) * g_near + s * g_far)

    return t_to_s, s_to_t


def _radial_parts(x: Array) -> tuple[Array, Array, Array]:
    """Overflow- and gradient-safe radial decomposition of points ``x`` [..., 3].

    Returns:
      outside: [...] bool, ``|x| > 1``.
      radius: [...] ``|x|`` where outside, 1 elsewhere (never 0, never inf for finite x).
      unit: [..., 3] ``x / |x|`` where outside, ``x`` elsewhere.
    """
    # Dividing by the largest component (a constant for autodiff) before squaring keeps
    # |x|^2 from overflowing for huge points; the value and the gradient are unchanged.
    scale = jax.lax.stop_gradient(jnp.maximum(jnp.max(jnp.abs(x), axis=-1, keepdims=True), 1.0))
    y = x / scale
    y_sq = jnp.sum(y * y, axis=-1)
    outside = (scale[..., 0] > 1.0) | (y_sq > 1.0)
    # Double-where: the branch that is not selected never sees |y| = 0.
    y_norm = jnp.sqrt(jnp.where(outside, y_sq, 1.0))
    radius = jnp.where(outside, scale[..., 0] * y_norm, 1.0)
    unit = jnp.where(outside[..., None], y / y_norm[..., None], x)
    return outside, radius, unit


def contract(x: Array) -> Array:
    """Mip-NeRF 360 scene contraction of points ``x`` [..., 3] -> [..., 3].

    Identity inside the unit ball; outside, ``(2 - 1 / |x|) x / |x|``, so all of space
    lands inside the ball of radius 2.
    """
    outside, radius, unit = _radial_parts(x)
    return jnp.where(outside[..., None], (2.0 - 1.0 / radius)[..., None] * unit, x)


def contract_jacobian(x: Array) -> Array:
    """Closed-form Jacobian of :func:`contract` at ``x`` [..., 3] -> [..., 3, 3].

    Outside the unit ball, with ``u = x / r``: the radial direction is scaled by
    ``1 / r^2`` and the two tangential ones by ``(2r - 1) / r^2``:
    ``J = (2r - 1) / r^2 (I - u u^T) + 1 / r^2 u u^T``. Inside, ``J = I``.
    """
    outside, radius, unit = _radial_parts(x)
    inv_r2 = 1.0 / (radius * radius)
    tangential = (2.0 * radius - 1.0) * inv_r2
    eye = jnp.eye(3, dtype=x.dtype)
    uut = unit[..., :, None] * unit[..., None, :]
    jac = tangential[..., None, None] * (eye - uut) + inv_r2[..., None, None] * uut
    return jnp.where(outside[..., None, None], jac, eye)


def uncontract(y: Array) -> Array:
    """The inverse of :func:`contract`: contracted points ``y``
    [..., 3] with ``|y| < 2`` -> metric points [..., 3]. Inside the unit ball the
    identity; outside, ``y / |y| / (2 - |y|)``."""
    norm = jnp.linalg.norm(y, axis=-1, keepdims=True)
    outside = norm > 1.0
    safe = jnp.where(outside, norm, 1.0)  # never 0, never 2 where it is not used
    return jnp.where(outside, y / (safe * (2.0 - safe)), y)


def contract_jacobian_inverse(x: Array) -> Array:
    """The inverse of the contraction's Jacobian at metric points ``x`` [..., 3] ->
    [..., 3, 3]: outside the unit ball, with ``r = |x|`` and ``u = x / r``, the radial
    direction is stretched by ``r^2`` and the tangential ones by ``r^2 / (2r - 1)``
    (the reciprocals of the Jacobian's factors); inside, the identity."""
    norm = jnp.linalg.norm(x, axis=-1)
    outside = norm > 1.0
    r = jnp.where(outside, norm, 1.0)
    u = x / r[..., None]
    uut = u[..., :, None] * u[..., None, :]
    eye = jnp.eye(3, dtype=x.dtype)
    r2 = (r * r)[..., None, None]
    inverse = r2 / (2.0 * r[..., None, None] - 1.0) * (eye - uut) + r2 * uut
    return jnp.where(outside[..., None, None], inverse, eye)


def contract_gaussians(means: Array, covs: Array) -> tuple[Array, Array]:
    """Pushes Gaussians through :func:`contract` by linearisation at their means.

    Args:
      means: [..., 3].
      covs: [..., 3, 3].

    Returns:
      ``(contract(means), J covs J^T)``, shapes [..., 3] and [..., 3, 3], where ``J`` is
      the Jacobian of the contraction at each mean.
    """
    jac = contract_jacobian(means)
    return contract(means), on_tpu(_sandwich_by_products, _sandwich_by_matmuls, jac, covs)


def _sandwich_by_matmuls(jac: Array, covs: Array) -> Array:
    """``J C J^T`` for jac, covs [..., 3, 3] -> [..., 3, 3], as two batched matmuls."""
    return jnp.matmul(jnp.matmul(jac, covs), jnp.swapaxes(jac, -1, -2))


def _sandwich_by_products(jac: Array, covs: Array) -> Array:
    """``J C J^T`` for jac, covs [..., 3, 3] -> [..., 3, 3], as broadcast products summed
    over the 3-wide axes: one elementwise fusion. XLA:TPU runs each batched 3 x 3
    matmul as a matmul of its own whose operands and result are padded to (8, 128)
    tiles, about 40 times the bytes of the values (``benchmarks/hbm_breakdown.py``),
    and in float32 at the default precision as one bfloat16 pass; these are exact
    float32 products."""
    jc = jnp.sum(jac[..., :, :, None] * covs[..., None, :, :], axis=-2)  # sum_j J_ij C_jl
    return jnp.sum(jc[..., :, None, :] * jac[..., None, :, :], axis=-1)  # sum_l (JC)_il J_kl


def _octave_scales(min_deg: int, max_deg: int, dtype) -> Array:
    """``2^l`` for l in [min_deg, max_deg): [num_octaves], exact in float32."""
    return 2.0 ** jnp.arange(min_deg, max_deg, dtype=dtype)


def lift_gaussians(
    means: Array, covs: Array, basis: Array, min_deg: int, max_deg: int
) -> tuple[Array, Array]:
    """Projects Gaussians onto a set of directions at every octave of the encoding.

    Column ``l * K + k`` holds the projection onto direction ``b_k`` scaled by
    ``2^l`` (l counted from ``min_deg``): mean ``2^l <mean, b_k>`` and variance
    ``4^l b_k^T cov b_k``. Scaling the [3, K] basis (by powers of two, exactly) instead
    of the projections makes each of the two outputs one matmul whose result is
    already laid out for the encoding, with no broadcast copies. With
    :func:`damped_sin_cos` it gives the integrated positional encoding.

    Args:
      means: [..., 3].
      covs: [..., 3, 3].
      basis: [3, K], one direction per column.

    Returns:
      ``(lifted_means, lifted_vars)``, each [..., (max_deg - min_deg) * K].
    """
    basis = jnp.asarray(basis, dtype=means.dtype)
    num_dirs = basis.shape[-1]
    scales = _octave_scales(min_deg, max_deg, means.dtype)
    scaled_basis = (basis[:, None, :] * scales[:, None]).reshape(3, -1)
    # diag(B^T C B)_k = sum_ij C_ij B_ik B_jk: one [..., 9] x [9, L * K] product
    # instead of a batch of tiny 3x3 matmuls.
    outer = (basis[:, None, :] * basis[None, :, :]).reshape(9, 1, num_dirs)
    scaled_outer = (outer * (scales * scales)[:, None]).reshape(9, -1)
    lifted_means = on_tpu(_project_by_products, jnp.matmul, means, scaled_basis)
    lifted_vars = on_tpu(_project_by_products, jnp.matmul, covs.reshape(covs.shape[:-2] + (9,)), scaled_outer)
    return lifted_means, lifted_vars


def _project_by_products(x: Array, basis: Array) -> Array:
    """``x @ basis`` for x [..., d] (d small) and basis [d, k] -> [..., k], as ``d``
    broadcast products summed: an elementwise fusion that XLA:TPU joins with the
    encoding's sines and cosines. As a matmul, its [..., d] operand is padded to 128
    lanes and the [..., k] product written out and read back; in float32 at the default
    precision it is also one bfloat16 pass, which for the scaled means (up to 2^11
    times the position) misplaces the phase of the encoding's finest octaves."""
    out = x[..., 0, None] * basis[0]
    for i in range(1, x.shape[-1]):
        out = out + x[..., i, None] * basis[i]
    return out


def damped_sin_cos(scaled_means: Array, scaled_vars: Array) -> tuple[Array, Array]:
    """``E[sin(X)]`` and ``E[cos(X)]`` for ``X ~ N(m, v)``: ``sin(m) exp(-v / 2)`` and
    the cosine alike, elementwise over [..., n] (negative ``v`` counts as 0).

    On the output of :func:`lift_gaussians` these are the two halves of the integrated
    positional encoding (Mip-NeRF 360): all sines (octave-major), then all cosines.
    """
    damping = jnp.exp(-0.5 * jnp.maximum(scaled_vars, 0.0))
    sin, cos = sin_cos(scaled_means)
    return sin * damping, cos * damping


def integrated_pos_enc(
    means: Array, covs: Array, basis: Array, min_deg: int, max_deg: int
) -> tuple[Array, Array]:
    """The integrated positional encoding of Gaussians (Mip-NeRF 360): the expected
    sine and cosine of each Gaussian's projection onto every direction of ``basis`` at
    every octave ``2^l``, l in [min_deg, max_deg).

    Args:
      means: [..., 3] (already contracted).
      covs: [..., 3, 3].
      basis: [3, K], one direction per column.

    Returns:
      ``(sines, cosines)``, each [..., (max_deg - min_deg) * K], column ``l * K + k``
      for octave l (from ``min_deg``) and direction k. The encoding is their
      concatenation; the MLP takes the two halves as separate inputs.
    """
    return damped_sin_cos(*lift_gaussians(means, covs, basis, min_deg, max_deg))


# pi split into three parts (Cody-Waite): the first two have few enough mantissa bits
# (8 and 11) that ``m * part`` is exact in float32 for every half-integer multiple
# |m| < 2^11, i.e. |x| < 6400, far beyond the contracted scene (|x| <= 2) times 2^11.
_PI_PARTS = (3.140625, 9.67502593994140625e-4, 1.5099579909783764e-07)
# An odd polynomial r + r^3 p(r^2) for sin(r) on |r| <= pi/2 (+2e-3), fitted for the
# smallest largest error (Lawson's iteration in float64): within 5e-9 of sin there.
_SIN_COEFFS = (-0.16666656732559204, 0.008333015255630016, -0.0001980644155992195, 2.5996685053542024e-06)


def _sin_half_turns(x: Array, shift: float) -> Array:
    """``sin(x + shift * pi)`` for ``shift`` in {0, 0.5}: ``x + shift pi = k pi + r``
    with ``|r| <= pi/2``, so the value is ``(-1)^k sin(r)``: one range reduction and
    one polynomial, no quadrant table."""
    k = jnp.round(x * (1.0 / jnp.pi) + shift)
    m = k - shift  # exact: a half-integer
    r = x - m * _PI_PARTS[0] - m * _PI_PARTS[1] - m * _PI_PARTS[2]
    r2 = r * r
    c3, c5, c7, c9 = _SIN_COEFFS
    sin_r = r + r * r2 * (c3 + r2 * (c5 + r2 * (c7 + r2 * c9)))
    odd = k - 2.0 * jnp.floor(0.5 * k)  # k mod 2
    return sin_r * (1.0 - 2.0 * odd)


def sin_cos(x: Array) -> tuple[Array, Array]:
    """``(sin(x), cos(x))``, each from its own range reduction by pi and one polynomial.

    ``cos(x) = sin(x + pi / 2)``, with the half turn added to the multiple of pi that
    is subtracted (exactly), not to ``x``. XLA:CPU calls a scalar library routine for
    ``jnp.sin``; these multiply-adds vectorise and fuse with their neighbours, and a
    fusion that needs only the sine (or the cosine) evaluates only its own polynomial.
    Within 1.5e-7 of the exact values for float32 |x| <= 4096.
    """
    return _sin_half_turns(x, 0.0), _sin_half_turns(x, 0.5)


def pos_enc(x: Array, min_deg: int, max_deg: int, append_identity: bool = True) -> Array:
    """Plain sinusoidal encoding of ``x`` [..., D].

    Returns:
      [..., D * (1 + 2 * (max_deg - min_deg))] with the identity (``x`` itself first),
      else [..., 2 * D * (max_deg - min_deg)]: sines (octave-major), then cosines.
    """
    scales = _octave_scales(min_deg, max_deg, x.dtype)
    sines, cosines = sin_cos((x[..., None, :] * scales[:, None]).reshape(x.shape[:-1] + (-1,)))
    encoded = jnp.concatenate([sines, cosines], axis=-1)
    if append_identity:
        return jnp.concatenate([x, encoded], axis=-1)
    return encoded
