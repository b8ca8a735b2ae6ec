"""The per-voxel PPO/APPO surrogate (MECCA.md §3) and the batch columns it reads."""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from ray.rllib.algorithms.ppo.ppo_learner import LEARNER_RESULTS_KL_KEY
from ray.rllib.core.columns import Columns
from ray.rllib.core.learner.learner import ENTROPY_KEY, POLICY_LOSS_KEY, VF_LOSS_KEY

from mecca_rllib.policies.connectors import ADVANTAGES, LOSS_MASK, VALUE_TARGETS
from mecca_rllib.policies.distribution import VoxelCategorical
from mecca_rllib.policies.learner_core import masked_mean, normalized


def voxel_ppo_loss(
    *,
    logits: torch.Tensor,
    old_logits: torch.Tensor,
    actions: torch.Tensor,
    behaviour_logp: torch.Tensor,
    advantages: torch.Tensor,
    values: torch.Tensor,
    value_targets: torch.Tensor,
    mask: torch.Tensor,
    clip_param: float,
    vf_clip_param: float,
    vf_loss_coeff: float,
    entropy_coeff: float,
    normalize_advantages: bool = True,
    is_ratio_clip: float | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """PPO's clipped surrogate per voxel (no KL term; returned as a stat for the caller).

    Shapes: ``logits, old_logits (B, 6, D, H, W)``; ``actions (B, D, H, W)``;
    ``behaviour_logp, advantages, values, value_targets, mask (B, N)``.
    ``is_ratio_clip=None`` (PPO): ratio pi/pi_behaviour. A float (APPO): ratio
    ``clamp(pi_old/pi_behaviour, 0, is_ratio_clip) * pi/pi_old`` with pi_old the target net.
    Returns ``(loss, stats)``; every term is a mean over masked voxels (MECCA.md §3).
    """
    curr = VoxelCategorical(logits)
    old = VoxelCategorical(old_logits)
    logp = curr.logp(actions)  # (B, N)
    if is_ratio_clip is None:
        ratio = torch.exp(logp - behaviour_logp)
    else:
        old_logp = old.logp(actions)
        is_ratio = torch.clamp(torch.exp(old_logp - behaviour_logp), 0.0, is_ratio_clip)
        ratio = is_ratio * torch.exp(logp - old_logp)
    adv = advantages.detach()
    if normalize_advantages:
        adv = normalized(adv, mask, eps=1e-4)
    surrogate = torch.min(adv * ratio, adv * torch.clamp(ratio, 1.0 - clip_param, 1.0 + clip_param))
    vf_loss = (values - value_targets) ** 2
    vf_clipped = torch.clamp(vf_loss, 0.0, vf_clip_param)
    entropy = curr.entropy()  # (B, N)
    # KL(old || curr) per voxel from log-softmax: finite where a probability underflows to 0
    # (torch's categorical KL is inf there, which made APPO's mean_kl_loss inf at times).
    log_old, log_curr = torch.log_softmax(old_logits, dim=1), torch.log_softmax(logits, dim=1)
    kl = (log_old.exp() * (log_old - log_curr)).sum(1).flatten(1)  # (B, N)
    loss = masked_mean(-surrogate + vf_loss_coeff * vf_clipped - entropy_coeff * entropy, mask)
    stats = {
        POLICY_LOSS_KEY: masked_mean(-surrogate, mask),
        VF_LOSS_KEY: masked_mean(vf_clipped, mask),
        ENTROPY_KEY: masked_mean(entropy, mask),
        LEARNER_RESULTS_KL_KEY: masked_mean(kl, mask),
        "clip_fraction": masked_mean(((ratio - 1.0).abs() > clip_param).float(), mask),
    }
    return loss, stats


def voxel_columns(batch: Mapping[str, Any], fwd_out: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    """The keyword arguments of :func:`voxel_ppo_loss` that come from the batch and the
    train forward (all but ``old_logits``), reshaped to ``(B, N)`` where per voxel."""
    b = batch[Columns.OBS].shape[0]
    return dict(
        logits=fwd_out[Columns.ACTION_DIST_INPUTS],
        actions=batch[Columns.ACTIONS],
        behaviour_logp=batch[Columns.ACTION_LOGP].reshape(b, -1),
        advantages=batch[ADVANTAGES].reshape(b, -1),
        values=fwd_out[Columns.VF_PREDS].reshape(b, -1),
        value_targets=batch[VALUE_TARGETS].reshape(b, -1),
        mask=batch[LOSS_MASK].reshape(b, -1),
    )
