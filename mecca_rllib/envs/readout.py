"""The segmentation a user sees at each step: which voxels are foreground, from p (MECCA.md §1).

MECCA.md §1 reads the segmentation as ``p > 0.5``. p moves on a 0.1 grid, starts at 0.5 and
has no zero action, so a voxel whose calibrated belief lies between 0.5 and 0.6 alternates
0.6 -> 0.5 -> 0.6 and, under the plain threshold, leaves the foreground at every other step:
the period-2 dips of the Dice per step (README "Ninth round" (39)). The readouts:

- ``"threshold"``: foreground where ``p > 0.5`` (MECCA.md §1 as printed);
- ``"hold"``: foreground where ``p > 0.5``, and a voxel at exactly ``p = 0.5`` keeps the side
  it had at the previous step (at the start every voxel is at 0.5 and background). **Decision**
  (README "Eleventh round"): 0.5 is the one undecided value of the grid, and a tie is broken
  by the voxel's own history instead of always toward background.

The same function serves the environment (p in integer tenths, ``half=5``) and every episode
that holds float p (``half=0.5``; 0.5 is exact in float32).
"""
from __future__ import annotations

import numpy as np

__all__ = ["READOUTS", "check_readout", "segmentation", "tie_broken"]

READOUTS = ("threshold", "hold")


def check_readout(readout: str) -> str:
    """``readout`` if it is one of :data:`READOUTS`, else a ValueError that lists them."""
    if readout not in READOUTS:
        raise ValueError(f"readout must be one of {READOUTS}, got {readout!r}")
    return readout


def segmentation(p: np.ndarray, previous: np.ndarray | None, readout: str, *,
                 half: float = 0.5) -> np.ndarray:
    """bool ``(D, H, W)``: the foreground after a step (module docstring).

    ``p``: the new probability ``(D, H, W)`` (float, or integer tenths with ``half=5``);
    ``previous``: the segmentation before the step, bool ``(D, H, W)`` (None: the start,
    where p = 0.5 is background); ``readout``: one of :data:`READOUTS`.
    """
    mask = np.greater(p, half)
    if check_readout(readout) == "hold" and previous is not None:
        mask |= np.equal(p, half) & previous
    return mask


def tie_broken(p: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """float32 ``(D, H, W)``: ``p`` with the voxels at exactly 0.5 that ``mask`` (the
    segmentation) calls foreground moved half a grid step up, to 0.55. Its ``> 0.5`` is
    ``mask``, and it resamples linearly onto another grid (the session's original grid)
    like p itself: with the ``"threshold"`` readout it *is* p."""
    p = np.asarray(p, np.float32)
    return np.where(np.equal(p, 0.5) & mask, np.float32(0.55), p)
