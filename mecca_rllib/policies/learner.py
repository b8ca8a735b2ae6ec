"""``MECCATorchLearner``: per-voxel A2C loss + symmetric confidence loss (MECCA.md §3).

Two optimizers: ``"segmentation"`` (trunk, policy and value heads; ``config.lr``) and
``"confidence"`` (the confidence net; ``config.confidence_lr``). The segmentation losses
are masked by ``voxel_loss_mask``, the confidence loss by ``conf_loss_mask`` (labeled
episodes only, MECCA.md §5). Before each update the learner sets the simulated-label
threshold delta from ``timesteps[EPISODES_TRAINED_LIFETIME]`` (MECCA.md §5).
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from ray.rllib.core.columns import Columns
from ray.rllib.core.learner.learner import ENTROPY_KEY, POLICY_LOSS_KEY, VF_LOSS_KEY
from ray.rllib.core.learner.torch.torch_learner import TorchLearner

from mecca_rllib.policies.connectors import (
    ADVANTAGES,
    CONF_LOSS_MASK,
    CONF_TARGETS,
    LOSS_MASK,
    VALUE_TARGETS,
    AddMECCATrainColumns,
)
from mecca_rllib.policies.distribution import VoxelCategorical
from mecca_rllib.policies.rl_module import CONF_LOGITS, CONF_LOGITS_FLIPPED

CONFIDENCE_LOSS_KEY = "confidence_loss"
CONFIDENCE_ACCURACY_KEY = "confidence_accuracy"
# Key of ``Learner.update(timesteps=...)``: episodes the learners were given before this
# update, summed over all learners (set by ``MECCA.training_step``).
EPISODES_TRAINED_LIFETIME = "mecca_episodes_trained_lifetime"


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of ``x`` over entries where ``mask`` > 0 (weighted); 0 (with a graph) if none."""
    return (x * mask).sum() / mask.sum().clamp_min(1.0)


def symmetric_confidence_loss(
    logits: torch.Tensor, flipped_logits: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor
) -> torch.Tensor:
    """L_C = BCE(C(s, a), c_hat) + BCE(C(s, -a), 1 - c_hat), averaged over masked voxels
    (MECCA.md §3, Eq. 6). All inputs broadcast to ``(B, N)``; logits are pre-sigmoid."""
    pos = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    neg = F.binary_cross_entropy_with_logits(flipped_logits, 1.0 - targets, reduction="none")
    return masked_mean(pos + neg, mask)


class MECCATorchLearner(TorchLearner):
    """Per voxel: ``-logp(a) A`` (A detached) + ``vf_loss_coeff (V - R)^2``
    - ``entropy_coeff H``, plus the confidence loss (Eq. 6) on its own optimizer."""

    def configure_optimizers_for_module(self, module_id: str, config: Any = None) -> None:
        module = self._module[module_id]
        module = module.unwrapped() if hasattr(module, "unwrapped") else module
        conf_ids = {id(p) for p in module.confidence_net.parameters()}
        seg_params = [p for p in self.get_parameters(module) if id(p) not in conf_ids]
        conf_params = [p for p in self.get_parameters(module) if id(p) in conf_ids]
        self.register_optimizer(
            module_id=module_id,
            optimizer_name="segmentation",
            optimizer=torch.optim.Adam(seg_params),
            params=seg_params,
            lr_or_lr_schedule=config.lr,
        )
        self.register_optimizer(
            module_id=module_id,
            optimizer_name="confidence",
            optimizer=torch.optim.Adam(conf_params),
            params=conf_params,
            lr_or_lr_schedule=config.confidence_lr,
        )

    def before_gradient_based_update(self, *, timesteps: dict[str, Any]) -> None:
        """Set delta of the simulated-label provider from the episodes trained so far."""
        super().before_gradient_based_update(timesteps=timesteps)
        schedule = getattr(self.config, "delta_schedule", None)
        if schedule is None:
            return
        delta = schedule()(int(timesteps.get(EPISODES_TRAINED_LIFETIME, 0)))
        for piece in getattr(self._learner_connector, "connectors", []):
            if isinstance(piece, AddMECCATrainColumns) and hasattr(piece.label_provider, "delta"):
                piece.label_provider.delta = delta

    def compute_loss_for_module(
        self, *, module_id: str, config: Any, batch: dict[str, Any], fwd_out: dict[str, Any]
    ) -> torch.Tensor:
        b = batch[Columns.OBS].shape[0]
        mask = batch[LOSS_MASK].reshape(b, -1)
        dist = VoxelCategorical(fwd_out[Columns.ACTION_DIST_INPUTS])
        logp = dist.logp(batch[Columns.ACTIONS])  # (B, N)
        entropy = dist.entropy()  # (B, N)
        values = fwd_out[Columns.VF_PREDS].reshape(b, -1)
        advantages = batch[ADVANTAGES].reshape(b, -1).detach()

        policy_loss = masked_mean(-logp * advantages, mask)  # MECCA.md §3, Eqs. 3-5
        vf_loss = masked_mean((values - batch[VALUE_TARGETS].reshape(b, -1)) ** 2, mask)
        mean_entropy = masked_mean(entropy, mask)
        conf_logits = fwd_out[CONF_LOGITS].reshape(b, -1)
        conf_targets = batch[CONF_TARGETS].reshape(b, -1)
        conf_mask = batch[CONF_LOSS_MASK].reshape(b, -1) if CONF_LOSS_MASK in batch else mask
        conf_loss = symmetric_confidence_loss(  # labeled episodes only (MECCA.md §5)
            conf_logits, fwd_out[CONF_LOGITS_FLIPPED].reshape(b, -1), conf_targets, conf_mask
        )
        total = (
            policy_loss
            + config.vf_loss_coeff * vf_loss
            - config.entropy_coeff * mean_entropy
            + conf_loss  # disjoint parameters: stepped by the "confidence" optimizer
        )
        with torch.no_grad():
            conf_acc = masked_mean(((conf_logits > 0).float() == conf_targets).float(), conf_mask)
        self.metrics.log_dict(
            {
                POLICY_LOSS_KEY: policy_loss.detach(),
                VF_LOSS_KEY: vf_loss.detach(),
                ENTROPY_KEY: mean_entropy.detach(),
                CONFIDENCE_LOSS_KEY: conf_loss.detach(),
                CONFIDENCE_ACCURACY_KEY: conf_acc,
                "mean_advantage": masked_mean(advantages, mask),
                "loss_mask_fraction": mask.mean().detach(),
            },
            key=module_id,
            window=1,
        )
        return total
