"""Learner connector piece adding MECCA's per-voxel columns to the train batch (MECCA.md §3).

Placed last in the learner pipeline (after batching and ``NumpyToTensor``), it reads the
complete episodes the batch came from: the p channel of consecutive observations and the
label from the episode's infos (through a *label provider*), and adds per-voxel ``(B, N)``
columns, ``N = D * H * W``. Rewards, returns and advantages need the module's values (and,
for the confidence weighting, its confidence); two placements:

- ``module_terms="connector"`` (PPO/APPO, whose advantages stay fixed over epochs): the
  connector runs the module without gradients and adds the columns below;
- ``module_terms="loss"`` (MECCA's A2C, one forward per update): the connector adds the
  reward inputs (``p_next``, ``reward_labels``, ``episode_id``, ``episode_step``) and the
  learner computes the same columns with :meth:`RewardShaping.targets` from its own train forward.

Columns:

- ``advantages``, ``value_targets``: discounted (gamma) returns over the remaining steps of
  the episode, or GAE, of the shaped rewards (MECCA.md §3, Eqs. 3-5, 8-9);
- ``conf_targets``: c_hat of Eq. 7;
- ``voxel_loss_mask``: 1 where the voxel trains the segmentation losses (0 for whole
  episodes the provider returns None for; MECCA.md §5 gradient mask M for simulated labels);
- ``conf_loss_mask``: the same for the confidence loss (0 where the provider says the
  episode must not train the confidence network, MECCA.md §5).
"""
from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from ray.rllib.connectors.connector_v2 import ConnectorV2
from ray.rllib.core.columns import Columns
from ray.rllib.evaluation.postprocessing import Postprocessing

from mecca_rllib.policies.returns import EPS, advantages_and_targets, confidence_targets
from mecca_rllib.policies.reward_shaping import ShapingInputs, Weighting, get_weighting, side_terms

ADVANTAGES = Postprocessing.ADVANTAGES  # (B, N)
VALUE_TARGETS = Postprocessing.VALUE_TARGETS  # (B, N)
CONF_TARGETS = "conf_targets"  # (B, N) in {0, 1}
LOSS_MASK = "voxel_loss_mask"  # (B, N) in [0, 1]; not RLlib's per-row Columns.LOSS_MASK
CONF_LOSS_MASK = "conf_loss_mask"  # (B, N) in [0, 1]: voxels training the confidence net
P_NEXT = "p_next"  # (B, N): p after the row's action (the next observation's p channel)
REWARD_LABELS = "reward_labels"  # (B, N): the targets rewards are computed against
EPISODE_ID = "episode_id"  # (B,) int64: rows of one episode share it (contiguous)
EPISODE_STEP = "episode_step"  # (B,) int64: interaction step of the row, 0 = first action
MODULE_TERMS = ("connector", "loss")


@dataclass
class EpisodeLabels:
    """Per-step targets of one episode: ``label`` and ``mask``, both float ``(T, N)``;
    ``trains_confidence=False`` keeps the episode out of the confidence loss (MECCA.md §5)."""

    label: torch.Tensor
    mask: torch.Tensor
    trains_confidence: bool = True


LabelProvider = Callable[..., "EpisodeLabels | None"]
"""``provider(episode, *, observations (T+1, C, D, H, W), action_values (T, N),
module) -> EpisodeLabels | None`` (None: the episode trains nothing)."""


def labels_from_infos(episode: Any, *, observations: torch.Tensor, **_: Any) -> EpisodeLabels | None:
    """Default provider: the env's ground truth ``info["label"]`` (uint8 ``(D, H, W)``);
    None for episodes whose infos say ``"unlabeled"`` or carry no label."""
    info = episode.get_infos(0)
    label = info.get("label")
    if info.get("unlabeled", False) or label is None:
        return None
    t = observations.shape[0] - 1
    # float32 copy of the (read-only) label: one voxel row, shared by the T steps
    flat = torch.as_tensor(np.asarray(label, np.float32).reshape(1, -1), device=observations.device)
    flat = flat.expand(t, -1)
    return EpisodeLabels(label=flat, mask=torch.ones_like(flat))


