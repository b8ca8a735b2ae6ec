"""Registry of reward weightings applied to per-voxel gains before returns (MECCA.md §3, §4.4).

A weighting is a function ``fn(inputs: ShapingInputs, **params) -> rewards (T, N)``. The
learner connector passes only the keyword parameters ``fn`` declares, drawn from the
algorithm config (``alpha``, ``beta``, ``confidence_form``, ``error_region_lambda``,
``focal_gamma``) and ``reward_weighting_kwargs``. Register your own from outside the
package::

    from mecca_rllib.policies.reward_shaping import register_weighting

    def boundary_boost(inputs, factor=2.0):
        return inputs.gain * factor

    register_weighting("boundary_boost", boundary_boost)
    config.training(reward_weighting="boundary_boost", reward_weighting_kwargs={"factor": 3.0})
"""
from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import torch

from mecca_rllib.policies.returns import EPS, cross_entropy, relative_gain


@dataclass(frozen=True)
class ShapingInputs:
    """What a weighting may use, for one episode of ``T`` steps over ``N`` voxels.

    p_prev, p_next: foreground probability before / after the step's action, ``(T, N)``.
    label: target in {0, 1}, ``(T, N)`` or broadcastable (``(N,)``).
    confidence: C(s_t, a_t) in (0, 1), ``(T, N)``; None unless the weighting needs it.
    """

    p_prev: torch.Tensor
    p_next: torch.Tensor
    label: torch.Tensor
    confidence: torch.Tensor | None = None
    eps: float = EPS

    @cached_property
    def gain(self) -> torch.Tensor:
        """gain_i(t) = chi_i(t-1) - chi_i(t), ``(T, N)`` (MECCA.md §3, Eq. 9)."""
        return relative_gain(self.p_prev, self.p_next, self.label, self.eps)


WeightingFn = Callable[..., torch.Tensor]


@dataclass(frozen=True)
class Weighting:
    """A registered weighting and whether it reads ``ShapingInputs.confidence``."""

    name: str
    fn: WeightingFn
    needs_confidence: bool

    def __call__(self, inputs: ShapingInputs, params: Mapping[str, Any]) -> torch.Tensor:
        """Shaped rewards ``(T, N)``; passes only the parameters ``fn`` accepts."""
        if self.needs_confidence and inputs.confidence is None:
            raise ValueError(f"reward weighting {self.name!r} needs the action confidence")
        sig = inspect.signature(self.fn)
        if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in sig.parameters.values()):
            kwargs = dict(params)
        else:
            kwargs = {k: v for k, v in params.items() if k in sig.parameters}
        return self.fn(inputs, **kwargs)


_REGISTRY: dict[str, Weighting] = {}


def register_weighting(
    name: str, fn: WeightingFn, *, needs_confidence: bool = False, overwrite: bool = False
) -> None:
    """Register ``fn(inputs: ShapingInputs, **params) -> (T, N)`` under ``name``."""
    if not callable(fn):
        raise TypeError(f"reward weighting {name!r}: fn must be callable, got {fn!r}")
    if name in _REGISTRY and not overwrite:
        raise ValueError(f"reward weighting {name!r} is already registered (pass overwrite=True)")
    _REGISTRY[name] = Weighting(name, fn, needs_confidence)


