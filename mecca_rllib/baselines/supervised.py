"""Supervised baselines of MECCA's Table 1, as plain torch training loops.

All three use the P-Net backbone of :mod:`mecca_rllib.policies.networks` at MECCA's width:
five dilated blocks (MECCA's three shared blocks + two head blocks) and a 1x1x1 output
convolution giving one foreground logit per voxel. They differ in their input channels
(picked from the env observation (image, p, hint), MECCA.md §1) and in how they train:

- ``pnet``: image only, no hints (the paper's "P-Net"): the same prediction at every step.
- ``deepigeos`` (DeepIGeoS-like): image + hint map; trained on single interactions whose
  hint holds as many clicks as a random test step (placed against the empty initial
  segmentation), so that at test time it re-predicts once per step from all clicks so far.
- ``intercnn`` (InterCNN-like): image + its own previous prediction + hint map; trained by
  unrolling whole interactions in which the simulated user clicks against the network's
  own (detached) predictions, one update per interaction step.

Loss: binary cross-entropy + soft Dice of the foreground probability (both per volume).
Clicks come from :class:`~mecca_rllib.baselines.interaction.Interaction` (the env's
simulated user and hint map) and the rollout core's :func:`~mecca_rllib.envs.rollout.play_episode`;
budgets from :mod:`mecca_rllib.budget`.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from mecca_rllib.baselines.interaction import ClickSchedule, Interaction
from mecca_rllib.baselines.segmenter import Segmenter, StepOutput
from mecca_rllib.envs.rollout import play_episode
from mecca_rllib.policies.networks import dilated_stack, xavier_init

if TYPE_CHECKING:
    from mecca_rllib.budget import Budget
    from mecca_rllib.data import VolumeSource

__all__ = [
    "KINDS",
    "PNet",
    "SupervisedSegmenter",
    "SupervisedSettings",
    "TrainResult",
    "segmentation_loss",
    "train_supervised",
]

#: Observation channels (image 0, p 1, hint 2) each baseline reads, and its display name.
KINDS: dict[str, tuple[tuple[int, ...], str]] = {
    "pnet": ((0,), "P-Net"),
    "deepigeos": ((0, 2), "DeepIGeoS"),
    "intercnn": ((0, 1, 2), "InterCNN"),
}


class PNet(nn.Module):
    """P-Net-style segmentation network: ``(B, C, D, H, W) -> (B, D, H, W)`` logits.

    Same blocks and width as MECCA's policy path (MECCA.md §2): ``len(dilations)`` dilated
    blocks of two 3x3x3 convolutions, then a 1x1x1 convolution to one channel; Xavier init.
    """

    def __init__(self, in_channels: int, width: int = 16,
                 dilations: Sequence[int] = (1, 2, 4, 8, 16), dropout: float = 0.0) -> None:
        super().__init__()
        self.blocks = dilated_stack(in_channels, width, dilations, dropout)
        self.out = nn.Conv3d(width, 1, 1)
        xavier_init(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.blocks(x)).squeeze(1)


def segmentation_loss(logits: torch.Tensor, label: torch.Tensor, eps: float = 1.0) -> torch.Tensor:
    """Mean binary cross-entropy + soft Dice loss ``1 - (2 |p y| + eps) / (|p| + |y| + eps)``.

    ``logits`` and ``label`` (0/1 float) are ``(B, D, H, W)``; Dice is per volume, averaged.
    """
    bce = F.binary_cross_entropy_with_logits(logits, label)
    p = torch.sigmoid(logits).flatten(1)
    y = label.flatten(1)
    soft_dice = (2 * (p * y).sum(1) + eps) / (p.sum(1) + y.sum(1) + eps)
    return bce + (1 - soft_dice).mean()


class SupervisedSegmenter(Segmenter):
    """A trained :class:`PNet` that reads ``channels`` of the observation.

    ``step`` returns ``sigmoid(net(obs[channels]))`` as the new ``p`` (float32 ``(D, H, W)``).
    """

    def __init__(self, net: PNet, channels: Sequence[int], name: str) -> None:
        self.net = net
        self.channels = tuple(int(c) for c in channels)
        self.name = name

    @torch.inference_mode()
    def step(self, obs: np.ndarray, *, with_confidence: bool = False) -> StepOutput:
        self.net.eval()
        x = torch.from_numpy(np.ascontiguousarray(obs[list(self.channels)], dtype=np.float32))
        device = next(self.net.parameters()).device
        p = torch.sigmoid(self.net(x[None].to(device)))[0]
        return StepOutput(p=p.float().cpu().numpy())


@dataclass(frozen=True)
class SupervisedSettings:
    """Hyper-parameters shared by the three baselines.

    Attributes:
        width, dilations: the P-Net backbone (MECCA's width and dilation schedule).
        lr: Adam learning rate.
        schedule: the simulated user's click schedule (as in evaluation).
        seed: seeds weights, case order, crop variants and clicks.
        device: torch device for training.
    """

    width: int = 16
    dilations: tuple[int, ...] = (1, 2, 4, 8, 16)
    lr: float = 1e-3
    schedule: ClickSchedule = field(default_factory=ClickSchedule)
    seed: int = 0
    device: str = "cpu"


@dataclass
class TrainResult:
    """A trained method and what its training spent."""

    segmenter: Segmenter
    spent: dict[str, float]
    losses: list[float]


def _tensor(array: np.ndarray, device: str) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))[None].to(device)


def train_supervised(kind: str, source: VolumeSource, budget: Budget,
                     settings: SupervisedSettings = SupervisedSettings()) -> TrainResult:
    """Train one baseline (``"pnet"``, ``"deepigeos"`` or ``"intercnn"``) on ``source``'s
    cases until ``budget`` is spent (at least one update).

    Cases are visited in seeded random passes; every volume is one update for ``pnet``
    and ``deepigeos`` (one env step each) and ``schedule.steps`` updates for ``intercnn``.
    """
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {sorted(KINDS)}, got {kind!r}")
    if len(source) == 0:
        raise ValueError("source: no training case")
    channels, name = KINDS[kind]
    torch.manual_seed(settings.seed)
    net = PNet(len(channels), settings.width, settings.dilations).to(settings.device)
    optimizer = torch.optim.Adam(net.parameters(), lr=settings.lr)
    rng = np.random.default_rng(settings.seed)
    schedule, index = settings.schedule, list(channels)
    tracker = budget.tracker()
    losses: list[float] = []

    def update(obs: np.ndarray, label: torch.Tensor) -> torch.Tensor:
        logits = net(_tensor(obs[index], settings.device))
        loss = segmentation_loss(logits, label)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
        return logits.detach()

    net.train()
    order: list[int] = []
    while not tracker.updates or not tracker.exhausted:
        if not order:
            order = list(rng.permutation(len(source)))
        image, label = source.get(int(order.pop()), rng)
        target = _tensor(label, settings.device)
        if kind == "pnet":  # no hints: the image is all it sees
            update(np.asarray(image)[None], target)
            tracker.spend(1)
            continue
        episode = Interaction(image, label, schedule, rng)
        if kind == "deepigeos":
            # One interaction whose hint holds the clicks of a random test step t = 1..T
            # (initial clicks + (t - 1) more batches, all against the empty segmentation).
            for _ in range(int(rng.integers(0, schedule.steps))):
                episode.click()
            update(episode.obs, target)
            tracker.spend(1)
        else:  # intercnn: unroll a whole interaction on its own predictions
            def learn(obs: np.ndarray, *, target: torch.Tensor = target, **_: bool) -> StepOutput:
                logits = update(obs, target)
                tracker.spend(1)
                return StepOutput(p=torch.sigmoid(logits)[0].cpu().numpy())

            play_episode(episode, learn)
    net.eval()
    return TrainResult(SupervisedSegmenter(net, channels, name), tracker.summary(), losses)
