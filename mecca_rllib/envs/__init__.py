"""The voxel-agent interactive segmentation environment (MECCA.md §1) and its parts."""
from mecca_rllib.envs.hints import HINT_CHANNELS, ClickHints, HintMap, gaussian_kernel
from mecca_rllib.envs.interactive_seg_env import DEFAULT_CONFIG, InteractiveSegEnv
from mecca_rllib.envs.simulated_user import CLICK_MODES, SimulatedUser, boundary_map
from mecca_rllib.envs.spaces import (
    ACTION_VALUES,
    CHANNELS,
    SPLIT_CHANNELS,
    VoxelActions,
    VoxelObservations,
)

__all__ = [
    "ACTION_VALUES",
    "CHANNELS",
    "ClickHints",
    "HINT_CHANNELS",
    "SPLIT_CHANNELS",
    "CLICK_MODES",
    "DEFAULT_CONFIG",
    "HintMap",
    "InteractiveSegEnv",
    "SimulatedUser",
    "VoxelActions",
    "VoxelObservations",
    "boundary_map",
    "gaussian_kernel",
]
