"""One volume's interaction state, shared by the benchmark protocol and the supervised
trainers: the environment's own simulated user and hint maps (MECCA.md §1), never a copy.

The state mirrors :class:`~mecca_rllib.envs.InteractiveSegEnv`: the observation is
``(2 + C, D, H, W)`` float32 = (image, p, C hint channels: one map of all clicks, or with
``hint_channels=2`` foreground and background clicks apart, the click's side read from the
label as the env does), ``p = 0.5`` everywhere at the start, the user
places ``initial_clicks`` where the segmentation (``p > 0.5``, read out as the env does:
:mod:`mecca_rllib.envs.readout`) is wrong, then ``clicks_per_step`` more after every
interaction step but the last. What differs is who updates ``p``: any method may set
it (a supervised network predicts it outright; MECCA adds its action values). An
:class:`Interaction` is an episode of :func:`mecca_rllib.envs.rollout.play_episode`.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from typing import Any

import numpy as np

from mecca_rllib.envs import DEFAULT_CONFIG, ClickHints, SimulatedUser
from mecca_rllib.envs.readout import segmentation
from mecca_rllib.envs.rollout import StepOutput

__all__ = ["ClickSchedule", "Interaction", "with_schedule"]


@dataclass(frozen=True)
class ClickSchedule:
    """How the simulated user interacts (defaults: MECCA.md §1 and §6, the env's defaults).

    Attributes:
        steps: interaction steps T.
        initial_clicks: clicks before the first step (25).
        clicks_per_step: clicks after every later step (5).
        click_mode: ``"edge"`` (the paper) or ``"largest_error"``.
        hint_kernel: Gaussian hint kernel in voxels (8).
        hint_channels: 1 (all clicks in one map, the paper) or 2 (foreground/background).
        readout: how p becomes the segmentation the user sees and clicks against
            (:mod:`mecca_rllib.envs.readout`).
        advice_mode: how the interaction guide's advice steers the clicks: ``"only"``
            inside it (the paper) or ``"first"`` there, then elsewhere
            (:mod:`mecca_rllib.envs.simulated_user`).
    """

    steps: int = int(DEFAULT_CONFIG["steps"])
    initial_clicks: int = int(DEFAULT_CONFIG["initial_clicks"])
    clicks_per_step: int = int(DEFAULT_CONFIG["clicks_per_step"])
    click_mode: str = str(DEFAULT_CONFIG["click_mode"])
    hint_kernel: int = int(DEFAULT_CONFIG["hint_kernel"])
    hint_channels: int = int(DEFAULT_CONFIG["hint_channels"])
    readout: str = str(DEFAULT_CONFIG["readout"])
    advice_mode: str = str(DEFAULT_CONFIG["advice_mode"])

    def env_config(self) -> dict[str, Any]:
        """The same schedule as ``InteractiveSegEnv`` config keys."""
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_env_config(cls, config: Mapping[str, Any]) -> "ClickSchedule":
        """The schedule of an env config (missing keys take the env's defaults)."""
        return cls(**{f.name: config.get(f.name, DEFAULT_CONFIG[f.name]) for f in fields(cls)})


def with_schedule(holder: Any, **changes: Any) -> Any:
    """A copy of the dataclass ``holder`` (a bench ``Protocol`` or ``TrainSettings``) whose
    ``schedule`` has ``changes`` (``ClickSchedule`` fields, e.g. ``readout="threshold"``)."""
    return replace(holder, schedule=replace(holder.schedule, **changes))


class Interaction:
    """Clicks, hint map and probability of one volume during one interactive episode.

    Args:
        image: float32 ``(D, H, W)`` (z-scored).
        label: uint8/bool ``(D, H, W)`` ground truth the simulated user clicks against.
        schedule: the click schedule.
        rng: the click stream (edge clicks start at a random point); the same stream gives
            the same first clicks to every method.

    ``obs`` is the current ``(2 + C, D, H, W)`` observation and ``mask`` the current
    segmentation, bool ``(D, H, W)``; the initial clicks are placed at construction
    (against ``p = 0.5``, i.e. an empty segmentation).
    """

    def __init__(self, image: np.ndarray, label: np.ndarray, schedule: ClickSchedule,
                 rng: np.random.Generator) -> None:
        image = np.asarray(image, dtype=np.float32)
        if image.ndim != 3 or image.shape != np.shape(label):
            raise ValueError(f"image {image.shape} and label {np.shape(label)} must be one "
                             "(D, H, W) shape")
        self.schedule = schedule
        self.label = np.asarray(label, dtype=np.uint8)
        self.steps = int(schedule.steps)
        self.step = 0
        self.obs = np.empty((2 + int(schedule.hint_channels), *image.shape), np.float32)
        self.obs[0] = image
        self.obs[1] = 0.5  # MECCA.md §1: p_i(0) = 0.5
        self.mask = segmentation(self.obs[1], None, schedule.readout)  # checks the readout
        self._hints = ClickHints(image.shape, schedule.hint_kernel, schedule.hint_channels,
                                 out=self.obs[2:])
        self._user = SimulatedUser(schedule.click_mode, schedule.advice_mode)
        self._user.start(self.label)
        self._rng = rng
        self._place(schedule.initial_clicks, None)

    @property
    def p(self) -> np.ndarray:
        """Current foreground probability, float32 ``(D, H, W)`` (a view of ``obs[1]``)."""
        return self.obs[1]

    @property
    def clicks(self) -> np.ndarray:
        """All clicks so far, int32 ``(K, 3)``, oldest first."""
        return self._user.clicks

    def set_p(self, p: np.ndarray) -> None:
        """Replace the probability by a method's new ``p`` (``(D, H, W)``, values in [0, 1])
        and read out the new segmentation."""
        np.copyto(self.obs[1], np.asarray(p, dtype=np.float32))
        self.mask = segmentation(self.obs[1], self.mask, self.schedule.readout)

    def click(self, advice: np.ndarray | None = None) -> np.ndarray:
        """The user's ``clicks_per_step`` new clicks where the segmentation is wrong, restricted
        to ``advice`` (bool ``(D, H, W)``) when given; returns them, int32 ``(k, 3)``."""
        return self._place(self.schedule.clicks_per_step, advice)

    def advance(self, out: StepOutput, advice: np.ndarray | None = None) -> dict:
        """One interaction step (the rollout's episode interface): ``p`` becomes ``out.p``,
        then, unless it was the last step, the user clicks (restricted to ``advice``).
        Returns ``{"segmentation": mask}``, a copy of the step's segmentation."""
        self.set_p(out.p)
        self.step += 1
        if self.step < self.steps:
            self.click(advice)
        return {"segmentation": self.mask.copy()}

    def _place(self, n: int, advice: np.ndarray | None) -> np.ndarray:
        points = self._user.click(self.mask, n, self._rng, advice=advice)
        self._hints.add(points, foreground=self.label[tuple(points.T)] > 0)
        return points
