"""Data layer: NIfTI I/O, dataset layouts, preprocessing (MECCA.md §6), phantoms, splits,
the preprocessed cache and the volume sources the environment draws from."""
from mecca_rllib.data.errors import DataError
from mecca_rllib.data.phantoms import make_phantom
from mecca_rllib.data.preprocess import DEFAULT_SHAPE, Preprocessed, augment, preprocess
from mecca_rllib.data.sources import (
    AugmentedSource,
    CacheSource,
    FolderSource,
    SyntheticSource,
    VolumeSource,
    open_source,
)
from mecca_rllib.data.split import split_labeled, split_train_test

__all__ = [
    "DEFAULT_SHAPE",
    "AugmentedSource",
    "CacheSource",
    "DataError",
    "FolderSource",
    "Preprocessed",
    "SyntheticSource",
    "VolumeSource",
    "augment",
    "make_phantom",
    "open_source",
    "preprocess",
    "split_labeled",
    "split_train_test",
]
