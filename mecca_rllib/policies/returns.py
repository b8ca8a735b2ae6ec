"""Per-voxel learning signals (MECCA.md §3) as plain vectorized tensor functions.

Time runs along axis 0 and voxels along axis 1: arrays are ``(T, N)`` for one episode of
``T`` steps over ``N = D * H * W`` voxels. RLlib's own GAE / value-target helpers are 1-D;
these keep the voxel axis.
"""
from __future__ import annotations

import torch

EPS = 1e-6  # clamp of p inside the cross-entropy, MECCA.md §3


def cross_entropy(p: torch.Tensor, label: torch.Tensor, eps: float = EPS) -> torch.Tensor:
    """chi_i = -y log p - (1 - y) log(1 - p) with p clamped to [eps, 1 - eps] (MECCA.md §3).

    ``p`` and ``label`` broadcast (e.g. ``(T, N)`` and ``(N,)``); returns their broadcast shape.
    """
    p = p.clamp(eps, 1.0 - eps)
    y = label.to(p.dtype)
    return -(y * torch.log(p) + (1.0 - y) * torch.log1p(-p))


def relative_gain(
    p_prev: torch.Tensor, p_next: torch.Tensor, label: torch.Tensor, eps: float = EPS
) -> torch.Tensor:
    """gain_i(t) = chi_i(t-1) - chi_i(t) (MECCA.md §3, Eq. 9): positive when p moved toward y."""
    return cross_entropy(p_prev, label, eps) - cross_entropy(p_next, label, eps)


def confidence_targets(action_values: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
    """c_hat = 1 where the action's direction agrees with the label, else 0 (MECCA.md §3, Eq. 7).

    ``action_values`` in probability units (e.g. -0.2) and ``label`` in {0, 1} broadcast;
    returns float ``{0., 1.}`` of their broadcast shape.
    """
    y = label.to(torch.bool)
    return ((action_values > 0) & y | (action_values < 0) & ~y).to(action_values.dtype)


def discounted_returns(rewards: torch.Tensor, gamma: float) -> torch.Tensor:
    """R_t = sum_k gamma^k r_{t+k} over the remaining steps of the episode (MECCA.md §3, Eqs. 3-5).

    ``rewards (T, N) -> (T, N)``. The episode really ends after step T, so nothing is
    bootstrapped past the last step.
    """
    out = torch.empty_like(rewards)
    running = torch.zeros_like(rewards[0])
    for t in range(rewards.shape[0] - 1, -1, -1):
        running = rewards[t] + gamma * running
        out[t] = running
    return out


def generalized_advantages(
    rewards: torch.Tensor, values: torch.Tensor, gamma: float, lambda_: float
) -> torch.Tensor:
    """Per-voxel GAE: A_t = sum_k (gamma lambda)^k delta_{t+k}, delta_t = r_t + gamma V_{t+1} - V_t.

    ``rewards, values (T, N) -> advantages (T, N)``; ``V_T = 0`` because the episode ends
    at T. ``lambda_ = 1`` gives ``discounted_returns - values``.
    """
    if rewards.shape != values.shape:
        raise ValueError(f"rewards {tuple(rewards.shape)} and values {tuple(values.shape)} differ")
    out = torch.empty_like(rewards)
    running = torch.zeros_like(rewards[0])
    next_value = torch.zeros_like(values[0])
    for t in range(rewards.shape[0] - 1, -1, -1):
        delta = rewards[t] + gamma * next_value - values[t]
        running = delta + gamma * lambda_ * running
        out[t] = running
        next_value = values[t]
    return out


def advantages_and_targets(
    rewards: torch.Tensor, values: torch.Tensor, gamma: float, lambda_: float | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Advantages and value targets, both ``(T, N)``.

    ``lambda_ is None``: A2C as in MECCA.md §3 (target R_t, A_t = R_t - V_t).
    Otherwise GAE with ``lambda_`` (target A_t + V_t).
    """
    if lambda_ is None:
        targets = discounted_returns(rewards, gamma)
        return targets - values, targets
    adv = generalized_advantages(rewards, values, gamma, lambda_)
    return adv, adv + values
