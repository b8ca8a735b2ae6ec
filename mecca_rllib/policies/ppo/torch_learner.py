"""PPO and APPO torch learners with per-voxel advantages and loss; the confidence net's
optimizer and loss (MECCA.md §3, Eq. 6) come from the learner core."""
from __future__ import annotations

from typing import Any

import torch
from ray.rllib.algorithms.appo.torch.appo_torch_learner import APPOTorchLearner
from ray.rllib.algorithms.ppo.ppo_learner import LEARNER_RESULTS_KL_KEY
from ray.rllib.algorithms.ppo.torch.ppo_torch_learner import PPOTorchLearner
from ray.rllib.core.columns import Columns
from ray.rllib.core.rl_module.apis.target_network_api import TARGET_NETWORK_ACTION_DIST_INPUTS

from mecca_rllib.policies.learner_core import MECCALearnerCoreMixin
from mecca_rllib.policies.ppo.loss import voxel_columns, voxel_ppo_loss

#: The learner mixin under its earlier name: the confidence net's optimizer and loss when
#: ``config.self_adaptive_reward`` (``config.trains_confidence_net``).
ConfidenceLossMixin = MECCALearnerCoreMixin


class MECCAPPOTorchLearner(MECCALearnerCoreMixin, PPOTorchLearner):
    """PPO learner with per-voxel advantages (``AddMECCATrainColumns``) and loss."""

    def build(self) -> None:
        super().build()
        # PPOLearner.build adds RLlib's 1-D GAE and its bootstrap timestep: the per-voxel
        # columns come from AddMECCATrainColumns (appended by the config) instead.
        if self._learner_connector is not None:
            self._learner_connector.remove("AddOneTsToEpisodesAndTruncate")
            self._learner_connector.remove("GeneralAdvantageEstimation")

    def compute_loss_for_module(self, *, module_id: str, config: Any, batch: dict[str, Any],
                                fwd_out: dict[str, Any]) -> torch.Tensor:
        loss, stats = voxel_ppo_loss(
            old_logits=batch[Columns.ACTION_DIST_INPUTS], **voxel_columns(batch, fwd_out),
            clip_param=config.clip_param, vf_clip_param=config.vf_clip_param,
            vf_loss_coeff=config.vf_loss_coeff,
            entropy_coeff=self.entropy_coeff_schedulers_per_module[module_id].get_current_value(),
            normalize_advantages=config.normalize_advantages,
        )
        if config.use_kl_loss:
            loss = loss + self.curr_kl_coeffs_per_module[module_id] * stats[LEARNER_RESULTS_KL_KEY]
        self.metrics.log_dict({k: v.detach() for k, v in stats.items()}, key=module_id, window=1)
        return loss + self.confidence_loss(module_id, config, batch, fwd_out)


class MECCAAPPOTorchLearner(MECCALearnerCoreMixin, APPOTorchLearner):
    """APPO learner: target-network ratio with IS clipping, per voxel, no v-trace."""

    def compute_loss_for_module(self, *, module_id: str, config: Any, batch: dict[str, Any],
                                fwd_out: dict[str, Any]) -> torch.Tensor:
        module = self.module[module_id].unwrapped()
        old_logits = module.forward_target(batch)[TARGET_NETWORK_ACTION_DIST_INPUTS].detach()
        loss, stats = voxel_ppo_loss(
            old_logits=old_logits, **voxel_columns(batch, fwd_out),
            clip_param=config.clip_param, vf_clip_param=float("inf"),
            vf_loss_coeff=config.vf_loss_coeff,
            entropy_coeff=self.entropy_coeff_schedulers_per_module[module_id].get_current_value(),
            normalize_advantages=config.normalize_advantages,
            is_ratio_clip=2.0,  # APPO's clamp of pi_old / pi_behaviour
        )
        if config.use_kl_loss:
            loss = loss + self.curr_kl_coeffs_per_module[module_id] * stats[LEARNER_RESULTS_KL_KEY]
        self.metrics.log_dict({k: v.detach() for k, v in stats.items()}, key=module_id, window=1)
        return loss + self.confidence_loss(module_id, config, batch, fwd_out)
