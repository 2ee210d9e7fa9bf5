"""TPU pod slices by their Google Cloud accelerator-type names, and what JAX sees on them.

A slice name such as ``v4-32`` or ``v5litepod-16`` maps to the topology that
``jax.experimental.topologies.get_topology_desc`` understands (``v4:2x2x4``,
``v5e:4x4``), the chip configuration and chips-per-host bounds that make its devices
look like what ``jax.devices()`` reports on the real slice, and the chip's published
figures (HBM capacity and bandwidth, peak bf16 matmul rate) used for the fit check
and the roofline estimate in :mod:`raynerf.distributed.plan`.

How the name's number counts: for v2, v3, v4 and v5p it is TensorCores (two per
chip), for v5e (``v5litepod``) and v6e it is chips. JAX shows one device per chip on
v4 and v5p (the two cores run as one "megacore"), one per core on v2 and v3 (so 8 per
4-chip host), and one per chip on v5e and v6e (one core each). Multi-host slices have
4 chips per host; single-host v5e and v6e slices hold up to 8.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import math
import os

from raynerf.errors import RaynerfError

GIB = 1024**3


@dataclasses.dataclass(frozen=True)
class Generation:
    """One TPU generation's naming and published per-chip figures."""

    prefix: str  # accelerator-type prefix on Google Cloud: "v4", "v5litepod"
    topology: str  # jax's topology name prefix: "v4", "v5e"
    device_kind: str  # jax's device_kind on that chip
    chip_config: str | None  # get_topology_desc(chip_config_name=...); None: libtpu's default
    devices_per_chip: int  # devices jax shows per chip
    name_counts_cores: bool  # the name's number counts TensorCores (2 per chip), else chips
    dims: int  # 2-D torus (v2, v3, v5e, v6e) or 3-D (v4, v5p)
    hbm_bytes: int  # per chip
    hbm_bandwidth: float  # bytes/s per chip
    peak_bf16: float  # matmul FLOP/s per chip in bfloat16


# Published figures: Cloud TPU system-architecture pages and, for v2-v4, Jouppi et al.,
# "TPU v4", ISCA 2023, Table 2. HBM sizes are per chip (v2/v3: two cores share them).
GENERATIONS: dict[str, Generation] = {
    g.prefix: g
    for g in (
        Generation("v2", "v2", "TPU v2", None, 2, True, 2, 16 * GIB, 700e9, 45e12),
        Generation("v3", "v3", "TPU v3", None, 2, True, 2, 32 * GIB, 900e9, 123e12),
        Generation("v4", "v4", "TPU v4", "megacore", 1, True, 3, 32 * GIB, 1200e9, 275e12),
        Generation("v5litepod", "v5e", "TPU v5 lite", None, 1, False, 2, 16 * GIB, 819e9, 197e12),
        Generation("v5p", "v5p", "TPU v5", None, 1, True, 3, 95 * GIB, 2765e9, 459e12),
        Generation("v6e", "v6e", "TPU v6 lite", None, 1, False, 2, 32 * GIB, 1640e9, 918e12),
    )
}

# Chips -> torus shape, as Google Cloud lays slices out.
SHAPES_2D = {1: (1, 1), 4: (2, 2), 8: (2, 4), 16: (4, 4), 32: (4, 8), 64: (8, 8), 128: (8, 16), 256: (16, 16)}
SHAPES_3D = {
    4: (2, 2, 1),
    8: (2, 2, 2),
    16: (2, 2, 4),
    32: (2, 4, 4),
    64: (4, 4, 4),
    128: (4, 4, 8),
    256: (4, 8, 8),
    512: (8, 8, 8),
}
MULTI_HOST_CHIPS = 4  # chips per host on every multi-host slice
SINGLE_HOST_MAX = {"v2": 4, "v3": 4, "v4": 4, "v5litepod": 8, "v5p": 4, "v6e": 8}
# v2/v3 pods as offered: -8 (one host) up to -512 (2-D torus over 256 chips).
NAMED_SIZES = {
    "v2": (8, 32, 128, 256, 512),
    "v3": (8, 32, 64, 128, 256, 512),
    "v4": (8, 16, 32, 64, 128, 256, 512, 1024),
    "v5p": (8, 16, 32, 64, 128, 256, 512, 1024),
    "v5litepod": (1, 4, 8, 16, 32, 64, 128, 256),
    "v6e": (1, 4, 8, 16, 32, 64, 128, 256),
}


