"""The Mip-NeRF 360 MLPs: one configurable network serves as PropMLP and NerfMLP.

Input: Gaussians (means [..., n, 3], covariances [..., n, 3, 3]) in the scene
frame. They are contracted, projected onto the icosahedron basis and encoded
with integrated positional encoding before the first layer.
"""

from __future__ import annotations

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp

from raynerf.config import ModelConfig
from raynerf.model import coords
from raynerf.model.basis import icosahedron_basis


class ConcatDense(nn.Module):
    """``Dense(concatenate(parts, axis=-1))`` computed without building that concatenation.

    ``parts`` [..., w_i] (leading shapes broadcast against each other) each meet their
    own rows of one kernel [sum(w_i), features]; the products are summed. The same
    parameters (``kernel``, ``bias``) and the same values as ``nn.Dense`` on the
    concatenated input, but nothing of width ``sum(w_i)`` is built, the gradient
    reaches only the parts that need one (XLA computed the input gradient for all
    ``sum(w_i)`` columns and then dropped the re-fed encoding's), and a part that is
    constant along an axis (the view direction, per ray) is multiplied once, not once
    per sample. Each product runs as one 2-D matmul over the part's flattened leading
    axes: XLA's gradient of a dot over a 3-D input contracts two batch axes and runs
    about 2x slower.

    Each product beyond the first writes and sums a [..., features] array, so
    neighbouring parts of the same leading shape whose widths add up to at most
    ``features`` are concatenated first, which moves less memory (the encoding's two
    252-wide halves before a 1024-wide layer; not before a 64-wide one).
    """

    features: int
    dtype: str = "float32"

    @nn.compact
    def __call__(self, *parts: jnp.ndarray) -> jnp.ndarray:
        """parts [..., w_i] -> [..., features] (the parts' leading shapes broadcast)."""
        dtype = jnp.dtype(self.dtype)
        total = sum(part.shape[-1] for part in parts)
        kernel = self.param("kernel", jax.nn.initializers.he_uniform(), (total, self.features), jnp.float32)
        bias = self.param("bias", jax.nn.initializers.zeros, (self.features,), jnp.float32)
        out = None
        offset = 0
        for group in _narrow_groups(parts, self.features):
            part = group[0] if len(group) == 1 else jnp.concatenate(group, axis=-1)
            width = part.shape[-1]
            rows = kernel[offset : offset + width].astype(dtype)
            offset += width
            flat = part.reshape(-1, width).astype(dtype)
            product = jnp.matmul(flat, rows).reshape(part.shape[:-1] + (self.features,))
            out = product if out is None else out + product
        # The bias after the products, in the order nn.Dense adds it.
        return out + bias.astype(dtype)


def _narrow_groups(parts: tuple[jnp.ndarray, ...], features: int) -> list[list[jnp.ndarray]]:
    """``parts`` in order, split into runs of the same leading shape whose widths add
    up to at most ``features`` (a part wider than that stands alone)."""
    groups: list[list[jnp.ndarray]] = []
    for part in parts:
        last = groups[-1] if groups else None
        if (
            last is not None
            and last[0].shape[:-1] == part.shape[:-1]
            and sum(p.shape[-1] for p in last) + part.shape[-1] <= features
        ):
            last.append(part)
        else:
            groups.append([part])
    return groups


class MLP(nn.Module):
    """A density MLP with an optional view-dependent colour branch.

    ``skip_layer``: the encoded input is concatenated to the activations after
    every layer ``i`` (0-based) with ``i % skip_layer == 0`` and ``i > 0``.
    With ``bottleneck_width == 0`` the network predicts density only.
    """

    depth: int
    width: int
    skip_layer: int = 4
    bottleneck_width: int = 0
    viewdir_depth: int = 1
    viewdir_width: int = 128
    min_deg_point: int = 0
    max_deg_point: int = 12
    deg_view: int = 4
    basis_subdivisions: int = 2
    density_bias: float = -1.0
    rgb_padding: float = 0.001
    dtype: str = "float32"

    @nn.compact
    def __call__(
        self, means: jnp.ndarray, covs: jnp.ndarray, viewdirs: jnp.ndarray | None = None
    ) -> tuple[jnp.ndarray, jnp.ndarray | None]:
        """means [..., n, 3], covs [..., n, 3, 3], viewdirs [..., 3] ->
        density [..., n] and rgb [..., n, 3] (None for a density-only network)."""
        dense = functools.partial(ConcatDense, dtype=self.dtype)
        means, covs = coords.contract_gaussians(means, covs)
        basis = jnp.asarray(icosahedron_basis(self.basis_subdivisions), means.dtype)
        # The integrated positional encoding, as its two halves (all sines, then all
        # cosines): the layers take it as parts of one input, and ConcatDense joins
        # them only before a layer wide enough for that to move less memory.
        encoding = coords.integrated_pos_enc(means, covs, basis, self.min_deg_point, self.max_deg_point)
        sample_shape = means.shape[:-1]
        # The layers see [rays * samples, features] matrices (see ConcatDense).
        inputs = tuple(half.reshape(-1, half.shape[-1]) for half in encoding)
        x = inputs  # the next layer's input, as parts of its concatenation
        for i in range(self.depth):
            x = (nn.relu(dense(self.width, name=f"layer_{i}")(*x)),)
            if i % self.skip_layer == 0 and i > 0:
                x = x + inputs
        raw_density = dense(1, name="density")(*x)[..., 0].astype(jnp.float32)
        density = jax.nn.softplus(raw_density + self.density_bias).reshape(sample_shape)
        if self.bottleneck_width == 0:
            return density, None

        bottleneck = dense(self.bottleneck_width, name="bottleneck")(*x)
        # The view encoding is one row per ray: its product is broadcast over samples.
        view_enc = coords.pos_enc(viewdirs, 0, self.deg_view, append_identity=True)
        x = (bottleneck.reshape(sample_shape + bottleneck.shape[-1:]), view_enc[..., None, :])
        for i in range(self.viewdir_depth):
            x = (nn.relu(dense(self.viewdir_width, name=f"view_layer_{i}")(*x)),)
        raw_rgb = dense(3, name="rgb")(*x).astype(jnp.float32)
        rgb = jax.nn.sigmoid(raw_rgb) * (1 + 2 * self.rgb_padding) - self.rgb_padding
        return density, rgb.reshape(sample_shape + (3,))


def prop_mlp(config: ModelConfig, **kwargs) -> MLP:
    """The proposal network (density only), shared by every proposal level."""
    return MLP(
        depth=config.prop_net_depth,
        width=config.prop_net_width,
        skip_layer=config.skip_layer,
        bottleneck_width=0,
        **_encoding_kwargs(config),
        **kwargs,
    )


def nerf_mlp(config: ModelConfig, **kwargs) -> MLP:
    """The final-level network: density, then view-dependent colour."""
    return MLP(
        depth=config.nerf_net_depth,
        width=config.nerf_net_width,
        skip_layer=config.skip_layer,
        bottleneck_width=config.bottleneck_width,
        viewdir_depth=config.viewdir_net_depth,
        viewdir_width=config.viewdir_net_width,
        **_encoding_kwargs(config),
        **kwargs,
    )


def _encoding_kwargs(config: ModelConfig) -> dict:
    return dict(
        min_deg_point=config.min_deg_point,
        max_deg_point=config.max_deg_point,
        deg_view=config.deg_view,
        basis_subdivisions=config.basis_subdivisions,
        density_bias=config.density_bias,
        rgb_padding=config.rgb_padding,
        dtype=config.compute_dtype,
    )
