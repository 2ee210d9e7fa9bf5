"""raynerf: Mip-NeRF 360 in JAX/Flax, trained from one CPU to a TPU pod slice with Ray."""

__version__ = "0.1.0"