class AddMECCATrainColumns(ConnectorV2):
    """Adds MECCA's per-voxel ``(B, N)`` columns (see the module docstring).

    Requires complete episodes (``batch_mode="complete_episodes"``) and a batch already
    converted to tensors, rows in episode order (RLlib's default learner pipeline).
    """

    def __init__(
        self,
        input_observation_space=None,
        input_action_space=None,
        *,
        gamma: float,
        gae_lambda: float | None = None,
        reward_weighting: str | Weighting = "confidence",
        weighting_params: Mapping[str, Any] | None = None,
        voxel_mean_reward: bool = False,
        side_reward: float = 0.0,
        switch_cost: float = 0.0,
        label_provider: LabelProvider | None = None,
        eps: float = EPS,
        module_terms: str = "connector",
        **kwargs,
    ) -> None:
        super().__init__(input_observation_space, input_action_space, **kwargs)
        if module_terms not in MODULE_TERMS:
            raise ValueError(f"module_terms must be one of {MODULE_TERMS}, got {module_terms!r}")
        self.shaping = RewardShaping(
            gamma=float(gamma), gae_lambda=gae_lambda,
            weighting=reward_weighting if isinstance(reward_weighting, Weighting) else get_weighting(reward_weighting),
            params=dict(weighting_params or {}), voxel_mean_reward=voxel_mean_reward,
            side_reward=float(side_reward), switch_cost=float(switch_cost), eps=eps,
        )  # fmt: skip
        self.label_provider = label_provider or labels_from_infos
        self.module_terms = module_terms

    @property
    def weighting(self) -> Weighting:
        return self.shaping.weighting

    def __call__(self, *, rl_module, batch, episodes, metrics=None, **kwargs):
        episodes = list(self.single_agent_episode_iterator(episodes, agents_that_stepped_only=False))
        for module_id, module_batch in batch.items():
            module = rl_module[module_id]
            module = module.unwrapped() if hasattr(module, "unwrapped") else module
            mine = [e for e in episodes if e.module_id in (None, module_id)]
            columns, stats = self._columns(module, module_batch, mine)
            module_batch.update(columns)
            if metrics is not None:
                for key, value in stats.items():
                    metrics.log_value((module_id, key), value, window=1)
        return batch

    @torch.no_grad()
    def _columns(self, module, module_batch: dict, episodes: list) -> tuple[dict, dict]:
        obs = module_batch[Columns.OBS]  # (B, C, D, H, W)
        b = obs.shape[0]
        lengths = [len(e) for e in episodes]
        if sum(lengths) != b:
            raise ValueError(
                f"MECCA learner connector: batch has {b} rows but the episodes hold "
                f"{sum(lengths)} steps; MECCA needs complete episodes in episode order"
            )
        action_values = module.action_values_of(module_batch[Columns.ACTIONS]).reshape(b, -1)
        zeros = torch.zeros((b, action_values.shape[1]), device=obs.device)
        p_next, labels_t, mask, conf_mask = zeros.clone(), zeros.clone(), zeros.clone(), zeros.clone()
        episode_id = torch.repeat_interleave(torch.arange(len(lengths)), torch.tensor(lengths)).to(obs.device)
        episode_step = torch.cat([torch.arange(t) for t in lengths]).to(obs.device) if lengths else episode_id
        unlabeled_masks, start, trained = [], 0, torch.zeros(len(lengths), dtype=torch.bool)
        for i, (episode, t) in enumerate(zip(episodes, lengths)):
            rows = slice(start, start + t)
            start += t
            ep_obs = torch.from_numpy(np.array(episode.get_observations(slice(0, t + 1)))).to(obs.device)
            p_next[rows] = ep_obs[1:, 1].reshape(t, -1)  # p channel of the next observations
            labels = self.label_provider(
                episode, observations=ep_obs, action_values=action_values[rows], module=module
            )
            if labels is None:  # nothing to learn from: zero loss masks
                continue
            labels_t[rows], mask[rows], trained[i] = labels.label, labels.mask, True
            if labels.trains_confidence:
                conf_mask[rows] = labels.mask
            else:  # MECCA.md §5: simulated targets never train the confidence net
                unlabeled_masks.append(labels.mask.mean().item())
        labeled = int(trained.sum()) - len(unlabeled_masks)  # episodes training the confidence net
        stats = {"labeled_episode_fraction": labeled / max(len(episodes), 1)}
        if unlabeled_masks:  # fraction of unlabeled voxels passing the gradient mask
            stats["unlabeled_mask_fraction"] = float(np.mean(unlabeled_masks))
        columns = {
            CONF_TARGETS: confidence_targets(action_values, labels_t),  # Eq. 7
            LOSS_MASK: mask, CONF_LOSS_MASK: conf_mask, EPISODE_ID: episode_id, EPISODE_STEP: episode_step,
            P_NEXT: p_next, REWARD_LABELS: labels_t,
        }  # fmt: skip
        if self.module_terms == "loss":
            return columns, stats
        values = module.values(obs).reshape(b, -1)
        confidence = None
        if self.weighting.needs_confidence:
            confidence = module.confidence(obs, action_values.reshape(b, *obs.shape[2:])).reshape(b, -1)
        adv, targets, gain = self.shaping.targets(
            p_prev=obs[:, 1].reshape(b, -1), p_next=p_next, label=labels_t, values=values,
            confidence=confidence, episode_id=episode_id, mask=mask,
        )  # fmt: skip
        columns.update({ADVANTAGES: adv, VALUE_TARGETS: targets})
        if mask.any():
            stats["mean_gain"] = float(gain)
        return columns, stats


