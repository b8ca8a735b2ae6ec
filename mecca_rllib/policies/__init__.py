"""MECCA's learning parts on RLlib's new API stack (MECCA.md §2-3).

``networks`` (dilated 3D CNNs), ``distribution`` (``VoxelCategorical``), ``rl_module``
(``MECCATorchRLModule``), ``returns`` (per-voxel signals), ``reward_shaping`` (weighting
registry), ``connectors`` (learner connector), ``learner`` (``MECCATorchLearner``),
``checkpoints`` (load / export the module).
"""
from mecca_rllib.policies.distribution import VoxelCategorical
from mecca_rllib.policies.reward_shaping import get_weighting, register_weighting
from mecca_rllib.policies.rl_module import MECCATorchRLModule

__all__ = ["MECCATorchRLModule", "VoxelCategorical", "get_weighting", "register_weighting"]
