"""Benchmark: rays/s per process of the grain ray pipeline on a real capture.

    python benchmarks/pipeline.py [--scene-dir ../shared/data/bonsai] [--factor 8]
        [--batch 1024 --batch 16384] [--seconds 5] [--processes 1]

Prints one line per batch size. ``measure_pipeline`` (in raynerf.data.pipeline)
is what ``raynerf bench`` calls.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from raynerf.config import Config
from raynerf.data.cache import load_pixels
from raynerf.data.pipeline import measure_pipeline
from raynerf.data.scene import load_scene

DEFAULT_SCENE = Path(__file__).resolve().parents[2] / "shared" / "data" / "bonsai"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scene-dir", type=Path, default=DEFAULT_SCENE)
    parser.add_argument("--factor", type=int, default=8)
    parser.add_argument("--batch", type=int, action="append", help="global batch size (repeatable)")
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument(
        "--processes", type=int, default=1, help="simulated process count (shard size = batch / processes)"
    )
    args = parser.parse_args()
    scene = load_scene(args.scene_dir, args.factor)
    pixels, _ = load_pixels(scene, progress=True)
    print(
        f"{args.scene_dir.name} factor {args.factor}: {len(scene.train_indices)} train images "
        f"of {scene.widths.max()}x{scene.heights.max()}"
    )
    for batch in args.batch or [1024, 16384]:
        config = Config().replace({"train": {"batch_size": batch}})
        rate = measure_pipeline(scene, pixels, config, args.seconds, 0, args.processes)
        print(f"global batch {batch:6d}, {args.processes} process(es): {rate:12,.0f} rays/s per process")


if __name__ == "__main__":
    main()
