"""Observation and action spaces of the voxel-agent environment (MECCA.md §1)."""
from __future__ import annotations

import numpy as np
from gymnasium import spaces

__all__ = [
    "ACTION_VALUES", "ACTION_TENTHS", "CHANNELS", "SPLIT_CHANNELS", "VoxelActions", "VoxelObservations",
]

#: Observation channels, in order (one hint channel, the paper's).
CHANNELS = ("image", "p", "hint")
#: Observation channels with separate foreground/background click hints (``hint_channels=2``).
SPLIT_CHANNELS = ("image", "p", "hint_fg", "hint_bg")

#: Probability change of action index k (MECCA.md §1, §3.1: zero is deliberately absent).
ACTION_VALUES = np.array([-0.4, -0.2, -0.1, 0.1, 0.2, 0.4], np.float32)
ACTION_VALUES.flags.writeable = False

#: The same changes in integer tenths: p stays exactly on the 0.1 grid inside the env.
ACTION_TENTHS = np.rint(ACTION_VALUES.astype(np.float64) * 10).astype(np.int8)
ACTION_TENTHS.flags.writeable = False
assert np.allclose(ACTION_TENTHS / 10, ACTION_VALUES), "action values must be multiples of 0.1"


class VoxelActions(spaces.MultiDiscrete):
    """One categorical action per voxel: ``MultiDiscrete(full((D, H, W), n))`` with a short repr.

    The default repr prints every entry of ``nvec`` (90,750 at 30x55x55) into logs and
    errors. Samples are uint8 (8x smaller than int64 in episode buffers); the environment
    accepts actions of any integer dtype.
    """

    def __init__(
        self,
        shape: tuple[int, ...],
        n: int = len(ACTION_VALUES),
        dtype: type[np.integer] = np.uint8,
        seed: int | np.random.Generator | None = None,
    ) -> None:
        super().__init__(np.full(tuple(shape), n, dtype=dtype), dtype=dtype, seed=seed)

    @property
    def n(self) -> int:
        """Number of actions per voxel."""
        return int(self.nvec.flat[0])

    def __repr__(self) -> str:
        return f"VoxelActions({self.n}, shape={self.shape})"


class VoxelObservations(spaces.Box):
    """``Box`` of shape ``(2 + hint_channels, D, H, W)`` float32 with a short repr.

    Channels: z-scored image (unbounded), probability p in [0, 1], then the hint channel(s)
    in [0, 1] (:data:`CHANNELS`, or :data:`SPLIT_CHANNELS` with ``hint_channels=2``).
    """

    def __init__(
        self,
        shape: tuple[int, int, int],
        seed: int | np.random.Generator | None = None,
        hint_channels: int = 1,
    ):
        self.channel_names = CHANNELS if hint_channels == 1 else SPLIT_CHANNELS
        full = (len(self.channel_names), *tuple(shape))
        low = np.zeros(full, np.float32)
        high = np.ones(full, np.float32)
        low[0], high[0] = -np.inf, np.inf
        super().__init__(low=low, high=high, dtype=np.float32, seed=seed)

    def __repr__(self) -> str:
        return f"VoxelObservations({'/'.join(self.channel_names)}, shape={self.shape})"
