"""The one interface every benchmarked method is evaluated through.

A :class:`Segmenter` maps the current observation ``(3, D, H, W)`` = (image, p, hint) (the
environment's layout, MECCA.md §1) to a new foreground probability ``p`` ``(D, H, W)``.
Supervised baselines predict ``p`` outright; a MECCA/IteR-MRL module
(:class:`ModuleSegmenter`) takes the argmax action of every voxel and moves ``p`` as the
environment does, ``p <- clip(p + a, 0, 1)`` on the 0.1 grid.
"""
from __future__ import annotations

import abc
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from mecca_rllib.envs.spaces import ACTION_TENTHS

__all__ = ["ModuleSegmenter", "Segmenter", "StepOutput"]


@dataclass
class StepOutput:
    """What a method returns for one interaction step.

    Attributes:
        p: float32 ``(D, H, W)`` new foreground probability in [0, 1].
        confidence: float32 ``(D, H, W)`` confidence of the step's action in [0, 1]
            (MECCA.md §2), or None for methods without a confidence network.
    """

    p: np.ndarray
    confidence: np.ndarray | None = None


class Segmenter(abc.ABC):
    """An interactive segmentation method as the benchmark protocol sees it.

    Attributes:
        name: the method's display name (a table row).
        has_confidence: whether :meth:`step` can return a confidence map (guided mode).
    """

    name: str = "segmenter"
    has_confidence: bool = False

    def start(self, image: np.ndarray) -> None:
        """A new volume ``(D, H, W)`` begins (methods with per-volume state reset it)."""

    @abc.abstractmethod
    def step(self, obs: np.ndarray, *, with_confidence: bool = False) -> StepOutput:
        """One interaction step: ``obs`` float32 ``(3, D, H, W)`` -> :class:`StepOutput`."""


def _device(module: torch.nn.Module) -> torch.device:
    return next(module.parameters()).device


class ModuleSegmenter(Segmenter):
    """A MECCA RLModule (or anything with ``policy_logits``, ``confidence`` and
    ``action_values_of``, e.g. an IteR-MRL-trained one) as a :class:`Segmenter`.

    Deterministic: every voxel takes its argmax action; ``p`` moves in integer tenths
    exactly as in the environment (MECCA.md §1), so ``p > 0.5`` never depends on rounding.
    """

    has_confidence = True

    def __init__(self, module: Any, name: str = "MECCA") -> None:
        self.module = module
        self.name = name
        self._tenths = torch.tensor(np.array(ACTION_TENTHS), dtype=torch.int16)

    @torch.inference_mode()
    def step(self, obs: np.ndarray, *, with_confidence: bool = False) -> StepOutput:
        self.module.eval()
        x = torch.from_numpy(np.ascontiguousarray(obs, dtype=np.float32))[None]
        x = x.to(_device(self.module))
        action = self.module.policy_logits(x).argmax(dim=1)  # (1, D, H, W), MECCA.md §1
        tenths = torch.round(x[0, 1] * 10).to(torch.int16) + self._tenths.to(x.device)[action[0]]
        p = (tenths.clamp(0, 10).to(torch.float32) / 10).cpu().numpy()
        confidence = None
        if with_confidence:
            values = self.module.action_values_of(action)
            confidence = self.module.confidence(x, values)[0].float().cpu().numpy()
        return StepOutput(p=p, confidence=confidence)
