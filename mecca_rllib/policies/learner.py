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

from ray.rllib.utils.metrics import NUM_ENV_STEPS_SAMPLED_LIFETIME
from ray.rllib.utils.schedules.scheduler import Scheduler

from mecca_rllib.policies.connectors import (
    ADVANTAGES,
    CONF_LOSS_MASK,
    CONF_TARGETS,
    EPISODE_ID,
    EPISODE_STEP,
    LOSS_MASK,
    P_NEXT,
    REWARD_LABELS,
    VALUE_TARGETS,
    AddMECCATrainColumns,
)
from mecca_rllib.policies.diagnostics import step_diagnostics
from mecca_rllib.policies.distribution import VoxelCategorical
from mecca_rllib.policies.rl_module import CONF_LOGITS, CONF_LOGITS_FLIPPED

CONFIDENCE_LOSS_KEY = "confidence_loss"
CONFIDENCE_ACCURACY_KEY = "confidence_accuracy"
ORACLE_LOSS_KEY = "oracle_loss"
# Oracle action of a voxel: the largest step toward its target (MECCA.md §1's action set).
ORACLE_UP, ORACLE_DOWN = 5, 0  # indices of +0.4 and -0.4 in ACTION_VALUES
# Key of ``Learner.update(timesteps=...)``: episodes the learners were given before this
# update, summed over all learners (set by ``MECCA.training_step``).
EPISODES_TRAINED_LIFETIME = "mecca_episodes_trained_lifetime"


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of ``x`` over entries where ``mask`` > 0 (weighted); 0 (with a graph) if none."""
    return (x * mask).sum() / mask.sum().clamp_min(1.0)


def normalized(x: torch.Tensor, mask: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """``x`` shifted and scaled to zero mean and unit std over the masked entries."""
    mean = masked_mean(x, mask)
    std = masked_mean((x - mean) ** 2, mask).sqrt()
    return (x - mean) / (std + eps)


def class_balance_weights(label: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Per-voxel weights ``(B, N)`` that give a row's target and background voxels equal
    total weight (mean weight 1 over the row's masked voxels): ``0.5 / f`` on target voxels,
    ``0.5 / (1 - f)`` elsewhere, f the row's masked target share clamped to [0.01, 0.99]."""
    y = (label > 0.5).float()
    share = (masked_mean_rows(y, mask)).clamp(0.01, 0.99).unsqueeze(1)
    return torch.where(y > 0, 0.5 / share, 0.5 / (1.0 - share))


