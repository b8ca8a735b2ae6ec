"""``MECCATorchLearner``: per-voxel A2C loss + symmetric confidence loss (MECCA.md §3).

Two optimizers: ``"segmentation"`` (trunk, policy and value heads; ``config.lr``) and
``"confidence"`` (the confidence net; ``config.confidence_lr``), both from the learner core
(``policies/learner_core.py``). The segmentation losses are masked by ``voxel_loss_mask``,
the confidence loss by ``conf_loss_mask`` (labeled episodes only, MECCA.md §5). Before each
update the learner sets the simulated-label threshold delta from
``timesteps[EPISODES_TRAINED_LIFETIME]`` (MECCA.md §5).
"""
from __future__ import annotations

from typing import Any

import torch
from ray.rllib.core.columns import Columns
from ray.rllib.core.learner.learner import ENTROPY_KEY, POLICY_LOSS_KEY, VF_LOSS_KEY
from ray.rllib.core.learner.torch.torch_learner import TorchLearner
from ray.rllib.utils.metrics import NUM_ENV_STEPS_SAMPLED_LIFETIME
from ray.rllib.utils.schedules.scheduler import Scheduler

from mecca_rllib.envs.rollout import step_tenths
from mecca_rllib.envs.spaces import ACTION_VALUES
from mecca_rllib.policies.connectors import (
    ADVANTAGES,
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
from mecca_rllib.policies.learner_core import (  # noqa: F401  (re-exported names)
    CONFIDENCE_ACCURACY_KEY,
    CONFIDENCE_LOSS_KEY,
    MECCALearnerCoreMixin,
    masked_mean,
    normalized,
    symmetric_confidence_loss,
)
from mecca_rllib.policies.reward_shaping import ShapingInputs, gated_confidence_weight
from mecca_rllib.policies.rl_module import CONF_LOGITS

ORACLE_LOSS_KEY = "oracle_loss"
# Oracle action of a voxel: the largest step toward its target (MECCA.md §1's action set).
ORACLE_UP, ORACLE_DOWN = 5, 0  # indices of +0.4 and -0.4 in ACTION_VALUES
# Key of ``Learner.update(timesteps=...)``: episodes the learners were given before this
# update, summed over all learners (set by ``MECCA.training_step``).
EPISODES_TRAINED_LIFETIME = "mecca_episodes_trained_lifetime"


def class_balance_weights(label: torch.Tensor, mask: torch.Tensor, power: float = 1.0) -> torch.Tensor:
    """Per-voxel weights ``(B, N)`` that give a row's target and background voxels equal
    total weight (mean weight 1 over the row's masked voxels): ``0.5 / f`` on target voxels,
    ``0.5 / (1 - f)`` elsewhere, f the row's masked target share clamped to [0.01, 0.99].

    ``power`` < 1 balances part of the way: both weights are raised to ``power`` and the
    row rescaled to mean weight 1 again (0: unweighted)."""
    y = (label > 0.5).float()
    share = (masked_mean_rows(y, mask)).clamp(0.01, 0.99).unsqueeze(1)
    weights = torch.where(y > 0, 0.5 / share, 0.5 / (1.0 - share))
    if power == 1.0:
        return weights
    weights = weights**power
    return weights / masked_mean_rows(weights, mask).clamp_min(1e-12).unsqueeze(1)


def direction_logp(logits: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
    """log pi(a moves p toward the label) ``(B, N)``: the log of the summed probability of the
    three positive actions where ``up`` ``(B, N)``, else of the three negative ones
    (the direction Eq. 7's confidence target scores), from logits ``(B, 6, D, H, W)``."""
    logp = torch.log_softmax(logits.flatten(2).float(), dim=1)  # (B, 6, N)
    positive = torch.as_tensor(ACTION_VALUES > 0, device=logits.device)
    return torch.where(up, torch.logsumexp(logp[:, positive], dim=1), torch.logsumexp(logp[:, ~positive], dim=1))


def next_foreground_prob(logits: torch.Tensor, p_prev: torch.Tensor) -> torch.Tensor:
    """pi(p + a > 0.5 | s) ``(B, N)``: the policy's probability that a voxel is foreground
    after its step (MECCA.md §1: ``p <- clip(p + a, 0, 1)``, foreground where p > 0.5), from
    logits ``(B, 6, D, H, W)`` and the voxels' p before the step ``(B, N)``."""
    probs = torch.softmax(logits.flatten(2).float(), dim=1)  # (B, 6, N)
    # The env's own update on p's grid of tenths, for every action at once (0.4 + 0.1 is 0.5:
    # background).
    tenths = torch.round(p_prev * 10).to(torch.int8).unsqueeze(1)  # (B, 1, N)
    every_action = torch.arange(len(ACTION_VALUES), device=logits.device).view(1, -1, 1)
    foreground = step_tenths(tenths, every_action) > 5  # (B, 6, N)
    return (probs * foreground).sum(1)


def soft_dice_loss(prob: torch.Tensor, label: torch.Tensor, mask: torch.Tensor, eps: float = 1.0) -> torch.Tensor:
    """Mean over rows of ``1 - (2 |f y| + eps) / (|f| + |y| + eps)`` on the masked voxels;
    ``prob``, ``label`` (0/1) and ``mask`` are ``(B, N)``; rows without masked voxels are skipped."""
    y = (label > 0.5).float() * mask
    f = prob * mask
    rows = mask.sum(1) > 0
    dice = (2 * (f * y).sum(1) + eps) / (f.sum(1) + y.sum(1) + eps).clamp_min(1e-12)
    return torch.where(rows, 1 - dice, 0.0).sum() / rows.sum().clamp_min(1)


def confidence_emphasis(config: Any, *, p_prev: torch.Tensor, p_next: torch.Tensor, label: torch.Tensor,
                        confidence: torch.Tensor, mask: torch.Tensor,
                        step: torch.Tensor | None = None) -> torch.Tensor:
    """Per-voxel weights ``(B, N)`` of the ``oracle_confidence`` option: the gated w(c) of
    MECCA's self-adaptive reward (MECCA.md §3, Eq. 8; each row a volume at one step, as the
    gate's skill is per step), rescaled to mean 1 over the row's masked voxels, and mixed
    with the uniform weight 1: ``(1 - m) + m w``, m = ``float(oracle_confidence)``.
    Rows whose interaction ``step (B,)`` (0 = the first action) is below
    ``oracle_confidence_from_step`` keep the uniform weight 1."""
    inputs = ShapingInputs(p_prev=p_prev, p_next=p_next, label=label, confidence=confidence)
    weight = gated_confidence_weight(inputs, config.alpha, config.beta, config.confidence_form,
                                     config.confidence_gate, config.confidence_skill)
    share = float(config.oracle_confidence)
    emphasis = (1.0 - share) + share * weight / masked_mean_rows(weight, mask).clamp_min(1e-12).unsqueeze(1)
    from_step = int(getattr(config, "oracle_confidence_from_step", 0))
    if from_step <= 0:
        return emphasis
    if step is None:
        raise ValueError("oracle_confidence_from_step needs the batch's episode_step column")
    return torch.where((step.reshape(-1, 1) >= from_step), emphasis, torch.ones_like(emphasis))


def masked_mean_rows(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Per-row masked mean of ``(B, N)`` -> ``(B,)``."""
    return (x * mask).sum(1) / mask.sum(1).clamp_min(1.0)


class MECCATorchLearner(MECCALearnerCoreMixin, TorchLearner):
    """Per voxel: ``-logp(a) A`` (A detached) + ``vf_loss_coeff (V - R)^2``
    - ``entropy_coeff H``, plus the confidence loss (Eq. 6) on its own optimizer
    (both from :class:`MECCALearnerCoreMixin`; MECCA always trains the confidence net).

    Options (``MECCAConfig.training``): ``normalize_advantages`` (per-voxel advantages
    scaled to zero mean, unit std over the batch's masked voxels), ``class_balanced``
    (target and background voxels weigh the same in the policy and oracle losses,
    :func:`class_balance_weights`) and ``oracle_coeff``
    (weight of a cross-entropy of the policy toward the oracle on the states the policy
    visits: ``oracle_target="direction"`` any step toward the label,
    :func:`direction_logp`, or ``"max"`` the +-0.4 step; class-balanced only with
    ``oracle_balanced``, and by MECCA's confidence weight with ``oracle_confidence``,
    :func:`confidence_emphasis`; a float or a schedule ``[[env_steps, value], ...]``, like
    ``entropy_coeff``).

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

    def trains_confidence(self, config: Any) -> bool:
        """MECCA always trains the confidence net (MECCA.md §3)."""
        return True

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
            weights = class_balance_weights(batch[REWARD_LABELS].reshape(b, -1), mask,
                                            float(getattr(config, "class_balance_power", 1.0)))

        policy_loss = masked_mean(-logp * advantages * weights, mask)  # MECCA.md §3, Eqs. 3-5
        vf_loss = masked_mean((values - value_targets) ** 2, mask)
        mean_entropy = masked_mean(entropy, mask)
        conf = self.confidence_terms(module_id, batch, fwd_out)  # conf_loss_mask (MECCA.md §5)
        entropy_coeff = self._scheduled(module_id, "entropy_coeff")
        total = (
            policy_loss
            + config.vf_loss_coeff * vf_loss
            - entropy_coeff * mean_entropy
            + conf.loss  # disjoint parameters: stepped by the "confidence" optimizer
        )
        oracle_coeff = self._scheduled(module_id, "oracle_coeff")
        if oracle_coeff > 0 and REWARD_LABELS in batch:
            target = batch[REWARD_LABELS].reshape(b, -1) > 0.5
            if config.oracle_target == "direction":
                oracle_logp = direction_logp(fwd_out[Columns.ACTION_DIST_INPUTS], target)
            else:  # "max": the largest step toward the label, +0.4 or -0.4
                oracle_logp = dist.logp(torch.where(target, ORACLE_UP, ORACLE_DOWN))
            oracle_weights = weights if config.oracle_balanced else torch.ones_like(mask)
            if getattr(config, "oracle_confidence", False) and config._weighting().needs_confidence:
                oracle_weights = oracle_weights * confidence_emphasis(
                    config, p_prev=batch[Columns.OBS][:, 1].reshape(b, -1), p_next=batch[P_NEXT],
                    label=batch[REWARD_LABELS].reshape(b, -1), confidence=torch.sigmoid(conf_logits).detach(),
                    mask=mask, step=batch[EPISODE_STEP] if EPISODE_STEP in batch else None)  # fmt: skip
            oracle_loss = masked_mean(-oracle_logp * oracle_weights, mask)
            total = total + oracle_coeff * oracle_loss
            stats[ORACLE_LOSS_KEY] = oracle_loss.detach()
        if config.oracle_dice > 0 and REWARD_LABELS in batch:
            foreground = next_foreground_prob(fwd_out[Columns.ACTION_DIST_INPUTS],
                                              batch[Columns.OBS][:, 1].reshape(b, -1))
            dice_loss = soft_dice_loss(foreground, batch[REWARD_LABELS].reshape(b, -1), mask)
            total = total + config.oracle_dice * dice_loss
            stats["oracle_dice_loss"] = dice_loss.detach()
        with torch.no_grad():
            if EPISODE_STEP in batch and P_NEXT in batch:
                stats.update(step_diagnostics(
                    step=batch[EPISODE_STEP], actions=batch[Columns.ACTIONS].reshape(b, -1),
                    p_prev=batch[Columns.OBS][:, 1].reshape(b, -1), p_next=batch[P_NEXT],
                    label=batch[REWARD_LABELS], mask=mask, entropy=entropy,
                    conf_correct=conf.correct, conf_mask=conf.mask,
                    confidence=torch.sigmoid(conf_logits),
                ))  # fmt: skip
        self.metrics.log_dict(
            {
                POLICY_LOSS_KEY: policy_loss.detach(),
                VF_LOSS_KEY: vf_loss.detach(),
                ENTROPY_KEY: mean_entropy.detach(),
                "loss_mask_fraction": mask.mean().detach(),
                "entropy_coeff": entropy_coeff,
                "oracle_coeff": oracle_coeff,
                **{k: v.detach() if torch.is_tensor(v) else v for k, v in stats.items()},
            },
            key=module_id,
            window=1,
        )
        return total
