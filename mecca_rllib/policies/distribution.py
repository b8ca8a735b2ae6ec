"""``VoxelCategorical``: one categorical with batch shape ``(B, N)`` over the 6 actions.

RLlib's ``TorchMultiCategorical`` builds one distribution object per voxel (seconds per
call at 30x55x55, FACTS.md); this class wraps a single ``torch.distributions.Categorical``
whose batch shape is ``(B, N)`` with ``N = D * H * W`` voxels.
"""
from __future__ import annotations

import gymnasium as gym
import torch
from ray.rllib.core.distribution.torch.torch_distribution import TorchDistribution

from mecca_rllib.policies.networks import NUM_ACTIONS


class VoxelCategorical(TorchDistribution):
    """Per-voxel categorical over the action indices built from logits ``(B, 6, D, H, W)``.

    ``logp``, ``entropy`` and ``kl`` return ``(B, N)``; ``sample`` returns uint8 ``(B, D, H, W)``.
    """

    def __init__(self, logits: torch.Tensor) -> None:
        if logits.dim() != 5 or logits.shape[1] != NUM_ACTIONS:
            raise ValueError(
                f"VoxelCategorical expects logits of shape (B, {NUM_ACTIONS}, D, H, W), "
                f"got {tuple(logits.shape)}"
            )
        self.logits = logits
        self.spatial_shape = tuple(logits.shape[2:])
        super().__init__(logits=logits)

    def _get_torch_distribution(self, logits: torch.Tensor) -> torch.distributions.Categorical:
        flat = logits.flatten(2).transpose(1, 2)  # (B, N, 6)
        return torch.distributions.Categorical(logits=flat, validate_args=False)

    def logp(self, value: torch.Tensor) -> torch.Tensor:
        """Log-probability of action indices ``(B, D, H, W)`` or ``(B, N)`` -> ``(B, N)``."""
        return self._dist.log_prob(value.reshape(value.shape[0], -1).long())

    def sample(self, *, sample_shape=None) -> torch.Tensor:
        """Action indices, uint8 ``(B, D, H, W)``."""
        if sample_shape:
            raise ValueError("VoxelCategorical.sample does not support sample_shape")
        idx = self._dist.sample()
        return idx.to(torch.uint8).reshape(idx.shape[0], *self.spatial_shape)

    def rsample(self, *, sample_shape=None):
        raise NotImplementedError("VoxelCategorical has no reparameterised sample")

    def to_deterministic(self) -> "VoxelDeterministic":
        """The argmax policy (evaluation)."""
        return VoxelDeterministic(self.logits)

    @staticmethod
    def required_input_dim(space: gym.Space, **kwargs) -> int:
        return NUM_ACTIONS

    @classmethod
    def from_logits(cls, logits: torch.Tensor, **kwargs) -> "VoxelCategorical":
        return cls(logits=logits)


class VoxelDeterministic(VoxelCategorical):
    """Argmax over the 6 actions of every voxel; ``logp`` is that of the underlying categorical."""

    def sample(self, *, sample_shape=None) -> torch.Tensor:
        return self.logits.argmax(dim=1).to(torch.uint8)

    def to_deterministic(self) -> "VoxelDeterministic":
        return self
