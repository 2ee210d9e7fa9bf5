"""The ray batch every part of raynerf passes around."""

from __future__ import annotations

from collections.abc import Mapping

import flax.struct
import jax.numpy as jnp
import numpy as np

# Each field of Rays and its last dimension.
RAY_WIDTHS = {"origins": 3, "directions": 3, "viewdirs": 3, "radii": 1, "near": 1, "far": 1}
RAY_FIELDS = tuple(RAY_WIDTHS)


@flax.struct.dataclass
class Rays:
    """A batch of camera rays in the normalised scene frame.

    Attributes (any leading batch shape ``...``):
      origins: [..., 3] camera centre.
      directions: [..., 3] un-normalised direction; a point at distance ``t`` is
        ``origins + t * directions`` (``directions`` has unit depth along the optical
        axis, so ``t`` is depth).
      viewdirs: [..., 3] unit-length ``directions``.
      radii: [..., 1] cone radius at ``t = 1``: 2 / sqrt(12) times the spacing of
        neighbouring pixels' directions.
      near, far: [..., 1] the ray's distance bounds.
    """

    origins: jnp.ndarray
    directions: jnp.ndarray
    viewdirs: jnp.ndarray
    radii: jnp.ndarray
    near: jnp.ndarray
    far: jnp.ndarray

    @classmethod
    def from_batch(cls, batch: Mapping[str, np.ndarray]) -> Rays:
        """Picks the ray fields out of a data-pipeline batch (a dict of arrays)."""
        return cls(**{name: batch[name] for name in RAY_FIELDS})

    def reshape(self, *shape: int) -> Rays:
        """Every field reshaped to ``shape + (last dim,)``."""
        return Rays(**{n: getattr(self, n).reshape(*shape, getattr(self, n).shape[-1]) for n in RAY_FIELDS})
