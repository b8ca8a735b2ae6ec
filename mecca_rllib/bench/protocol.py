"""The evaluation protocol of MECCA.md §6, one function for every method.

Each test case is played ``repeats`` times with different click seeds; every method sees
the same volumes and, for the same (repeat, case), the same click stream, so the initial
clicks (placed against the empty segmentation) are identical across methods. Per step
``t = 1..T`` the protocol records Dice and ASSD (voxels, the paper's unit) of the segmentation (``p > 0.5`` read out as the schedule says, :mod:`mecca_rllib.envs.readout`),
the misunderstanding rate of the step's change of ``p``, the method's inference time
(``Segmenter.step``) and the interaction time (placing the clicks the step consumed and
drawing them into the hint map, plus computing the advice regions in guided mode).
Dice is also recorded after reset (step 0, ``p = 0.5``, an empty segmentation).
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from mecca_rllib.baselines import ClickSchedule, Interaction, Segmenter, StepOutput
from mecca_rllib.data import VolumeSource
from mecca_rllib.envs.rollout import AdviceFn, play_episode
from mecca_rllib.metrics import assd, dice, misunderstanding_rate, noc

__all__ = ["AdviceFn", "MethodResult", "Protocol", "evaluate_method", "mean_std"]


@dataclass(frozen=True)
class Protocol:
    """The evaluation protocol (MECCA.md §6).

    Attributes:
        schedule: T = 5 steps, 25 then 5 edge clicks per step, hint kernel 8.
        repeats: test runs with different click seeds (5).
        seed: root seed of the click and crop-variant streams.
    """

    schedule: ClickSchedule = field(default_factory=ClickSchedule)
    repeats: int = 5
    seed: int = 10_000

    def __post_init__(self) -> None:
        if int(self.repeats) < 1:
            raise ValueError(f"repeats must be >= 1, got {self.repeats}")

    def streams(self, repeat: int, case: int) -> tuple[np.random.Generator, np.random.Generator]:
        """(data, clicks) generators of one (repeat, case): the same for every method."""
        data, clicks = np.random.SeedSequence([self.seed, repeat, case]).spawn(2)
        return np.random.default_rng(data), np.random.default_rng(clicks)

    def draw(self, source: VolumeSource, repeat: int, case: int
             ) -> tuple[np.ndarray, np.ndarray, np.random.Generator]:
        """``(image, label, clicks)`` of one episode: the case's ``(D, H, W)`` volume and label
        as this repeat's data stream crops them, and the episode's click stream."""
        data_rng, click_rng = self.streams(repeat, case)
        image, label = source.get(case, data_rng)
        return image, label, click_rng


@dataclass
class MethodResult:
    """Everything measured for one method; arrays are indexed ``(repeat, case, step)``.

    Attributes:
        name: the method's display name.
        cases: test case names ``(C,)``.
        dice: ``(R, C, T + 1)``, step 0 = after reset.
        assd: ``(R, C, T)`` in voxels; ``inf`` where the prediction is empty.
        misunderstanding: ``(R, C, T)`` fraction of voxels moved against their label.
        inference_ms: ``(R, C, T)`` ``Segmenter.step`` wall time, milliseconds.
        interaction_ms: ``(R, C, T)`` time to produce the clicks each step consumed, ms.
        guided: clicks restricted to the advice regions (MECCA.md §4).
        labeled_fraction: fraction of labeled training volumes (MECCA.md §5; Table 3).
        training: what training spent (budget, env steps, seconds, ...).
    """

    name: str
    cases: list[str]
    dice: np.ndarray
    assd: np.ndarray
    misunderstanding: np.ndarray
    inference_ms: np.ndarray
    interaction_ms: np.ndarray
    guided: bool = False
    labeled_fraction: float = 1.0
    training: dict[str, Any] = field(default_factory=dict)

    @property
    def steps(self) -> int:
        """Interaction steps T."""
        return int(self.dice.shape[-1]) - 1

    def noc(self, threshold: float) -> np.ndarray:
        """Interactions until Dice >= ``threshold`` per episode ``(R * C,)`` (T + 1 if never)."""
        return np.asarray(noc(self.dice[..., 1:].reshape(-1, self.steps), threshold))

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (arrays as nested lists, ``inf`` as the string ``"inf"``)."""
        out = asdict(self)
        for key in ("dice", "assd", "misunderstanding", "inference_ms", "interaction_ms"):
            out[key] = np.where(np.isfinite(out[key]), out[key], -1.0).tolist()
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "MethodResult":
        """Inverse of :meth:`to_dict`."""
        data = dict(data)
        for key in ("dice", "assd", "misunderstanding", "inference_ms", "interaction_ms"):
            array = np.asarray(data[key], dtype=np.float64)
            data[key] = np.where(array < 0, np.inf, array)
        return cls(**data)


