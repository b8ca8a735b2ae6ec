"""A minimal RLlib ``MultiAgentEnv`` with one agent per voxel (helper of ``voxel_agents.py``).

``VoxelAgentsEnv`` wraps :class:`~mecca_rllib.envs.InteractiveSegEnv`: agent ``"v{i}"`` is the
voxel at flat index ``i`` of the ``(D, H, W)`` volume. Each agent observes its own voxel's
features (image, p, hint) as a ``Box((3,))`` or, with ``patch=R``, the ``(2R+1)^3`` patch of
those three channels around it (``Box((3 * (2R+1)^3,))``, zero-padded at the border); its
action is ``Discrete(6)`` (the env's ``ACTION_VALUES``) and its reward is its own
cross-entropy gain ``chi(p_t) - chi(p_{t+1})`` (``mecca_rllib.policies.returns.relative_gain``,
MECCA.md §3, Eq. 9). All agents act at every step; the episode is truncated for all of them
(``"__all__"``) after the env's T steps. Infos are empty: the label stays in the env.

This is the textbook RLlib mapping of "every voxel is an agent" and exists to be measured
against the project's tensor-axis path; it is not used by the package.
"""
from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
import torch
from ray.rllib.env.multi_agent_env import MultiAgentEnv

from mecca_rllib.envs import InteractiveSegEnv
from mecca_rllib.envs.spaces import ACTION_VALUES
from mecca_rllib.policies.returns import relative_gain

__all__ = ["VoxelAgentsEnv", "agent_ids"]


def agent_ids(n: int) -> list[str]:
    """``["v0", ..., "v{n-1}"]``: one agent per voxel, flat (C-order) index."""
    return [f"v{i}" for i in range(n)]


class VoxelAgentsEnv(MultiAgentEnv):
    """One RLlib agent per voxel of an ``InteractiveSegEnv`` (see the module docstring).

    ``config``: ``patch`` (0: the voxel's 3 features; R >= 1: a (2R+1)^3 patch) and any
    ``InteractiveSegEnv`` key (``shape``, ``num_cases``, ``seed``, ...).
    """

    def __init__(self, config: dict[str, Any] | None = None) -> None:
        super().__init__()
        config = dict(config or {})
        self.patch = int(config.pop("patch", 0))
        self.inner = InteractiveSegEnv(config)
        self.shape = self.inner.shape
        self.n = int(np.prod(self.shape))
        self.possible_agents = agent_ids(self.n)
        self.agents = list(self.possible_agents)
        channels = self.inner.observation_space.shape[0]
        size = channels * (2 * self.patch + 1) ** 3
        obs_space = gym.spaces.Box(-np.inf, np.inf, (size,), np.float32)
        act_space = gym.spaces.Discrete(len(ACTION_VALUES))
        self.observation_spaces = {aid: obs_space for aid in self.agents}
        self.action_spaces = {aid: act_space for aid in self.agents}
        self._p = None  # current p (N,) float32, torch
        self._label = None  # (N,) uint8, torch

    # ------------------------------------------------------------------ helpers
    def _per_agent_obs(self, obs: np.ndarray) -> dict[str, np.ndarray]:
        """``(C, D, H, W)`` -> ``{agent: (C,) or (C * (2R+1)^3,)}`` (rows of one array)."""
        c = obs.shape[0]
        if self.patch == 0:
            rows = np.ascontiguousarray(obs.reshape(c, -1).T)  # (N, C)
        else:
            r = self.patch
            padded = np.pad(obs, ((0, 0), (r, r), (r, r), (r, r)))
            k = 2 * r + 1
            win = np.lib.stride_tricks.sliding_window_view(padded, (k, k, k), axis=(1, 2, 3))
            # (C, D, H, W, k, k, k) -> (D, H, W, C, k, k, k) -> (N, C * k^3)
            rows = np.ascontiguousarray(np.moveaxis(win, 0, 3)).reshape(self.n, -1)
        return dict(zip(self.agents, rows))

    # ------------------------------------------------------------------ MultiAgentEnv API
    def reset(self, *, seed: int | None = None, options: dict | None = None):
        obs, info = self.inner.reset(seed=seed, options=options)
        self._p = torch.from_numpy(obs[1].reshape(-1).copy())
        label = info.get("label")
        self._label = None if label is None else torch.from_numpy(label.reshape(-1).copy())
        return self._per_agent_obs(obs), {}

    def step(self, action_dict: dict[str, Any]):
        actions = np.fromiter((action_dict[aid] for aid in self.agents), dtype=np.int64,
                              count=self.n).reshape(self.shape)
        obs, _, terminated, truncated, _ = self.inner.step(actions)
        p_next = torch.from_numpy(obs[1].reshape(-1).copy())
        if self._label is None:  # unlabeled volume: no per-voxel reward in this sketch
            gain = np.zeros(self.n, np.float32)
        else:
            gain = relative_gain(self._p, p_next, self._label).numpy()  # (N,), MECCA.md §3
        self._p = p_next
        rewards = dict(zip(self.agents, gain.tolist()))
        return (
            self._per_agent_obs(obs),
            rewards,
            {"__all__": bool(terminated)},
            {"__all__": bool(truncated)},
            {},
        )
