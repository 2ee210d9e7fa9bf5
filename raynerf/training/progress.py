"""Progress display for long work: a tqdm bar with rate and ETA, or nothing."""

from __future__ import annotations

from tqdm.auto import tqdm


class ProgressBar:
    """A training progress bar: steps, rays/s, ETA, and the latest loss and PSNR."""

    def __init__(
        self, total: int, initial: int = 0, desc: str = "train", unit: str = "step", enabled: bool = True
    ):
        self._bar = tqdm(
            total=total,
            initial=initial,
            desc=desc,
            unit=unit,
            dynamic_ncols=True,
            disable=not enabled,
            smoothing=0.1,
        )

    def update(self, step: int, metrics: dict | None = None) -> None:
        self._bar.update(step - self._bar.n)
        if metrics:
            self._bar.set_postfix(
                loss=f"{metrics['loss']:.4f}",
                psnr=f"{metrics['psnr']:.2f}",
                rays_s=f"{metrics['rays_per_sec']:.0f}",
                refresh=False,
            )

    def write(self, message: str) -> None:
        self._bar.write(message)

    def close(self) -> None:
        self._bar.close()
