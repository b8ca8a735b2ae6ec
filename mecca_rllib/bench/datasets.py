"""Train/test volume sources of the benchmark datasets.

- ``phantoms``: synthetic phantoms; train and test come from disjoint seed streams.
- ``atlas``: the MNI152 + Harvard-Oxford task of the data layer (one case per structure),
  split *by structure*: the left and right structure of one name ("Left_Putamen",
  "Right_Putamen") always land on the same side of the split.
- any other value: a dataset folder (MSD, BraTS, ``images/``+``labels/``) or a cache,
  split by case as ``open_source`` does.
"""
from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mecca_rllib.data import DataError, FolderSource, VolumeSource, open_source

__all__ = ["BenchData", "open_bench_data", "structure_group", "split_by_group"]

_SIDE = re.compile(r"^(left|right)[\s_\-]+", re.IGNORECASE)


@dataclass
class BenchData:
    """The training and test sources of one benchmark dataset."""

    name: str
    train: VolumeSource
    test: VolumeSource
    description: str

    def with_test(self, test: "BenchData") -> "BenchData":
        """Train on these cases, test on ``test``'s (transfer to another collection)."""
        return BenchData(f"{self.name} -> {test.name}", self.train, test.test,
                         f"trained on {self.description}; tested on {test.description}")


def structure_group(name: str) -> str:
    """A Harvard-Oxford structure name without its side: ``"Left_Putamen" -> "putamen"``."""
    return _SIDE.sub("", name.strip()).lower()


def split_by_group(groups: list[str], test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Seeded split of item indices ``(train, test)`` so that items of one group never
    straddle it; the test side gets ``round(test_fraction * n_groups)`` groups (at least
    one, never all, when there are two or more groups)."""
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
    unique = sorted(set(groups))
    if len(unique) < 2:
        raise ValueError(f"need at least two groups to split, got {unique}")
    n_test = min(max(int(round(test_fraction * len(unique))), 1), len(unique) - 1)
    test_groups = set(np.random.default_rng(seed).permutation(unique)[:n_test].tolist())
    is_test = np.array([g in test_groups for g in groups], dtype=bool)
    return np.flatnonzero(~is_test), np.flatnonzero(is_test)


def _atlas_source(root: Path, shape: tuple[int, int, int], seed: int, test_fraction: float,
                  max_cases: int | None, validation: bool = False) -> tuple[VolumeSource, VolumeSource, str]:
    from mecca_rllib.data.layouts import discover_cases

    meta_path = root / "dataset.json"
    try:
        structures = json.loads(meta_path.read_text())["structures"]
        by_case = {s["case"]: s["name"] for s in structures}
    except (OSError, KeyError, TypeError, json.JSONDecodeError) as err:
        raise DataError(meta_path, f"not an atlas task (no 'structures' list: {err})") from None
    cases = discover_cases(root)
    missing = [c.name for c in cases if c.name not in by_case]
    if missing:
        raise DataError(meta_path, f"cases without a structure name: {missing[:5]}")
    groups = [structure_group(by_case[c.name]) for c in cases]
    train, test = split_by_group(groups, test_fraction, seed)
    if validation:  # split the training structures again: the test structures stay unseen
        kept, val = split_by_group([groups[i] for i in train], test_fraction, seed + 1)
        train, test = train[kept], train[val]
    if max_cases is not None:  # keep whole groups, in index order
        train, test = _whole_groups(train, groups, max_cases), _whole_groups(test, groups, max_cases)
    description = (f"MNI152 + Harvard-Oxford atlas task at {root}: {len(train)} train / "
                   f"{len(test)} {'validation' if validation else 'test'} structures, split by structure "
                   "(left/right together)")
    return (FolderSource(root, shape, train, seed=seed, variants=2),
            FolderSource(root, shape, test, seed=seed, variants=1), description)


def _whole_groups(indices: np.ndarray, groups: list[str], limit: int) -> np.ndarray:
    """The first indices of ``indices`` covering whole groups, at most ``limit`` (>= 1 group)."""
    kept: list[int] = []
    for g in dict.fromkeys(groups[i] for i in indices):
        members = [int(i) for i in indices if groups[i] == g]
        if kept and len(kept) + len(members) > limit:
            break
        kept += members
    return np.asarray(sorted(kept), dtype=np.int64)


def open_test_data(dataset: str, shape: tuple[int, int, int], *, seed: int = 0,
                   num_test: int = 16) -> BenchData:
    """A test-only dataset (``mecca bench --test-dataset``): every case of a folder (MSD,
    BraTS or ``images/``+``labels/``, or a cache), or ``num_test`` held-out phantoms."""
    if dataset in ("phantoms", "synthetic"):
        return open_bench_data(dataset, shape, seed=seed, num_test=num_test)
    path = Path(dataset)
    if not path.is_dir():
        raise DataError(path, "--test-dataset: expected 'phantoms' or a dataset folder")
    test = open_source(path, shape, split="all", seed=seed)
    return BenchData(path.name, test, test, f"{path}: all {len(test)} cases")


def open_bench_data(dataset: str, shape: tuple[int, int, int], *, seed: int = 0,
                    num_train: int = 64, num_test: int = 16, test_fraction: float = 0.2,
                    cache_dir: str | os.PathLike | None = None,
                    max_cases: int | None = None, validation: bool = False) -> BenchData:
    """Train and test sources for ``dataset`` (``phantoms``, ``atlas`` or a folder path).

    Args:
        shape: ``(D, H, W)`` the volumes are resized to.
        num_train, num_test: phantoms only: cases per split.
        test_fraction: atlas and folders: share of structures / cases held out.
        cache_dir: atlas only: where the atlas task is built once and reused.
        max_cases: atlas only: at most this many cases per split (whole structures).
        validation: test on a validation split instead of the test cases, to choose
            settings without them (``open_source(validation=True)``; atlas: the training
            structures split again by structure).
    """
    shape = tuple(int(s) for s in shape)
    held_out = "validation" if validation else "test"
    if dataset in ("phantoms", "synthetic"):
        train = open_source("synthetic", shape, num_cases=num_train, split="train", seed=seed)
        test = open_source("synthetic", shape, num_cases=num_test, split="test", seed=seed,
                           validation=validation)
        return BenchData("phantoms", train, test,
                         f"synthetic phantoms (seed {seed}): {num_train} train / {num_test} "
                         f"{held_out} cases from disjoint seed streams")
    if dataset == "atlas":
        from mecca_rllib.data.atlas import build_atlas_task

        root = Path(cache_dir or Path.home() / ".cache" / "mecca_rllib") / "atlas_task"
        if not (root / "dataset.json").is_file():
            build_atlas_task(root)
        train, test, description = _atlas_source(root, shape, seed, test_fraction, max_cases, validation)
        return BenchData("atlas", train, test, description)
    path = Path(dataset)
    if not path.is_dir():
        raise DataError(path, "--dataset: expected 'phantoms', 'atlas' or a dataset folder")
    train = open_source(path, shape, split="train", seed=seed, test_fraction=test_fraction,
                        validation=validation)
    test = open_source(path, shape, split="test", seed=seed, test_fraction=test_fraction,
                       validation=validation)
    return BenchData(path.name, train, test,
                     f"{path}: {len(train)} train / {len(test)} {held_out} cases (split by case)")
