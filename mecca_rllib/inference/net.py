"""``InferenceNet``: the parts of a MECCA module a session runs, as plain torch (no Ray).

The same layers and parameter names as ``MECCATorchRLModule`` (MECCA.md §2): ``trunk`` and
``policy_head`` (the policy), ``confidence_net`` (C(s, a)); the value head, which only
training needs, is left out. Built from a ``model_config`` with
:mod:`mecca_rllib.policies.networks`, so loading an export imports neither Ray nor RLlib.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from mecca_rllib.policies.networks import NUM_ACTIONS, ConfidenceNet, Head, dilated_stack, with_keep_side

__all__ = ["INFERENCE_PARTS", "InferenceNet", "inference_state"]

#: Top-level submodules an inference net holds (prefixes of the module's ``state_dict``).
INFERENCE_PARTS = ("trunk", "policy_head", "confidence_net")


def inference_state(module: nn.Module) -> dict[str, torch.Tensor]:
    """The ``state_dict`` entries of ``module`` an :class:`InferenceNet` needs (CPU copies)."""
    return {k: v.detach().cpu().clone() for k, v in module.state_dict().items()
            if k.split(".", 1)[0] in INFERENCE_PARTS}


def network_config(module: Any) -> dict[str, Any]:
    """The ``model_config`` of a MECCA module (defaults resolved) or of an
    :class:`InferenceNet`, with its ``hint_channels``."""
    cfg = module.resolved_model_config() if hasattr(module, "resolved_model_config") else module.model_config
    return {**cfg, "hint_channels": int(getattr(module, "hint_channels", cfg.get("hint_channels") or 1))}


class InferenceNet(nn.Module):
    """Policy trunk + head and confidence net of a MECCA module, duck-typed like the module
    for a session: ``policy_logits``, ``confidence``, ``model_config``, ``hint_channels``.

    ``model_config`` needs ``width``, ``dilations`` (5), ``conf_dilations`` (6),
    ``hint_channels`` and ``shape``; ``dropout`` (0), ``channels_last`` (True) and
    ``keep_side`` (0, the keep-side prior, :func:`~mecca_rllib.policies.networks.with_keep_side`)
    are optional.
    """

    def __init__(self, model_config: dict[str, Any]) -> None:
        super().__init__()
        cfg = dict(model_config)
        try:
            width = int(cfg["width"])
            dilations = tuple(int(d) for d in cfg["dilations"])
            conf_dilations = tuple(int(d) for d in cfg["conf_dilations"])
            self.hint_channels = int(cfg.get("hint_channels") or 1)
        except (KeyError, TypeError, ValueError) as err:
            raise ValueError(f"model_config is missing or has a bad {err}") from None
        if len(dilations) != 5:
            raise ValueError(f"model_config['dilations'] must have 5 values, got {dilations}")
        dropout = float(cfg.get("dropout") or 0.0)
        self.keep_side = float(cfg.get("keep_side") or 0.0)
        in_channels = 2 + self.hint_channels
        self.model_config = cfg
        self.trunk = dilated_stack(in_channels, width, dilations[:3], dropout)
        self.policy_head = Head(width, NUM_ACTIONS, dilations[3:], dropout)
        self.confidence_net = ConfidenceNet(in_channels, width, conf_dilations, dropout,
                                            bool(cfg.get("conf_signed") or False))
        self.memory_format = (torch.channels_last_3d if cfg.get("channels_last", True)
                              else torch.contiguous_format)
        self.to(memory_format=self.memory_format)
        self.eval()

    @classmethod
    def from_module(cls, module: Any) -> InferenceNet:
        """The inference part of a MECCA module (``MECCATorchRLModule``): same weights."""
        net = cls(network_config(module))
        net.load_state_dict(inference_state(module), strict=True)
        return net

    def _in(self, obs: torch.Tensor) -> torch.Tensor:
        return obs.contiguous(memory_format=self.memory_format)

    def policy_logits(self, obs: torch.Tensor) -> torch.Tensor:
        """Per-voxel action logits: ``(B, 2 + C, D, H, W) -> (B, 6, D, H, W)``."""
        return with_keep_side(self.policy_head(self.trunk(self._in(obs))), obs[:, 1], self.keep_side)

    def confidence_logits(self, obs: torch.Tensor, action_values: torch.Tensor) -> torch.Tensor:
        """Logits of C(s, a): ``(B, 2 + C, D, H, W)``, ``(B, D, H, W)`` -> ``(B, D, H, W)``."""
        return self.confidence_net(self._in(obs), action_values)

    def confidence(self, obs: torch.Tensor, action_values: torch.Tensor) -> torch.Tensor:
        """C(s, a) in (0, 1) of action values ``(B, D, H, W)`` (MECCA.md §2)."""
        return torch.sigmoid(self.confidence_logits(obs, action_values))

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.policy_logits(obs)
