"""Where the environment draws its volumes from: synthetic phantoms, a preprocessed cache,
or a raw dataset folder preprocessed in memory at construction."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import numpy as np

from mecca_rllib.data.errors import DataError
from mecca_rllib.data.phantoms import make_phantom
from mecca_rllib.data.preprocess import DEFAULT_SHAPE, Shape3, augment, preprocess
from mecca_rllib.data.split import split_labeled, split_train_test

SPLITS = ("train", "test", "all")
_SPLIT_STREAM = {"train": 0, "test": 1, "val": 2}  # "val": open_source(validation=True)


class VolumeSource:
    """A fixed list of preprocessed cases of one shape.

    Attributes:
        names: case names, one per case.
        shape: ``(D, H, W)`` of every volume returned.
        labeled: bool ``(len(names),)``: which cases may use their label for training
            (from :func:`split_labeled`); the label is returned for every case.
    """

    names: list[str]
    shape: Shape3
    labeled: np.ndarray

    def __len__(self) -> int:
        return len(self.names)

    def get(self, index: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """Preprocessed case ``index``: ``(image float32 (D, H, W) z-scored, label uint8
        (D, H, W) in {0, 1})``. ``rng`` may pick among precomputed variants (crop margins);
        no augmentation happens here. Callers must not modify the returned arrays."""
        raise NotImplementedError

    def _check_index(self, index: int) -> int:
        index = int(index)
        if not 0 <= index < len(self.names):
            raise IndexError(f"index {index} out of range for {len(self.names)} cases")
        return index

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(cases={len(self)}, shape={self.shape}, "
                f"labeled={int(self.labeled.sum())})")


class SyntheticSource(VolumeSource):
    """Phantoms made on demand and memoised; case ``i`` depends only on
    ``(seed, split, i)``; train and test come from disjoint seed streams."""

    def __init__(self, shape: Shape3 = DEFAULT_SHAPE, num_cases: int = 64, split: str = "train",
                 *, seed: int = 0, labeled_fraction: float = 1.0) -> None:
        if num_cases < 1:
            raise ValueError(f"num_cases: need at least 1, got {num_cases}")
        self.shape = tuple(int(s) for s in shape)
        streams = ["train", "test"] if split == "all" else [split]
        self._keys = [(_SPLIT_STREAM[s], i) for s in streams for i in range(num_cases)]
        self.names = [f"phantom_{s}_{i:04d}" for s in streams for i in range(num_cases)]
        self.seed = int(seed)
        self.labeled = split_labeled(len(self.names), labeled_fraction, seed)
        self._memo: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    def get(self, index: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        index = self._check_index(index)
        if index not in self._memo:
            stream, i = self._keys[index]
            case_rng = np.random.default_rng([self.seed, stream, i])
            image, label = make_phantom(self.shape, case_rng)
            image.flags.writeable = False
            label.flags.writeable = False
            self._memo[index] = (image, label)
        return self._memo[index]


class _VariantSource(VolumeSource):
    """Cases held as ``(K, D, H, W)`` variant stacks; ``get`` picks one variant with rng."""

    def _variants(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        raise NotImplementedError

    def get(self, index: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        images, labels = self._variants(self._check_index(index))
        k = int(rng.integers(len(images)))
        return images[k], labels[k]


class CacheSource(_VariantSource):
    """A cache folder written by :func:`mecca_rllib.data.cache.build_cache`; reading a
    case decompresses one ``.npz`` (no NIfTI parsing, no resizing)."""

    def __init__(self, root: str | os.PathLike, indices: Sequence[int] | None = None, *,
                 labeled_fraction: float = 1.0, seed: int = 0) -> None:
        from mecca_rllib.data.cache import read_manifest

        self.root = Path(root)
        self.manifest = read_manifest(self.root)
        all_names = list(self.manifest.cases)
        indices = range(len(all_names)) if indices is None else indices
        self.names = [all_names[i] for i in indices]
        self.shape = self.manifest.shape
        self.labeled = split_labeled(len(self.names), labeled_fraction, seed)

    def _variants(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        from mecca_rllib.data.cache import read_case

        case = read_case(self.root, self.names[index])
        return case.image, case.label


class FolderSource(_VariantSource):
    """A raw dataset folder (MSD, BraTS or images/+labels/), loaded and preprocessed in
    memory at construction into ``variants`` random-margin variants per case."""

    def __init__(self, root: str | os.PathLike, shape: Shape3 = DEFAULT_SHAPE,
                 indices: Sequence[int] | None = None, *, variants: int = 4,
                 labeled_fraction: float = 1.0, seed: int = 0, channel: int | str | None = None,
                 label_value: int | str | None = None, nonfinite: str = "raise") -> None:
        from mecca_rllib.data.layouts import discover_cases, load_case

        self.root = Path(root)
        self.shape = tuple(int(s) for s in shape)
        cases = discover_cases(self.root)
        indices = range(len(cases)) if indices is None else indices
        self.names, self._images, self._labels = [], [], []
        for i in indices:
            image, label = load_case(cases[i], channel=channel, label_value=label_value,
                                     nonfinite=nonfinite)
            rng = np.random.default_rng([seed, i])
            done = [preprocess(image.array, label.array, rng, self.shape, spacing=image.spacing)
                    for _ in range(variants)]
            self.names.append(cases[i].name)
            self._images.append(np.stack([p.image for p in done]))
            self._labels.append(np.stack([p.label for p in done]))
        self.labeled = split_labeled(len(self.names), labeled_fraction, seed)

    def _variants(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        return self._images[index], self._labels[index]


class AugmentedSource(VolumeSource):
    """Another source's cases, each served under a fresh random flip and in-plane quarter
    turn drawn from the caller's ``rng`` (:func:`~mecca_rllib.data.augment`, MECCA.md §6):
    what a training loop that reads sources directly (the supervised baselines, the warm
    start) sees of the env's ``augment`` option. A view: nothing is copied."""

    def __init__(self, source: VolumeSource) -> None:
        self.source = source
        self.names, self.shape, self.labeled = source.names, source.shape, source.labeled

    def get(self, index: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        image, label = self.source.get(index, rng)
        return augment(image, label, rng)


def _split_indices(n: int, split: str, test_fraction: float, seed: int,
                   validation: bool = False) -> np.ndarray:
    if split == "all":
        return np.arange(n)
    train, test = split_train_test(n, test_fraction, seed)
    if validation:  # split the training cases again: the test cases stay unseen
        kept, held_out = split_train_test(len(train), test_fraction, seed + 1)
        train, test = train[kept], train[held_out]
    return train if split == "train" else test


def open_source(dataset: str | os.PathLike = "synthetic", shape: Shape3 = DEFAULT_SHAPE, *,
                num_cases: int = 64, split: str = "train", labeled_fraction: float = 1.0,
                seed: int = 0, test_fraction: float = 0.2, channel: int | str | None = None,
                label_value: int | str | None = None, variants: int = 4,
                nonfinite: str = "raise", validation: bool = False) -> VolumeSource:
    """Open a dataset for the environment.

    Args:
        dataset: ``"synthetic"``, a folder in MSD / BraTS / ``images/``+``labels/`` layout,
            or a cache folder (holding ``manifest.json``).
        shape: ``(D, H, W)`` of the volumes; a cache must have been built at this shape.
        num_cases: synthetic only: cases per split.
        split: ``"train"``, ``"test"`` or ``"all"``. Folders and caches: a seeded split by
            case with ``test_fraction`` (the same for a folder and its cache). Synthetic:
            train and test come from disjoint seed streams, ``num_cases`` each ("all" = both).
        labeled_fraction: fraction of the chosen cases marked labeled (seeded).
        seed: seeds the split, the labeled subset, synthetic cases and crop margins.
        channel, label_value: passed to the NIfTI loaders for raw folders.
        variants: raw folders only: random-margin variants preprocessed per case.
        nonfinite: raw folders only: ``"raise"`` on NaN/Inf in an image, or ``"clean"``.
        validation: choose settings without the test cases: ``"test"`` becomes a
            validation split held out of the training cases (folders and caches: with
            ``test_fraction``, and ``"train"`` the rest), or a third seed stream of phantoms
            (synthetic: ``"train"`` unchanged). Not with ``split="all"``.

    Raises:
        DataError: the dataset has no usable case, or a cache's shape differs from ``shape``.
    """
    if split not in SPLITS:
        raise ValueError(f"split: must be one of {SPLITS}, got {split!r}")
    if validation and split == "all":
        raise ValueError("validation: needs split='train' or 'test', not 'all'")
    shape = tuple(int(s) for s in shape)
    if str(dataset) == "synthetic":
        stream = "val" if validation and split == "test" else split
        return SyntheticSource(shape, num_cases, stream, seed=seed, labeled_fraction=labeled_fraction)
    root = Path(dataset)
    if not root.is_dir():
        raise DataError(root, "not a folder (expected 'synthetic', a dataset folder or a cache folder)")
    from mecca_rllib.data.cache import is_cache, read_manifest

    if is_cache(root):
        manifest = read_manifest(root)
        if manifest.shape != shape:
            raise DataError(root, f"cache was built at shape {manifest.shape}, but shape {shape} "
                                  "was requested; rebuild it or pass its shape")
        indices = _split_indices(len(manifest.cases), split, test_fraction, seed, validation)
        source: VolumeSource = CacheSource(root, indices, labeled_fraction=labeled_fraction, seed=seed)
    else:
        from mecca_rllib.data.layouts import discover_cases

        indices = _split_indices(len(discover_cases(root)), split, test_fraction, seed, validation)
        source = FolderSource(root, shape, indices, variants=variants,
                              labeled_fraction=labeled_fraction, seed=seed, channel=channel,
                              label_value=label_value, nonfinite=nonfinite)
    if len(source) == 0:
        raise DataError(root, f"no usable case in split {split!r} (test_fraction={test_fraction})")
    return source
