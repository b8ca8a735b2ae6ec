"""Seeded labeled/unlabeled split of a training set (MECCA.md §5)."""
from __future__ import annotations

import numpy as np


def split_labeled(n: int, fraction: float, seed: int = 0) -> np.ndarray:
    """Choose which of ``n`` cases keep their label.

    Returns a bool mask ``(n,)`` with ``round(fraction * n)`` True entries, at least one
    when ``fraction > 0`` and ``n > 0``; the chosen cases are a seeded random subset.
    """
    if n < 0:
        raise ValueError(f"n: must be >= 0, got {n}")
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"fraction: must be in [0, 1], got {fraction}")
    count = int(round(fraction * n))
    if fraction > 0 and n > 0:
        count = max(count, 1)
    mask = np.zeros(n, dtype=bool)
    mask[np.random.default_rng(seed).permutation(n)[:count]] = True
    return mask


def split_train_test(n: int, test_fraction: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Seeded split of case indices ``0..n-1`` into sorted ``(train, test)`` index arrays.

    The test set gets ``round(test_fraction * n)`` cases, at least one when
    ``test_fraction > 0`` and ``n > 1``, and never all cases when ``test_fraction < 1``.
    """
    if not 0.0 <= test_fraction <= 1.0:
        raise ValueError(f"test_fraction: must be in [0, 1], got {test_fraction}")
    count = int(round(test_fraction * n))
    if 0 < test_fraction < 1 and n > 1:
        count = min(max(count, 1), n - 1)
    order = np.random.default_rng(seed).permutation(n)
    return np.sort(order[count:]), np.sort(order[:count])
