"""What the policy does, per interaction step: the numbers behind a collapse (issue 14).

All functions take the rows of a train batch, ``(B, N)`` per-voxel tensors with the row's
interaction step ``(B,)``, and return plain floats keyed ``step{t}/<name>``.
"""
from __future__ import annotations

import torch

from mecca_rllib.envs import ACTION_VALUES
from mecca_rllib.policies.reward_shaping import CONFIDENCE_SKILLS, ShapingInputs

# The policy counts as collapsed when (almost) every voxel ends on one side of p = 0.5 or
# its per-voxel entropy falls below this (nats; log 6 = 1.79 is uniform over the 6 actions).
COLLAPSE_FOREGROUND = (0.001, 0.999)
COLLAPSE_ENTROPY = 0.05


def _masked_mean(x: torch.Tensor, mask: torch.Tensor) -> float:
    return float((x * mask).sum() / mask.sum().clamp_min(1.0))


@torch.no_grad()
def step_diagnostics(
    *,
    step: torch.Tensor,
    actions: torch.Tensor,
    p_prev: torch.Tensor,
    p_next: torch.Tensor,
    label: torch.Tensor,
    mask: torch.Tensor,
    entropy: torch.Tensor,
    conf_correct: torch.Tensor | None = None,
    conf_mask: torch.Tensor | None = None,
    confidence: torch.Tensor | None = None,
) -> dict[str, float]:
    """Per step t: ``action_share_{+0.4,...}`` (share of voxels taking each action),
    ``mean_abs_dp`` (mean |p_next - p_prev|), ``foreground_share`` (share with
    p_next > 0.5), ``entropy`` (nats), ``misunderstanding`` (share of moved voxels that
    moved against their label, MECCA.md §1 / the paper's Definition 1), and
    ``confidence_accuracy`` (C(s, a) > 0.5 matching Eq. 7's target, labeled voxels only),
    and with ``confidence`` (C(s, a) of the taken actions, ``(B, N)``) the confidence gate's
    skill by each scoring (``confidence_skill_accuracy``, ``_brier``, ``_auc``; the
    mean over the step's rows, ``reward_shaping.CONFIDENCE_SKILLS``).

    Voxels count where ``mask`` > 0 (the segmentation-loss mask). ``actions (B, N)``
    integer indices; ``conf_correct (B, N)`` float {0, 1} and its ``conf_mask``.
    """
    out: dict[str, float] = {}
    for t in torch.unique(step).tolist():
        rows = step == t
        m = mask[rows]
        if not bool(m.any()):
            continue
        key = f"step{t}/"
        a = actions[rows].long()
        for k, value in enumerate(ACTION_VALUES):
            out[f"{key}action_share_{value:+.1f}"] = _masked_mean((a == k).float(), m)
        dp = p_next[rows] - p_prev[rows]
        out[key + "mean_abs_dp"] = _masked_mean(dp.abs(), m)
        out[key + "foreground_share"] = _masked_mean((p_next[rows] > 0.5).float(), m)
        out[key + "entropy"] = _masked_mean(entropy[rows], m)
        y = label[rows] > 0.5
        wrong = ((dp < 0) & y) | ((dp > 0) & ~y)
        out[key + "misunderstanding"] = _masked_mean(wrong.float(), m * (dp != 0).float())
        if conf_correct is not None and conf_mask is not None and bool(conf_mask[rows].any()):
            out[key + "confidence_accuracy"] = _masked_mean(conf_correct[rows], conf_mask[rows])
        if confidence is not None:
            gain = ShapingInputs(p_prev=p_prev[rows], p_next=p_next[rows], label=label[rows]).gain
            gain = gain * (m > 0)  # masked voxels count as unmoved
            for name, score in CONFIDENCE_SKILLS.items():
                out[f"{key}confidence_skill_{name}"] = float(score(confidence[rows], gain).mean())
    return out


def collapse_reason(foreground_share: float, entropy: float) -> str | None:
    """Why the policy looks collapsed (all background / all foreground / no entropy), or None."""
    low, high = COLLAPSE_FOREGROUND
    if foreground_share < low:
        return f"all background: {100 * foreground_share:.2f} % of voxels end as foreground"
    if foreground_share > high:
        return f"all foreground: {100 * foreground_share:.2f} % of voxels end as foreground"
    if entropy < COLLAPSE_ENTROPY:
        return f"entropy {entropy:.3f} nats < {COLLAPSE_ENTROPY}: the policy is deterministic"
    return None