@dataclass
class RewardShaping:
    """Rewards (MECCA.md §3, Eq. 8), returns and advantages (Eqs. 3-5) of a batch of
    complete episodes: one place for the connector and the learner."""

    gamma: float
    gae_lambda: float | None
    weighting: Weighting
    params: dict
    voxel_mean_reward: bool = False
    side_reward: float = 0.0
    switch_cost: float = 0.0
    eps: float = EPS

    def targets(
        self, *, p_prev: torch.Tensor, p_next: torch.Tensor, label: torch.Tensor, values: torch.Tensor,
        confidence: torch.Tensor | None, episode_id: torch.Tensor, mask: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(advantages, value_targets, mean gain)``, ``(B, N)``, ``(B, N)`` and a scalar.

        Inputs are ``(B, N)`` rows of complete episodes (contiguous, in step order) with
        ``episode_id (B,)``; episodes whose loss ``mask`` is all zero train nothing and get
        zero advantages and targets. ``values`` and ``confidence`` carry no gradient.
        """
        adv, targets = torch.zeros_like(values), torch.zeros_like(values)
        _, counts = torch.unique_consecutive(episode_id, return_counts=True)
        start, gains = 0, []
        for t in counts.tolist():
            rows = slice(start, start + t)
            start += t
            if not bool(mask[rows].any()):
                continue
            inputs = ShapingInputs(
                p_prev=p_prev[rows], p_next=p_next[rows], label=label[rows],
                confidence=None if confidence is None else confidence[rows], eps=self.eps,
            )  # fmt: skip
            rewards = self.weighting(inputs, self.params)  # MECCA.md §3, Eq. 8
            if self.side_reward or self.switch_cost:
                rewards = rewards + side_terms(inputs, self.side_reward, self.switch_cost)
            if self.voxel_mean_reward:
                rewards = rewards.mean(dim=1, keepdim=True).expand_as(rewards).contiguous()
            adv[rows], targets[rows] = advantages_and_targets(rewards, values[rows], self.gamma, self.gae_lambda)
            gains.append(inputs.gain.mean())
        gain = torch.stack(gains).mean() if gains else torch.zeros((), device=values.device)
        return adv, targets, gain