@dataclasses.dataclass(frozen=True)
class Slice:
    """A pod slice: its name, generation and layout as jax sees it."""

    name: str  # "v4-32"
    generation: Generation
    shape: tuple[int, ...]  # chips along each torus axis
    chips_per_host: int

    @property
    def chips(self) -> int:
        return math.prod(self.shape)

    @property
    def hosts(self) -> int:
        return self.chips // self.chips_per_host

    @property
    def devices(self) -> int:
        return self.chips * self.generation.devices_per_chip

    @property
    def topology_name(self) -> str:
        """The name ``get_topology_desc`` takes: ``v4:2x2x4``."""
        return f"{self.generation.topology}:{'x'.join(map(str, self.shape))}"

    def host_bounds(self) -> tuple[int, int, int]:
        """Chips per host along each axis (``chips_per_host_bounds``)."""
        if self.chips_per_host == self.chips:
            return tuple(self.shape) + (1,) * (3 - len(self.shape))  # type: ignore[return-value]
        return (2, 2, 1)

    def topology_kwargs(self) -> dict:
        kwargs: dict = {"chips_per_host_bounds": list(self.host_bounds())}
        if self.generation.chip_config:
            kwargs["chip_config_name"] = self.generation.chip_config
        return kwargs


def known_slices() -> list[str]:
    return [f"{prefix}-{size}" for prefix, sizes in NAMED_SIZES.items() for size in sizes]


def parse_slice(name: str) -> Slice:
    """``v4-32`` -> its :class:`Slice`; a name not in :func:`known_slices` raises
    :class:`RaynerfError` listing the known ones."""
    prefix, _, count = name.strip().lower().rpartition("-")
    if prefix not in NAMED_SIZES or not count.isdigit() or int(count) not in NAMED_SIZES[prefix]:
        raise RaynerfError(f"unknown TPU slice {name!r}; known slices: {', '.join(known_slices())}")
    gen = GENERATIONS[prefix]
    chips = int(count) // 2 if gen.name_counts_cores else int(count)
    shape = (SHAPES_3D if gen.dims == 3 else SHAPES_2D)[chips]
    per_host = chips if chips <= SINGLE_HOST_MAX[prefix] else MULTI_HOST_CHIPS
    return Slice(f"{prefix}-{count}", gen, shape, per_host)


def libtpu_installed() -> bool:
    """Whether XLA:TPU's compiler (the ``libtpu`` wheel, or $TPU_LIBRARY_PATH) is here."""
    return importlib.util.find_spec("libtpu") is not None or bool(os.environ.get("TPU_LIBRARY_PATH"))


LIBTPU_MISSING = "compiling for a TPU needs libtpu, which is not installed: pip install 'raynerf[tpu]'"


def topology_devices(tpu_slice: Slice) -> list:
    """The slice's devices, deviceless (no TPU needed): libtpu describes the topology
    and XLA:TPU compiles for it. Raises :class:`RaynerfError` when libtpu is missing.

    Describing a topology claims no chip, so libtpu's one-process-per-machine lock is
    waived (``ALLOW_MULTIPLE_LIBTPU_LOAD``) unless the caller set it.
    """
    if not libtpu_installed():
        raise RaynerfError(LIBTPU_MISSING)
    os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")
    from jax.experimental import topologies

    try:
        topology = topologies.get_topology_desc(
            topology_name=tpu_slice.topology_name, platform="tpu", **tpu_slice.topology_kwargs()
        )
    except (RuntimeError, NotImplementedError) as exc:
        if "not installed" in str(exc) or "not implemented" in str(exc):
            raise RaynerfError(LIBTPU_MISSING) from None
        raise
    return list(topology.devices)
