"""Progress display for long work: a tqdm bar with rate and ETA, or nothing."""

from __future__ import annotations

from typing import IO

from tqdm.auto import tqdm


class ProgressBar:
    """A training progress bar: steps, rays/s, ETA, and the latest loss and PSNR.

    ``file``, ``mininterval`` and ``miniters`` go to tqdm (defaults: stderr, redraws at
    most every 0.1 s and every few steps as tqdm sees fit).
    """

    def __init__(
        self,
        total: int,
        initial: int = 0,
        desc: str = "train",
        unit: str = "step",
        enabled: bool = True,
        file: IO[str] | None = None,
        mininterval: float = 0.1,
        miniters: int | None = None,
    ):
        self._bar = tqdm(
            total=total,
            initial=initial,
            desc=desc,
            unit=unit,
            dynamic_ncols=True,
            disable=not enabled,
            smoothing=0.1,
            file=file,
            mininterval=mininterval,
            miniters=miniters,
        )

    def update(self, step: int, metrics: dict | None = None) -> None:
        """Shows ``step`` with ``metrics``, the metrics of that same step.

        The postfix is set before the count moves: moving the count is what redraws
        the bar, so setting it after would show each step with the previous step's loss.
        """
        if metrics:
            self._bar.set_postfix(
                loss=f"{metrics['loss']:.4f}",
                psnr=f"{metrics['psnr']:.2f}",
                rays_s=f"{metrics['rays_per_sec']:.0f}",
                refresh=False,
            )
        if step != self._bar.n:
            self._bar.update(step - self._bar.n)
        elif metrics:
            self._bar.refresh()

    def write(self, message: str) -> None:
        self._bar.write(message)

    def close(self) -> None:
        self._bar.close()
