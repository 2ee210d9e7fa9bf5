"""Where training metrics go: ``metrics.jsonl`` and TensorBoard, from process 0 only.

``metrics.jsonl`` is strict JSON, one object per line: a non-finite value (the loss of
a skipped step) is written as ``null``. A line torn by a kill mid-write is dropped
(with a note) when the file is read, and the file is only ever rewritten atomically
(a temporary file renamed over it), so a kill during a rewrite loses nothing.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Mapping
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


def _parse(path: Path) -> tuple[list[dict], int]:
    """(the records of ``path``, the number of lines that are not a JSON object)."""
    records, bad = [], 0
    for line in path.read_text(errors="replace").splitlines():
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError:
            bad += 1
            continue
        if isinstance(record, dict):
            records.append(record)
        else:
            bad += 1
    return records, bad


def read_metrics(workdir: Path, notify: Callable[[str], None] | None = None) -> list[dict]:
    """The records of ``metrics.jsonl`` (empty if there is none). Lines that do not
    parse (the last one torn by a kill) are skipped; ``notify`` is told how many."""
    path = Path(workdir) / "metrics.jsonl"
    if not path.exists():
        return []
    records, bad = _parse(path)
    if bad and notify is not None:
        notify(f"{path}: dropped {bad} unreadable line(s) (cut short by a kill)")
    return records


def truncate_metrics(workdir: Path, last_step: int, notify: Callable[[str], None] | None = None) -> None:
    """Drops records after ``last_step`` (a resume replays those steps) and lines that
    do not parse; the file is replaced atomically, and only when something changes."""
    path = Path(workdir) / "metrics.jsonl"
    if not path.exists():
        return
    records, bad = _parse(path)
    kept = [r for r in records if r.get("step", 0) <= last_step or r.get("event")]
    text = "".join(json.dumps(r) + "\n" for r in kept)
    if len(kept) == len(records) and not bad and path.read_text(errors="replace") == text:
        return
    if bad and notify is not None:
        notify(f"{path}: dropped {bad} unreadable line(s) (cut short by a kill)")
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
