"""Preprocessed-dataset cache: one compressed ``.npz`` per case plus ``manifest.json``.

Each case file holds ``K`` preprocessed variants (different random crop margins,
MECCA.md §6): ``image`` float32 ``(K, D, H, W)``, ``label`` uint8 ``(K, D, H, W)``,
``spacing`` float ``(K, 3)`` mm and ``crop`` int ``(K, 3, 2)`` (crop box in the case's
``(D, H, W)`` grid). Reading a case decompresses one file: no NIfTI parsing, no resizing.

The cache is built in a temporary sibling folder and moved into place at the end, so an
interrupted build leaves no half-written cache.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

import numpy as np

from mecca_rllib.data.atomic import atomic_folder
from mecca_rllib.data.errors import DataError
from mecca_rllib.data.layouts import Case, discover_cases, load_case
from mecca_rllib.data.preprocess import DEFAULT_SHAPE, Shape3, preprocess

MANIFEST = "manifest.json"
FORMAT = "mecca-rllib-cache"
VERSION = 1


@dataclass(frozen=True)
class Manifest:
    """What ``manifest.json`` records."""

    shape: Shape3
    seed: int
    variants: int
    cases: tuple[str, ...]
    source: str


@dataclass(frozen=True)
class CachedCase:
    """All variants of one case: ``image (K, D, H, W)``, ``label (K, D, H, W)``,
    ``spacing (K, 3)``, ``crop (K, 3, 2)``."""

    image: np.ndarray
    label: np.ndarray
    spacing: np.ndarray
    crop: np.ndarray


def is_cache(root: str | os.PathLike) -> bool:
    """True when ``root`` holds a cache manifest."""
    return (Path(root) / MANIFEST).is_file()


def read_manifest(root: str | os.PathLike) -> Manifest:
    """Parse and check ``root/manifest.json``."""
    path = Path(root) / MANIFEST
    try:
        meta = json.loads(path.read_text())
        if meta.get("format") != FORMAT or meta.get("version") != VERSION:
            raise ValueError(f"format {meta.get('format')!r} version {meta.get('version')!r}, "
                             f"expected {FORMAT!r} version {VERSION}")
        return Manifest(shape=tuple(int(s) for s in meta["shape"]), seed=int(meta["seed"]),
                        variants=int(meta["variants"]), cases=tuple(meta["cases"]),
                        source=str(meta.get("source", "")))
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise DataError(path, f"not a valid cache manifest ({err})") from err


def read_case(root: str | os.PathLike, name: str) -> CachedCase:
    """Load every variant of case ``name`` from the cache at ``root``."""
    path = Path(root) / f"{name}.npz"
    try:
        with np.load(path) as data:
            return CachedCase(image=data["image"], label=data["label"],
                              spacing=data["spacing"], crop=data["crop"])
    except (OSError, ValueError, KeyError, EOFError) as err:
        raise DataError(path, f"unreadable cache file ({type(err).__name__}: {err})") from err


def build_cache(dataset: str | os.PathLike | Iterable[Case], out: str | os.PathLike,
                shape: Shape3 = DEFAULT_SHAPE, *, variants: int = 4, seed: int = 0,
                channel: int | str | None = None, label_value: int | str | None = None,
                nonfinite: str = "raise", progress: Callable[[Iterable], Iterable] | None = None) -> Path:
    """Preprocess a dataset folder (or a list of cases) into a cache folder ``out``.

    Variant ``v`` of case ``i`` uses the generator seeded by ``[seed, i]``, the same as
    :class:`~mecca_rllib.data.sources.FolderSource` for its first ``variants`` variants.
    ``nonfinite`` is ``"raise"`` (NaN/Inf in an image is a DataError) or ``"clean"``.
    ``progress`` wraps the case iterable (e.g. ``tqdm.tqdm``).
    """
    if variants < 1:
        raise ValueError(f"variants: need at least 1, got {variants}")
    shape = tuple(int(s) for s in shape)
    source = str(dataset) if isinstance(dataset, (str, os.PathLike)) else ""
    cases = discover_cases(dataset) if isinstance(dataset, (str, os.PathLike)) else list(dataset)
    if not cases:
        raise DataError(source or "cases", "no case to cache")

    def fill(tmp: Path) -> None:
        for i, case in enumerate(progress(cases) if progress else cases):
            image, label = load_case(case, channel=channel, label_value=label_value,
                                     nonfinite=nonfinite)
            rng = np.random.default_rng([seed, i])
            done = [preprocess(image.array, label.array, rng, shape, spacing=image.spacing)
                    for _ in range(variants)]
            np.savez_compressed(tmp / f"{case.name}.npz",
                                image=np.stack([p.image for p in done]),
                                label=np.stack([p.label for p in done]),
                                spacing=np.array([p.spacing for p in done]),
                                crop=np.stack([p.crop for p in done]))
        manifest = {"format": FORMAT, "version": VERSION, "shape": list(shape), "seed": seed,
                    "variants": variants, "cases": [c.name for c in cases], "source": source}
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=1))

    return atomic_folder(out, fill, replace_if=is_cache)
