"""Learner connector piece adding MECCA's per-voxel columns to the train batch (MECCA.md §3).

Placed last in the learner pipeline (after batching and ``NumpyToTensor``), it reads the
complete episodes the batch came from: the p channel of consecutive observations and the
label from the episode's infos (through a *label provider*), calls the module without
gradients for the action confidence and the value map, and adds per-voxel ``(B, N)``
columns, ``N = D * H * W``:

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
from mecca_rllib.policies.reward_shaping import ShapingInputs, Weighting, get_weighting

ADVANTAGES = Postprocessing.ADVANTAGES  # (B, N)
VALUE_TARGETS = Postprocessing.VALUE_TARGETS  # (B, N)
CONF_TARGETS = "conf_targets"  # (B, N) in {0, 1}
LOSS_MASK = "voxel_loss_mask"  # (B, N) in [0, 1]; not RLlib's per-row Columns.LOSS_MASK
CONF_LOSS_MASK = "conf_loss_mask"  # (B, N) in [0, 1]: voxels training the confidence net


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
    """Adds ``advantages``, ``value_targets``, ``conf_targets`` and ``voxel_loss_mask`` ``(B, N)``.

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
        label_provider: LabelProvider | None = None,
        eps: float = EPS,
        **kwargs,
    ) -> None:
        super().__init__(input_observation_space, input_action_space, **kwargs)
        self.gamma = float(gamma)
        self.gae_lambda = gae_lambda
        self.weighting = (
            reward_weighting if isinstance(reward_weighting, Weighting) else get_weighting(reward_weighting)
        )
        self.weighting_params = dict(weighting_params or {})
        self.voxel_mean_reward = voxel_mean_reward
        self.label_provider = label_provider or labels_from_infos
        self.eps = eps

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
        obs = module_batch[Columns.OBS]  # (B, 3, D, H, W)
        b = obs.shape[0]
        lengths = [len(e) for e in episodes]
        if sum(lengths) != b:
            raise ValueError(
                f"MECCA learner connector: batch has {b} rows but the episodes hold "
                f"{sum(lengths)} steps; MECCA needs complete episodes in episode order"
            )
        action_values = module.action_values_of(module_batch[Columns.ACTIONS]).reshape(b, -1)
        values = module.values(obs).reshape(b, -1)
        confidence = None
        if self.weighting.needs_confidence:
            confidence = module.confidence(obs, action_values.reshape(b, *obs.shape[2:])).reshape(b, -1)

        zeros = torch.zeros_like(values)
        adv, targets, conf_t, mask = zeros.clone(), zeros.clone(), zeros.clone(), zeros.clone()
        conf_mask = zeros.clone()
        gains, unlabeled_masks, start = [], [], 0
        for episode, t in zip(episodes, lengths):
            rows = slice(start, start + t)
            start += t
            ep_obs = torch.from_numpy(np.array(episode.get_observations(slice(0, t + 1)))).to(obs.device)
            labels = self.label_provider(
                episode, observations=ep_obs, action_values=action_values[rows], module=module
            )
            if labels is None:  # nothing to learn from: zero loss mask, zero targets
                continue
            p = ep_obs[:, 1].reshape(t + 1, -1)  # p channel of consecutive observations
            inputs = ShapingInputs(
                p_prev=p[:-1], p_next=p[1:], label=labels.label,
                confidence=None if confidence is None else confidence[rows], eps=self.eps,
            )
            rewards = self.weighting(inputs, self.weighting_params)  # MECCA.md §3, Eq. 8
            if self.voxel_mean_reward:
                rewards = rewards.mean(dim=1, keepdim=True).expand_as(rewards).contiguous()
            adv[rows], targets[rows] = advantages_and_targets(
                rewards, values[rows], self.gamma, self.gae_lambda
            )
            conf_t[rows] = confidence_targets(action_values[rows], labels.label)  # Eq. 7
            mask[rows] = labels.mask
            if labels.trains_confidence:
                conf_mask[rows] = labels.mask
            else:  # MECCA.md §5: simulated targets never train the confidence net
                unlabeled_masks.append(labels.mask.mean().item())
            gains.append(inputs.gain.mean().item())
        labeled = len(gains) - len(unlabeled_masks)  # episodes training the confidence net
        stats = {"labeled_episode_fraction": labeled / max(len(episodes), 1)}
        if gains:
            stats["mean_gain"] = float(np.mean(gains))
        if unlabeled_masks:  # fraction of unlabeled voxels passing the gradient mask
            stats["unlabeled_mask_fraction"] = float(np.mean(unlabeled_masks))
        columns = {ADVANTAGES: adv, VALUE_TARGETS: targets, CONF_TARGETS: conf_t, LOSS_MASK: mask,
                   CONF_LOSS_MASK: conf_mask}
        return columns, stats