def masked_mean_rows(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Per-row masked mean of ``(B, N)`` -> ``(B,)``."""
    return (x * mask).sum(1) / mask.sum(1).clamp_min(1.0)


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
    - ``entropy_coeff H``, plus the confidence loss (Eq. 6) on its own optimizer.

    Options (``MECCAConfig.training``): ``normalize_advantages`` (per-voxel advantages
    scaled to zero mean, unit std over the batch's masked voxels), ``class_balanced``
    (target and background voxels weigh the same in the policy and oracle losses,
    :func:`class_balance_weights`) and ``oracle_coeff``
    (weight of a cross-entropy of the policy toward the oracle action, +0.4 on target
    voxels and -0.4 elsewhere, on the states the policy visits; a float or a schedule
    ``[[env_steps, value], ...]``, like ``entropy_coeff``).

    When the batch has no ``advantages`` column (the connector's ``module_terms="loss"``),
    rewards, returns and advantages come from this train forward's own values and
    confidence (detached): one forward per update.
    """

    def build(self) -> None:
        super().build()
        self._schedulers: dict[tuple[str, str], Scheduler] = {}

    SCHEDULED = ("entropy_coeff", "oracle_coeff")  # float-or-schedule settings, by env steps

    def _scheduler(self, module_id: str, name: str) -> Scheduler:
        key = (module_id, name)
        if key not in self._schedulers:
            value = getattr(self.config.get_config_for_module(module_id), name, 0.0) or 0.0
            self._schedulers[key] = Scheduler(value, framework="torch", device=self._device)
        return self._schedulers[key]

    def _scheduled(self, module_id: str, name: str) -> float:
        """Current value of the float-or-schedule setting ``config.<name>``."""
        return float(self._scheduler(module_id, name).get_current_value())

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
        """Set delta of the simulated-label provider from the episodes trained so far and
        advance the entropy and oracle schedules to the env steps sampled so far."""
        super().before_gradient_based_update(timesteps=timesteps)
        env_steps = int(timesteps.get(NUM_ENV_STEPS_SAMPLED_LIFETIME, 0) or 0)
        for module_id in self.module.keys():
            for name in self.SCHEDULED:
                self._scheduler(module_id, name).update(timestep=env_steps)
        schedule = getattr(self.config, "delta_schedule", None)
        if schedule is None:
            return
        delta = schedule()(int(timesteps.get(EPISODES_TRAINED_LIFETIME, 0)))
        for piece in self._train_column_pieces():
            if hasattr(piece.label_provider, "delta"):
                piece.label_provider.delta = delta

    def _train_column_pieces(self) -> list[AddMECCATrainColumns]:
        """The learner connector's ``AddMECCATrainColumns`` pieces."""
        pieces = getattr(self._learner_connector, "connectors", [])
        return [p for p in pieces if isinstance(p, AddMECCATrainColumns)]

    def _shaping(self):
        pieces = self._train_column_pieces()
        if not pieces:
            raise RuntimeError("MECCA learner: no AddMECCATrainColumns piece in the learner connector")
        return pieces[0].shaping

    def compute_loss_for_module(
        self, *, module_id: str, config: Any, batch: dict[str, Any], fwd_out: dict[str, Any]
    ) -> torch.Tensor:
        b = batch[Columns.OBS].shape[0]
        mask = batch[LOSS_MASK].reshape(b, -1)
        dist = VoxelCategorical(fwd_out[Columns.ACTION_DIST_INPUTS])
        logp = dist.logp(batch[Columns.ACTIONS])  # (B, N)
        entropy = dist.entropy()  # (B, N)
        values = fwd_out[Columns.VF_PREDS].reshape(b, -1)
        conf_logits = fwd_out[CONF_LOGITS].reshape(b, -1)
        stats: dict[str, Any] = {}
        if ADVANTAGES in batch:
            advantages = batch[ADVANTAGES].reshape(b, -1).detach()
            value_targets = batch[VALUE_TARGETS].reshape(b, -1)
        else:  # one forward per update: targets from this forward's values and confidence
            advantages, value_targets, stats["mean_gain"] = self._shaping().targets(
                p_prev=batch[Columns.OBS][:, 1].reshape(b, -1), p_next=batch[P_NEXT],
                label=batch[REWARD_LABELS], values=values.detach(),
                confidence=torch.sigmoid(conf_logits).detach(), episode_id=batch[EPISODE_ID], mask=mask,
            )  # fmt: skip
        stats["mean_advantage"] = masked_mean(advantages, mask)
        if getattr(config, "normalize_advantages", False):
            advantages = normalized(advantages, mask)
        # Class balance (issue 14): the target is 5-15 % of the voxels, so without it the
        # background's gradient dominates the shared biases ("all background" collapse).
        weights = torch.ones_like(mask)
        if getattr(config, "class_balanced", False) and REWARD_LABELS in batch:
            weights = class_balance_weights(batch[REWARD_LABELS].reshape(b, -1), mask)

        policy_loss = masked_mean(-logp * advantages * weights, mask)  # MECCA.md §3, Eqs. 3-5
        vf_loss = masked_mean((values - value_targets) ** 2, mask)
        mean_entropy = masked_mean(entropy, mask)
        conf_targets = batch[CONF_TARGETS].reshape(b, -1)
        conf_mask = batch[CONF_LOSS_MASK].reshape(b, -1) if CONF_LOSS_MASK in batch else mask
        conf_loss = symmetric_confidence_loss(  # labeled episodes only (MECCA.md §5)
            conf_logits, fwd_out[CONF_LOGITS_FLIPPED].reshape(b, -1), conf_targets, conf_mask
        )
        entropy_coeff = self._scheduled(module_id, "entropy_coeff")
        total = (
            policy_loss
            + config.vf_loss_coeff * vf_loss
            - entropy_coeff * mean_entropy
            + conf_loss  # disjoint parameters: stepped by the "confidence" optimizer
        )
        oracle_coeff = self._scheduled(module_id, "oracle_coeff")
        if oracle_coeff > 0 and REWARD_LABELS in batch:
            oracle = torch.where(batch[REWARD_LABELS].reshape(b, -1) > 0.5, ORACLE_UP, ORACLE_DOWN)
            oracle_loss = masked_mean(-dist.logp(oracle) * weights, mask)
            total = total + oracle_coeff * oracle_loss
            stats[ORACLE_LOSS_KEY] = oracle_loss.detach()
        with torch.no_grad():
            conf_correct = ((conf_logits > 0).float() == conf_targets).float()
            conf_acc = masked_mean(conf_correct, conf_mask)
            if EPISODE_STEP in batch and P_NEXT in batch:
                stats.update(step_diagnostics(
                    step=batch[EPISODE_STEP], actions=batch[Columns.ACTIONS].reshape(b, -1),
                    p_prev=batch[Columns.OBS][:, 1].reshape(b, -1), p_next=batch[P_NEXT],
                    label=batch[REWARD_LABELS], mask=mask, entropy=entropy,
                    conf_correct=conf_correct, conf_mask=conf_mask,
                ))  # fmt: skip
        self.metrics.log_dict(
            {
                POLICY_LOSS_KEY: policy_loss.detach(),
                VF_LOSS_KEY: vf_loss.detach(),
                ENTROPY_KEY: mean_entropy.detach(),
                CONFIDENCE_LOSS_KEY: conf_loss.detach(),
                CONFIDENCE_ACCURACY_KEY: conf_acc,
                "loss_mask_fraction": mask.mean().detach(),
                "entropy_coeff": entropy_coeff,
                "oracle_coeff": oracle_coeff,
                **{k: v.detach() if torch.is_tensor(v) else v for k, v in stats.items()},
            },
            key=module_id,
            window=1,
        )
        return total
