"""MECCA's env and RLModule under RLlib's PPO and APPO, with per-voxel advantages.

    from mecca_rllib.policies.ppo import MECCAPPOConfig

    config = (
        MECCAPPOConfig()
        .environment("mecca_seg", env_config={"dataset": "synthetic", "shape": (8, 16, 16)})
        .training(self_adaptive_reward=True, alpha=0.8, beta=1.0)  # "PPO + self-adaptive reward"
    )
    algo = config.build_algo()

What changes against stock PPO/APPO:
- the module is ``MECCATorchRLModule`` with ``sample_in_module=False``: it returns logits and
  the env runner's ``VoxelCategorical`` samples, so ``action_dist_inputs`` and ``action_logp``
  ``(N,)`` per step are stored in the episodes (the old policy of the ratio);
- RLlib's 1-D GAE piece (and its extra bootstrap timestep) is replaced by the per-voxel
  ``AddMECCATrainColumns`` (``policies/connectors.py``, built on ``policies/returns.py``):
  advantages and value targets are ``(B, N)`` with ``N = D * H * W``, GAE with PPO's
  ``lambda_`` over the shaped per-voxel rewards (MECCA.md §3);
- the surrogate, clipping, KL and entropy act per voxel and every loss is the mean over the
  voxels of ``voxel_loss_mask`` (:func:`voxel_ppo_loss`);
- ``self_adaptive_reward=True`` sets ``reward_weighting="confidence"`` (Eq. 8) and mixes the
  confidence network's loss (Eq. 6, over ``conf_loss_mask``: labeled episodes only, §5) and
  optimizer into the learner (``MECCALearnerCoreMixin``, here also ``ConfidenceLossMixin``);
  other weightings (``none``, ``focal_prob``, ``error_region``) are chosen with
  ``reward_weighting``.
APPO keeps its target ("old") policy network, IS-ratio clipping, circular buffer and
asynchronous learner; v-trace is NOT used: advantages come from the per-voxel connector on
complete episodes (at most ``circular_buffer_iterations_per_batch`` updates stale).

The reward settings, defaults, validation, recorded model-config keys, driver-side
weighting resolution and learner connector are the MECCA core's
(``policies/config_core.py``, ``policies/learner_core.py``), the same as ``MECCAConfig``'s.

Modules, by role as in RLlib's algorithm folders: ``config`` (configs and algorithms),
``torch_learner`` (learners), ``loss`` (the per-voxel surrogate), ``target_module``
(APPO's module with a target network).
"""
from mecca_rllib.policies.ppo.config import (
    MECCAAPPO,
    MECCAAPPOConfig,
    MECCAPPO,
    MECCAPPOConfig,
    VoxelRewardConfigMixin,
)
from mecca_rllib.policies.ppo.loss import voxel_columns, voxel_ppo_loss
from mecca_rllib.policies.ppo.target_module import MECCATargetRLModule
from mecca_rllib.policies.ppo.torch_learner import (
    ConfidenceLossMixin,
    MECCAAPPOTorchLearner,
    MECCAPPOTorchLearner,
)

__all__ = [
    "ConfidenceLossMixin",
    "MECCAAPPO",
    "MECCAAPPOConfig",
    "MECCAAPPOTorchLearner",
    "MECCAPPO",
    "MECCAPPOConfig",
    "MECCAPPOTorchLearner",
    "MECCATargetRLModule",
    "VoxelRewardConfigMixin",
    "voxel_columns",
    "voxel_ppo_loss",
]