def get_weighting(name: str) -> Weighting:
    """The weighting registered as ``name``; ValueError listing the known names otherwise."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ValueError(
            f"unknown reward_weighting {name!r}; registered: {sorted(_REGISTRY)}"
        ) from None


# Config attributes every weighting may declare as a keyword parameter (MECCA.md §3).
WEIGHTING_SETTINGS = ("alpha", "beta", "confidence_form", "confidence_gate", "confidence_skill",
                      "error_region_lambda", "focal_gamma")


#: Defaults of the reward settings shared by ``MECCAConfig`` and the PPO/APPO configs
#: (MECCA.md §3 and §6: alpha 0.8, beta 1; the confidence net's Adam lr 1e-4).
REWARD_DEFAULTS: dict[str, Any] = {
    "alpha": 0.8, "beta": 1.0, "confidence_form": "focal", "confidence_gate": True,
    "confidence_skill": "accuracy", "error_region_lambda": 1.0,
    "focal_gamma": 2.0, "voxel_mean_reward": False, "confidence_lr": 1e-4, "side_reward": 0.0,
    "switch_cost": 0.0,
}


def set_provided(config: Any, values: Mapping[str, Any], unset: Any) -> None:
    """``setattr(config, name, value)`` for every value that is not ``unset`` (RLlib's
    ``NotProvided``): the body of an ``AlgorithmConfig.training()`` override."""
    for name, value in values.items():
        if value is not unset:
            setattr(config, name, value)


def weighting_params(config: Any) -> dict[str, Any]:
    """Keyword parameters an algorithm config offers to its reward weighting: the
    :data:`WEIGHTING_SETTINGS` attributes plus ``config.reward_weighting_kwargs``."""
    return {name: getattr(config, name) for name in WEIGHTING_SETTINGS} | dict(
        config.reward_weighting_kwargs
    )


def registered_weightings() -> list[str]:
    """Names of all registered weightings, sorted."""
    return sorted(_REGISTRY)


# ----------------------------------------------------------------------------- built-ins
def no_weighting(inputs: ShapingInputs) -> torch.Tensor:
    """IteR-MRL: r_i(t) = gain_i(t) (MECCA.md §3)."""
    return inputs.gain


def focal_prob_weighting(inputs: ShapingInputs, focal_gamma: float = 2.0) -> torch.Tensor:
    """Gain of a focal-weighted cross-entropy of p (MECCA.md §3, Eqs. 12-13).

    FL(p) = (1 - p_y)^gamma * chi(p) with p_y the probability of the true class;
    r_i(t) = FL_i(t-1) - FL_i(t).
    """

    def focal(p: torch.Tensor) -> torch.Tensor:
        p = p.clamp(inputs.eps, 1.0 - inputs.eps)
        y = inputs.label.to(p.dtype)
        p_true = y * p + (1.0 - y) * (1.0 - p)
        return (1.0 - p_true) ** focal_gamma * cross_entropy(p, y, inputs.eps)

    return focal(inputs.p_prev) - focal(inputs.p_next)


def error_region_weighting(inputs: ShapingInputs, error_region_lambda: float = 1.0) -> torch.Tensor:
    """gain * (1 + lambda) where the previous segmentation (p > 0.5) was wrong (MECCA.md §3, Eq. 14)."""
    wrong = (inputs.p_prev > 0.5) != inputs.label.to(torch.bool)
    return inputs.gain * (1.0 + error_region_lambda * wrong.to(inputs.gain.dtype))


def side_terms(inputs: ShapingInputs, side_reward: float = 0.0, switch_cost: float = 0.0) -> torch.Tensor:
    """Terms on the side of 0.5 a voxel is on, added to the weighted reward (not in the paper;
    README "Learning quality"), ``(T, N)``:

    ``side_reward * (right_t - right_{t-1}) - switch_cost * 1[side changed]``, with ``right``
    1 where the segmentation ``p > 0.5`` matches the label. The first pays for fixing a
    voxel and charges for breaking one (the Dice-relevant event, which the cross-entropy
    gain prices at only about +-0.2 near p = 0.5); the second is a hysteresis against the
    period-2 hops across 0.5 that no action can avoid (there is no zero action, MECCA.md §1).
    """
    before, after = inputs.p_prev > 0.5, inputs.p_next > 0.5
    terms = torch.zeros_like(inputs.p_next)
    if side_reward:
        y = inputs.label.to(torch.bool)
        terms = terms + side_reward * ((after == y).to(terms.dtype) - (before == y).to(terms.dtype))
    if switch_cost:
        terms = terms - switch_cost * (after != before).to(terms.dtype)
    return terms


def confidence_weight(
    confidence: torch.Tensor, alpha: float = 0.8, beta: float = 1.0, confidence_form: str = "focal"
) -> torch.Tensor:
    """w(c) of the self-adaptive reward (MECCA.md §3, Eq. 8).

    ``"paper"``: (alpha - c)^beta as printed; it is NEGATIVE for c > alpha (confident good
    actions are punished), and for non-integer beta it is taken as sign(x)|x|^beta.
    ``"focal"`` (default): alpha (1 - c)^beta, never negative; low confidence = larger weight.
    """
    if confidence_form == "paper":
        x = alpha - confidence
        return torch.sign(x) * x.abs() ** beta
    if confidence_form == "focal":
        return alpha * (1.0 - confidence) ** beta
    raise ValueError(f"confidence_form must be 'paper' or 'focal', got {confidence_form!r}")


def confidence_skill(confidence: torch.Tensor, gain: torch.Tensor) -> torch.Tensor:
    """How much better than chance ``C > 0.5`` tells which actions helped, per step: ``(T, 1)``
    in [0, 1].

    Over the voxels whose p moved (``gain != 0``): ``(accuracy - chance) / (1 - chance)``,
    with chance the share of the majority outcome (helped or not), clipped at 0. A net that
    calls every action good when 80 % are good scores 0, like one that guesses.
    """
    moved, helped, n, rate = _outcomes(gain)
    accuracy = (((confidence > 0.5) == helped) & moved).sum(1, keepdim=True) / n
    chance = torch.maximum(rate, 1.0 - rate)
    return ((accuracy - chance) / (1.0 - chance).clamp_min(1e-6)).clamp(0.0, 1.0)


def confidence_brier_skill(confidence: torch.Tensor, gain: torch.Tensor) -> torch.Tensor:
    """The Brier skill score of C as the probability that an action helped, per step:
    ``(T, 1)`` in [0, 1].

    Over the voxels whose p moved: ``1 - mean (c - helped)^2 / (rate (1 - rate))``, the
    reference being the constant forecast ``rate`` (the share of actions that helped),
    clipped at 0. Unlike :func:`confidence_skill` it needs no threshold: a confidence that
    approves every action (``C > 0.5`` everywhere) but is lower where actions fail still
    scores above 0, and that ranking is what w(c) uses. 0 where every moved voxel had the
    same outcome (or none moved).
    """
    moved, helped, n, rate = _outcomes(gain)
    brier = ((confidence - helped.float()) ** 2 * moved).sum(1, keepdim=True) / n
    reference = rate * (1.0 - rate)
    skill = (1.0 - brier / reference.clamp_min(1e-6)).clamp(0.0, 1.0)
    return torch.where(reference > 0, skill, 0.0)  # one outcome only: nothing to tell apart


def confidence_auc_skill(confidence: torch.Tensor, gain: torch.Tensor) -> torch.Tensor:
    """How well C ranks the actions that helped above those that did not, per step: ``(T, 1)``
    in [0, 1].

    Over the voxels whose p moved: ``2 AUC - 1`` (the Gini coefficient), AUC being the
    chance that a random helpful move has a higher C than a random harmful one (ties count
    half), clipped at 0. Neither a threshold nor the share of helpful moves enters: a
    confidence that approves every action but less where actions fail scores above 0, and
    one that only knows what the policy knows still ranks its doubts (README "Fourteenth
    round"). 0 where every moved voxel had the same outcome (or none moved).
    """
    moved, helped, _, _ = _outcomes(gain)
    out = torch.zeros(confidence.shape[0], 1, dtype=confidence.dtype, device=confidence.device)
    for row in range(confidence.shape[0]):
        c, good = confidence[row][moved[row]], helped[row][moved[row]]
        n_good = int(good.sum())
        n_bad = int(good.numel()) - n_good
        if not n_good or not n_bad:
            continue
        _, inverse, counts = torch.unique(c, return_inverse=True, return_counts=True)
        upper = torch.cumsum(counts, 0).to(c.dtype)
        ranks = (upper - (counts.to(c.dtype) - 1.0) / 2.0)[inverse]  # mean rank of tied values
        auc = (ranks[good].sum() - n_good * (n_good + 1) / 2.0) / (n_good * n_bad)
        out[row, 0] = (2.0 * auc - 1.0).clamp(0.0, 1.0)
    return out


def _outcomes(gain: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(moved, helped, n, rate)`` of per-voxel gains ``(T, N)``: which voxels moved and
    which gained (``(T, N)`` bool), the moved count and the share that gained (``(T, 1)``)."""
    moved = gain != 0
    helped = gain > 0
    n = moved.sum(1, keepdim=True).clamp_min(1)
    return moved, helped, n, (helped & moved).sum(1, keepdim=True) / n


#: How the confidence gate scores the confidence net (``confidence_skill`` setting).
CONFIDENCE_SKILLS = {"accuracy": confidence_skill, "brier": confidence_brier_skill,
                     "auc": confidence_auc_skill}


def gated_confidence_weight(
    inputs: ShapingInputs, alpha: float = 0.8, beta: float = 1.0, confidence_form: str = "focal",
    confidence_gate: bool = True, confidence_skill: str = "accuracy",
) -> torch.Tensor:
    """w(c_i) of MECCA's self-adaptive reward, ``(T, N)`` (MECCA.md §3, Eq. 8).

    ``confidence_gate`` (default): rely on the confidence only as far as it beats chance at
    that step (skill s from :data:`CONFIDENCE_SKILLS`: ``"accuracy"`` of ``C > 0.5``, the
    ``"brier"`` skill score or ``"auc"``, 2 AUC - 1): ``w = s w(c) + (1 - s) w(0.5)``, so a confidence net that
    has not learned yet (or has stopped being right) gives every voxel the uninformative
    weight w(0.5) instead of steering by noise.
    """
    assert inputs.confidence is not None
    weight = confidence_weight(inputs.confidence, alpha, beta, confidence_form)
    if confidence_gate:
        skill = gate_skill(inputs.confidence, inputs.gain, confidence_skill)
        neutral = confidence_weight(torch.full_like(skill, 0.5), alpha, beta, confidence_form)
        weight = skill * weight + (1.0 - skill) * neutral
    return weight


def gate_skill(confidence: torch.Tensor, gain: torch.Tensor, kind: str = "accuracy") -> torch.Tensor:
    """The gate's skill ``(T, 1)`` of ``confidence`` ``(T, N)`` by the :data:`CONFIDENCE_SKILLS`
    entry ``kind``."""
    try:
        score = CONFIDENCE_SKILLS[kind]
    except KeyError:
        raise ValueError(f"confidence_skill must be one of {sorted(CONFIDENCE_SKILLS)}, got {kind!r}") from None
    return score(confidence, gain)


def confidence_weighting(
    inputs: ShapingInputs, alpha: float = 0.8, beta: float = 1.0, confidence_form: str = "focal",
    confidence_gate: bool = True, confidence_skill: str = "accuracy",
) -> torch.Tensor:
    """MECCA's self-adaptive reward r_i = w(c_i) * gain_i (MECCA.md §3, Eq. 8), with w from
    :func:`gated_confidence_weight` (a confidence without skill leaves IteR-MRL's reward,
    scaled by w(0.5))."""
    return gated_confidence_weight(inputs, alpha, beta, confidence_form, confidence_gate,
                                   confidence_skill) * inputs.gain


register_weighting("none", no_weighting)
register_weighting("focal_prob", focal_prob_weighting)
register_weighting("error_region", error_region_weighting)
register_weighting("confidence", confidence_weighting, needs_confidence=True)