def mean_std(
    values: np.ndarray, axis: int | tuple[int, ...] | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean and standard deviation over the finite entries along ``axis``, and how many
    entries were infinite (e.g. ASSD of an empty prediction). NaN where none is finite."""
    values = np.asarray(values, dtype=np.float64)
    masked = np.ma.masked_invalid(values)
    mean = np.ma.filled(masked.mean(axis=axis), np.nan)
    std = np.ma.filled(masked.std(axis=axis), np.nan)
    return np.asarray(mean), np.asarray(std), np.asarray(np.isinf(values).sum(axis=axis))


def evaluate_method(
    segmenter: Segmenter,
    source: VolumeSource,
    protocol: Protocol = Protocol(),
    *,
    advice_fn: AdviceFn | None = None,
    name: str | None = None,
    progress: bool = False,
) -> MethodResult:
    """Play every case of ``source`` ``protocol.repeats`` times with ``segmenter``.

    ``advice_fn`` (guided mode, needs ``segmenter.has_confidence``) receives the step's
    observation and the confidence of its action, and its mask restricts the user's next
    clicks (MECCA.md §4), as ``mecca_rllib.evaluation.run_episode`` does with the env.
    Every episode is :func:`mecca_rllib.envs.rollout.play_episode` of ``segmenter.step`` on
    an :class:`~mecca_rllib.baselines.Interaction`.
    """
    if advice_fn is not None and not segmenter.has_confidence:
        raise ValueError(f"advice_fn: method {segmenter.name!r} has no confidence map to "
                         "compute advice regions from (guided mode needs MECCA)")
    from tqdm.auto import tqdm

    schedule = protocol.schedule
    n_rep, n_case, steps = protocol.repeats, len(source), schedule.steps
    dice_out = np.zeros((n_rep, n_case, steps + 1))
    per_step = {k: np.zeros((n_rep, n_case, steps))
                for k in ("assd", "misunderstanding", "inference_ms", "interaction_ms")}
    episodes = [(r, c) for r in range(n_rep) for c in range(n_case)]
    label_name = name or segmenter.name

    def checked(obs: np.ndarray, *, with_confidence: bool) -> StepOutput:
        out = segmenter.step(obs, with_confidence=with_confidence)
        if out.p.shape != obs.shape[1:]:
            raise ValueError(f"{label_name}: step returned p of shape {out.p.shape}, "
                             f"expected {obs.shape[1:]}")
        return out

    for r, c in tqdm(episodes, desc=f"evaluate {label_name}", unit="episode", disable=not progress):
        image, label, click_rng = protocol.draw(source, r, c)
        start = time.perf_counter()
        episode = Interaction(image, label, schedule, click_rng)
        click_ms = (time.perf_counter() - start) * 1e3  # the clicks the next step consumes
        segmenter.start(episode.obs[0])
        dice_out[r, c, 0] = dice(episode.mask, label)
        for rec in play_episode(episode, checked, advice_fn=advice_fn):
            t, pred = rec.step, rec.info["segmentation"]  # the episode's readout of p
            per_step["inference_ms"][r, c, t] = rec.policy_ms
            per_step["interaction_ms"][r, c, t], click_ms = click_ms, rec.interaction_ms
            per_step["misunderstanding"][r, c, t] = misunderstanding_rate(rec.obs[1], rec.out.p, label)
            dice_out[r, c, t + 1] = dice(pred, label)
            per_step["assd"][r, c, t] = assd(pred, label)
    return MethodResult(name=label_name, cases=list(source.names), dice=dice_out,
                        guided=advice_fn is not None, **per_step)
