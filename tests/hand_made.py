"""Hand-made MECCA modules and complete episodes for connector/learner tests (no Ray cluster)."""
from __future__ import annotations

import gymnasium as gym
import numpy as np
import torch
from ray.rllib.env.single_agent_episode import SingleAgentEpisode

from mecca_rllib.envs import ACTION_VALUES
from mecca_rllib.policies.rl_module import MECCATorchRLModule

TINY = {"width": 4, "dilations": (1, 1, 1, 1, 1), "conf_dilations": (1,) * 6}


def tiny_module(shape: tuple[int, int, int]) -> MECCATorchRLModule:
    """A seeded width-4 MECCA module for volumes of ``shape`` (D, H, W)."""
    torch.manual_seed(0)
    return MECCATorchRLModule(
        observation_space=gym.spaces.Box(-np.inf, np.inf, (3, *shape), np.float32),
        action_space=gym.spaces.MultiDiscrete(np.full(shape, 6)),
        model_config=dict(TINY),
    )


def hand_made_episode(seed: int, unlabeled: bool, shape: tuple[int, int, int], steps: int):
    """A complete episode of ``steps`` random actions on a random volume.

    Returns ``(episode, observations, actions, label)``: the numpy episode, the ``steps + 1``
    observations ``(3, D, H, W)``, the ``steps`` uint8 action maps and the uint8 label.
    """
    rng = np.random.default_rng(seed)
    label = (rng.random(shape) > 0.5).astype(np.uint8)
    p = np.full(shape, 0.5, np.float32)
    obs, actions = [], []
    for t in range(steps + 1):
        obs.append(np.stack([rng.standard_normal(shape).astype(np.float32), p, np.zeros(shape, np.float32)]))
        if t < steps:
            actions.append(rng.integers(0, 6, shape).astype(np.uint8))
            p = np.clip(p + ACTION_VALUES[actions[-1]], 0, 1).astype(np.float32)
    info = {"unlabeled": unlabeled, "dice": 0.0}
    if not unlabeled:
        info["label"] = label
    episode = SingleAgentEpisode(
        observations=obs, actions=actions, rewards=[0.0] * steps,
        infos=[dict(info) for _ in range(steps + 1)], truncated=True, len_lookback_buffer=0,
    )
    return episode.to_numpy(), obs, actions, label
