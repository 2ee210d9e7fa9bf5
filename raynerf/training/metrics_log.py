"""Where training metrics go: ``metrics.jsonl`` and TensorBoard, from process 0 only.

``metrics.jsonl`` is strict JSON, one object per line: a non-finite value (the loss of
a skipped step) is written as ``null``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path

import numpy as np


class MetricsLogger:
    """Appends one JSON object per logged step and mirrors scalars to TensorBoard."""

    def __init__(self, workdir: Path, enabled: bool = True):
        self.enabled = enabled
        self._writer = None
        self.path = Path(workdir) / "metrics.jsonl"
        if enabled:
            from tensorboardX import SummaryWriter

            self._writer = SummaryWriter(str(Path(workdir) / "tensorboard"))

    def log(self, step: int, metrics: Mapping[str, float]) -> None:
        if not self.enabled:
            return
        record = {"step": int(step), **{k: _plain(v) for k, v in metrics.items()}}
        with open(self.path, "a") as f:
            f.write(json.dumps(record, allow_nan=False) + "\n")
        for name, value in record.items():
            if name != "step" and isinstance(value, (int, float)):
                self._writer.add_scalar(f"train/{name}", value, step)
        self._writer.flush()

    def image(self, step: int, tag: str, image: np.ndarray) -> None:
        """image: [H, W, 3] float in [0, 1] or [H, W] gray."""
        if self.enabled:
            self._writer.add_image(
                tag, np.clip(image, 0, 1), step, dataformats="HWC" if image.ndim == 3 else "HW"
            )
            self._writer.flush()

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()


def _plain(value):
    """A JSON-ready value: numbers and lists of numbers, non-finite floats as None."""
    if isinstance(value, str):
        return value
    value = np.asarray(value)
    if value.size == 1:
        item = value.item()
        return None if isinstance(item, float) and not math.isfinite(item) else item
    return [_plain(v) for v in value]


def read_metrics(workdir: Path) -> list[dict]:
    """The records of ``metrics.jsonl`` (empty if there is none)."""
    path = Path(workdir) / "metrics.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def truncate_metrics(workdir: Path, last_step: int) -> None:
    """Drops records after ``last_step`` (a resume replays those steps)."""
    path = Path(workdir) / "metrics.jsonl"
    if path.exists():
        kept = [r for r in read_metrics(workdir) if r.get("step", 0) <= last_step or r.get("event")]
        path.write_text("".join(json.dumps(r) + "\n" for r in kept))
