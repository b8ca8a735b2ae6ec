"""P-Net-style resolution-preserving dilated 3D CNNs (MECCA.md §2).

Every network here is fully convolutional: one set of weights serves any volume shape
``(D, H, W)``. Tensors are ``(B, C, D, H, W)`` float32.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from mecca_rllib.envs.spaces import ACTION_VALUES

NUM_ACTIONS = 6  # |A| = |{-0.4, -0.2, -0.1, +0.1, +0.2, +0.4}|, MECCA.md §1
#: p is clamped to [KEEP_SIDE_CLAMP, 1 - KEEP_SIDE_CLAMP] before its log-odds (logit(0) is -inf).
KEEP_SIDE_CLAMP = 0.05


def dilated_block(in_channels: int, width: int, dilation: int, dropout: float = 0.0) -> nn.Sequential:
    """Two 3x3x3 convolutions with the same dilation (padding = dilation) + ReLU each.

    Resolution preserving: ``(B, in_channels, D, H, W) -> (B, width, D, H, W)``.
    """
    layers: list[nn.Module] = [
        nn.Conv3d(in_channels, width, 3, padding=dilation, dilation=dilation),
        nn.ReLU(inplace=True),
        nn.Conv3d(width, width, 3, padding=dilation, dilation=dilation),
        nn.ReLU(inplace=True),
    ]
    if dropout > 0:
        layers.append(nn.Dropout3d(dropout))
    return nn.Sequential(*layers)


def dilated_stack(
    in_channels: int, width: int, dilations: Sequence[int], dropout: float = 0.0
) -> nn.Sequential:
    """``len(dilations)`` dilated blocks in sequence: ``(B, in, D, H, W) -> (B, width, D, H, W)``."""
    blocks = [
        dilated_block(in_channels if i == 0 else width, width, int(d), dropout)
        for i, d in enumerate(dilations)
    ]
    return nn.Sequential(*blocks)


def xavier_init(module: nn.Module) -> None:
    """Xavier-uniform weights and zero biases for every convolution (MECCA.md §2).

    Convolutions followed by a ReLU (kernel > 1) use the ReLU gain sqrt(2) so that the
    signal does not fade through the 6-12 layer stacks; 1x1x1 output layers use gain 1.
    """
    relu_gain = nn.init.calculate_gain("relu")
    for m in module.modules():
        if isinstance(m, nn.Conv3d):
            nn.init.xavier_uniform_(m.weight, gain=relu_gain if m.kernel_size[0] > 1 else 1.0)
            if m.bias is not None:
                nn.init.zeros_(m.bias)


def with_keep_side(logits: torch.Tensor, p: torch.Tensor, strength: float) -> torch.Tensor:
    """Action logits ``(B, 6, D, H, W)`` plus the keep-side prior ``strength * (a / 0.4) *
    logit(p)``, p ``(B, D, H, W)`` clamped to [0.05, 0.95] (README "Eighth round").

    A project option, not in MECCA.md: with it the policy's logits are an update of the
    voxel's current log-odds (a warm-started head's ``(a / 0.4) z`` becomes ``(a / 0.4)
    (z + strength logit(p))``), so a voxel the network is unsure of (z near 0) keeps moving to
    the side of 0.5 it is on instead of hopping across 0.5 every other step. 0: the plain
    policy (the same tensor back)."""
    if not strength:
        return logits
    units = torch.as_tensor(ACTION_VALUES / ACTION_VALUES.max(), dtype=logits.dtype, device=logits.device)
    units = units.view(1, -1, 1, 1, 1)
    log_odds = torch.logit(p.clamp(KEEP_SIDE_CLAMP, 1.0 - KEEP_SIDE_CLAMP)).to(logits.dtype)
    return logits + strength * units * log_odds.unsqueeze(1)


class Head(nn.Module):
    """Two dilated blocks + a 1x1x1 convolution: ``(B, width, D, H, W) -> (B, out, D, H, W)``."""

    def __init__(self, width: int, out_channels: int, dilations: Sequence[int], dropout: float) -> None:
        super().__init__()
        self.blocks = dilated_stack(width, width, dilations, dropout)
        self.out = nn.Conv3d(width, out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.blocks(x))


class ConfidenceNet(nn.Module):
    """Action-confidence network C(s, a) (MECCA.md §2): six blocks on the state + action map.

    Input: observation ``(B, C, D, H, W)`` and action-value map ``(B, D, H, W)`` in
    probability units (e.g. +0.2). Output: confidence *logits* ``(B, D, H, W)``;
    ``sigmoid(logits)`` is the confidence in (0, 1) that the action moves p toward the truth.
    """

    ACTION_SCALE = 2.5  # 1 / max |a|

    def __init__(self, in_channels: int, width: int, dilations: Sequence[int], dropout: float,
                 signed: bool = False) -> None:
        super().__init__()
        if len(dilations) != 6:
            raise ValueError(f"conf_dilations must have 6 values (six blocks), got {tuple(dilations)}")
        self.blocks = dilated_stack(in_channels + 1, width, dilations, dropout)
        self.out = nn.Conv3d(width, 1, 1)
        self.signed = signed

    def forward(self, obs: torch.Tensor, action_values: torch.Tensor) -> torch.Tensor:
        # Scale the action map to about [-1, 1] (|a| <= 0.4, MECCA.md §1) so it weighs as
        # much as the other input channels at initialisation.
        a = action_values.unsqueeze(1).to(obs.dtype) * self.ACTION_SCALE
        if not self.signed:
            return self.out(self.blocks(torch.cat([obs, a], dim=1))).squeeze(1)
        # ``signed``: the net reads the step size |a| and its logit is multiplied by the
        # direction, so C(s, -a) = 1 - C(s, a) by construction and the logit is a belief
        # that the voxel is foreground (Eq. 7's target is the direction's agreement with it).
        logit = self.out(self.blocks(torch.cat([obs, a.abs()], dim=1)))
        return (torch.sign(a) * logit).squeeze(1)
