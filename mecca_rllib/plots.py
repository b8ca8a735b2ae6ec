"""Plots of Dice per interaction step (matplotlib, Agg backend), written atomically."""
from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping
from pathlib import Path

import numpy as np


def plot_dice_per_step(
    curves: Mapping[str, np.ndarray], path: str | os.PathLike, *, title: str = "Dice per interaction step"
) -> Path:
    """Mean +- std Dice of each policy after reset (step 0) and every step.

    ``curves``: name -> Dice ``(episodes, T + 1)``. Writes a PNG to ``path`` (returned).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(5.5, 4.0), dpi=120)
    for name, dice in curves.items():
        dice = np.asarray(dice, dtype=float)
        steps = np.arange(dice.shape[1])
        mean, std = dice.mean(axis=0), dice.std(axis=0)
        ax.plot(steps, mean, marker="o", label=f"{name} (n={dice.shape[0]})")
        ax.fill_between(steps, mean - std, mean + std, alpha=0.2)
    ax.set_xlabel("interaction step (0 = after reset)")
    ax.set_ylabel("Dice")
    ax.set_ylim(0.0, 1.0)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    fig.tight_layout()
    fd, tmp = tempfile.mkstemp(suffix=".png", prefix=f".{path.stem}.", dir=path.parent)
    os.close(fd)
    try:
        fig.savefig(tmp, format="png")
        os.chmod(tmp, 0o644)  # mkstemp creates 0600
        os.replace(tmp, path)
    finally:
        plt.close(fig)
        if os.path.exists(tmp):
            os.remove(tmp)
    return path
