"""The one interface every benchmarked method is evaluated through.

A :class:`Segmenter` maps the current observation ``(3, D, H, W)`` = (image, p, hint) (the
environment's layout, MECCA.md §1) to a new foreground probability ``p`` ``(D, H, W)``.
Supervised baselines predict ``p`` outright; a MECCA/IteR-MRL module
(:class:`ModuleSegmenter`) takes the argmax action of every voxel and moves ``p`` as the
environment does, ``p <- clip(p + a, 0, 1)`` on the 0.1 grid (the rollout core,
:mod:`mecca_rllib.envs.rollout`).
"""
from __future__ import annotations

import abc
from typing import Any

import numpy as np
import torch

from mecca_rllib.envs.rollout import StepOutput, policy_step

__all__ = ["ModuleSegmenter", "Segmenter", "StepOutput"]


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
        """One interaction step: ``obs`` float32 ``(2 + C, D, H, W)`` -> :class:`StepOutput`."""


class ModuleSegmenter(Segmenter):
    """A MECCA RLModule (or anything with ``policy_logits`` and ``confidence``, e.g. an
    IteR-MRL-trained one) as a :class:`Segmenter`: :func:`~mecca_rllib.envs.rollout.policy_step`.

    Every voxel takes its argmax action (``explore=True``: a sample, drawn from one generator
    seeded by ``seed``); ``p`` moves in integer tenths exactly as in the environment
    (MECCA.md §1), so ``p > 0.5`` never depends on rounding.
    """

    has_confidence = True

    def __init__(self, module: Any, name: str = "MECCA", *, explore: bool = False,
                 seed: int = 0) -> None:
        self.module = module
        self.name = name
        self.explore = bool(explore)
        self.generator = torch.Generator().manual_seed(int(seed))

    def step(self, obs: np.ndarray, *, with_confidence: bool = False) -> StepOutput:
        self.module.eval()
        return policy_step(self.module, obs, explore=self.explore, generator=self.generator,
                           with_confidence=with_confidence)
