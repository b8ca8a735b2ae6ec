"""Data-path speeds: phantom generation, synthetic/cache reads and augmentation.

Run: ``.venv/bin/python benchmarks/phantom_speed.py [--repeats N]``; prints a table of
median milliseconds per call. Goal (issue 2): a 30x55x55 phantom well under 100 ms.
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path
from typing import Callable

import numpy as np

from mecca_rllib.data import augment, make_phantom, open_source
from mecca_rllib.data.cache import build_cache
from mecca_rllib.data.phantoms import write_phantom_folder


def _median_ms(fn: Callable[[int], object], repeats: int) -> float:
    fn(0)  # warm-up
    times = []
    for i in range(repeats):
        start = time.perf_counter()
        fn(i)
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()
    rows = []
    for shape in [(30, 55, 55), (8, 16, 16)]:
        rows.append((f"make_phantom {shape}", _median_ms(lambda i: make_phantom(shape, i), args.repeats)))
    image, label = make_phantom((30, 55, 55), 0)
    rows.append(("augment (30,55,55)", _median_ms(
        lambda i: augment(image, label, np.random.default_rng(i)), args.repeats)))
    rows.append(("augment small_angle (30,55,55)", _median_ms(
        lambda i: augment(image, label, np.random.default_rng(i), small_angle=True), args.repeats)))
    with tempfile.TemporaryDirectory() as tmp:
        folder = write_phantom_folder(Path(tmp) / "raw", 4, (40, 80, 80), seed=0)
        start = time.perf_counter()
        cache = build_cache(folder, Path(tmp) / "cache", (30, 55, 55), variants=4)
        rows.append(("build_cache per case (40,80,80)->(30,55,55), 4 variants",
                     (time.perf_counter() - start) * 1000 / 4))
        source = open_source(cache, (30, 55, 55), split="all")
        rows.append(("cache get (4 variants/case)", _median_ms(
            lambda i: source.get(i % 4, np.random.default_rng(i)), args.repeats)))
    print(f"{'operation':<58} {'median ms':>10}")
    for name, ms in rows:
        print(f"{name:<58} {ms:>10.1f}")


if __name__ == "__main__":
    main()
