"""Simulated labels for unlabeled volumes (MECCA.md §5, Eqs. 10-11, Algorithm 1).

An unlabeled episode trains the segmentation network against the label its own confidence
network implies: each action is *calibrated* by its confidence c (kept when c >= 0.5,
flipped otherwise) and the calibrated direction is the simulated label. Only voxels whose
confidence is decisive, ``max(c, 1 - c) > delta``, pass the gradient mask; ``delta`` grows
with the epochs trained. The confidence network itself never trains on them.

Arrays are ``(T, N)`` per episode (steps x voxels) or anything that broadcasts.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from mecca_rllib.envs.rollout import EnvEpisode, StepOutput, action_values, play_episode, policy_step
from mecca_rllib.policies.connectors import EpisodeLabels, labels_from_infos

__all__ = [
    "DeltaSchedule",
    "SimulatedLabelProvider",
    "gradient_mask",
    "simulated_label",
    "simulated_label_agreement",
]


def simulated_label(action_values: torch.Tensor, confidence: torch.Tensor) -> torch.Tensor:
    """y_sim = 1 where the calibrated action is positive, else 0 (MECCA.md §5, Eqs. 10-11).

    ``(a > 0 and c >= 0.5) or (a < 0 and c < 0.5)``; ``action_values`` in probability units
    (never 0, MECCA.md §1) and ``confidence`` in [0, 1] broadcast; returns float {0., 1.}.
    """
    keep = confidence >= 0.5
    return ((action_values > 0) & keep | (action_values < 0) & ~keep).to(confidence.dtype)


def gradient_mask(confidence: torch.Tensor, delta: float) -> torch.Tensor:
    """M = 1[max(c, 1 - c) > delta] (MECCA.md §5): float {0., 1.} of ``confidence``'s shape."""
    return (torch.maximum(confidence, 1.0 - confidence) > delta).to(confidence.dtype)


@dataclass(frozen=True)
class DeltaSchedule:
    """delta(epoch) = min(start + growth * epoch, maximum) (MECCA.md §5, §6).

    ``epoch`` = completed passes over the training set: ``episodes_trained //
    episodes_per_epoch`` (an integer, so delta is constant within an epoch).
    """

    start: float = 0.85
    growth: float = 0.00025
    maximum: float = 0.99
    episodes_per_epoch: int = 64

    def __post_init__(self) -> None:
        if not 0.5 <= self.start <= 1.0 or not 0.5 <= self.maximum <= 1.0:
            raise ValueError(f"delta_start and delta_max must be in [0.5, 1], got {self.start}, {self.maximum}")
        if self.growth < 0 or not math.isfinite(self.growth):
            raise ValueError(f"delta_growth must be a finite number >= 0, got {self.growth}")
        if int(self.episodes_per_epoch) != self.episodes_per_epoch or self.episodes_per_epoch < 1:
            raise ValueError(f"episodes_per_epoch must be an integer >= 1, got {self.episodes_per_epoch}")

    def epoch(self, episodes_trained: int) -> int:
        """Completed epochs after ``episodes_trained`` episodes went through the learner."""
        return int(episodes_trained) // int(self.episodes_per_epoch)

    def __call__(self, episodes_trained: int) -> float:
        """delta after ``episodes_trained`` episodes (clipped to ``maximum``)."""
        return float(min(self.start + self.growth * self.epoch(episodes_trained), self.maximum))


class SimulatedLabelProvider:
    """Label provider (``policies.connectors.LabelProvider``) for MECCA.md §5.

    Labeled episodes: the env's ``info["label"]``, mask 1, confidence net trained.
    Unlabeled episodes (``info["unlabeled"]``): y_sim from the module's confidence of the
    taken actions at its current weights (no gradient), mask M with the current ``delta``,
    confidence net not trained. Nothing but observations and actions is read from them.
    The learner sets ``delta`` before every update (``MECCATorchLearner``).
    """

    def __init__(self, delta: float = 0.85) -> None:
        self.delta = float(delta)

    def __call__(
        self, episode: Any, *, observations: torch.Tensor, action_values: torch.Tensor, module: Any, **_: Any
    ) -> EpisodeLabels | None:
        """observations ``(T+1, 3, D, H, W)``, action_values ``(T, N)`` -> labels and mask ``(T, N)``."""
        if not episode.get_infos(0).get("unlabeled", False):
            return labels_from_infos(episode, observations=observations)
        obs = observations[:-1]
        t = obs.shape[0]
        with torch.no_grad():
            c = module.confidence(obs, action_values.reshape(t, *obs.shape[2:])).reshape(t, -1)
        return EpisodeLabels(
            label=simulated_label(action_values, c),
            mask=gradient_mask(c, self.delta),
            trains_confidence=False,
        )


@torch.no_grad()
def simulated_label_agreement(
    module: Any, env: Any, *, delta: float, episodes: int = 4, seed: int = 0
) -> dict[str, float]:
    """Env-side monitoring: how often y_sim matches the hidden truth on unlabeled cases.

    Plays ``episodes`` episodes (sampled actions, like training) of ``env`` (an
    ``InteractiveSegEnv``) on its unlabeled cases, reading the truth through ``env.label``,
    which training never sees. Returns ``agreement`` (all voxels), ``masked_agreement``
    (voxels with M = 1; NaN if none) and ``mask_fraction``; empty if no case is unlabeled.
    ``module`` needs ``policy_logits`` and ``confidence``; the episodes are the rollout
    core's (:func:`mecca_rllib.envs.rollout.play_episode`).
    """
    unlabeled = np.flatnonzero(~np.asarray(env.source.labeled, dtype=bool))
    if len(unlabeled) == 0:
        return {}
    generator = torch.Generator().manual_seed(int(seed))

    def sampled(obs: np.ndarray, **_: bool) -> StepOutput:  # actions as in training
        return policy_step(module, obs, explore=True, generator=generator, with_confidence=True)

    agree = agree_masked = masked = total = 0.0
    was_training = module.training
    module.eval()
    try:
        for i in range(episodes):
            episode = EnvEpisode(env, seed=int(seed) + i,
                                 options={"case": int(unlabeled[i % len(unlabeled)])})
            truth = torch.from_numpy(np.asarray(env.label, dtype=np.float32))[None]
            for rec in play_episode(episode, sampled):
                a = action_values(torch.from_numpy(rec.out.actions))[None]
                c = torch.from_numpy(rec.out.confidence)[None]
                hit = (simulated_label(a, c) == truth).float()
                m = gradient_mask(c, delta)
                agree += hit.sum().item()
                agree_masked += (hit * m).sum().item()
                masked += m.sum().item()
                total += hit.numel()
    finally:
        if was_training:
            module.train()
    return {
        "agreement": agree / total,
        "masked_agreement": agree_masked / masked if masked else float("nan"),
        "mask_fraction": masked / total,
    }
