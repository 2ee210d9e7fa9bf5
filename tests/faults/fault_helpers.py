"""Assertions shared by the fault tests."""

from __future__ import annotations

import jax
import numpy as np


def assert_same_params(params, expected) -> None:
    for a, b in zip(jax.tree.leaves(params), expected, strict=True):
        np.testing.assert_allclose(np.asarray(a), b, rtol=1e-5, atol=1e-7)


def one_error_line(output: str) -> str:
    """The single ``Error:`` line of a failed command's output (and no traceback)."""
    assert "Traceback" not in output, output
    lines = [line for line in output.splitlines() if line.startswith("Error:")]
    assert len(lines) == 1, output
    return lines[0]
