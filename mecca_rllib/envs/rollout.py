"""The one rollout core: how a policy acts on the interactive task (MECCA.md §1).

- :func:`choose_actions`: one action per voxel from the policy's logits, the argmax or a
  categorical sample (Gumbel-max with a ``torch.Generator``; no global RNG is touched);
- :func:`step_tenths`: ``p <- clip(p + a, 0, 1)`` on p's exact 0.1 grid (integer tenths),
  for numpy arrays (the env) and torch tensors (the session, :func:`policy_step`);
- :func:`policy_step`: a MECCA module's step on one observation: logits, actions, new p and
  (optionally) the confidence of the chosen actions (MECCA.md §2);
- :func:`play_episode`: the interaction loop (the policy acts, the advice function may
  restrict the user's next clicks, the episode moves on), over anything with ``obs``,
  ``steps`` and ``advance(out, advice)``: :class:`EnvEpisode` (an ``InteractiveSegEnv``)
  or the benchmark's :class:`mecca_rllib.baselines.Interaction`.

A policy here is any ``policy(obs, *, with_confidence) -> StepOutput`` (a
``Segmenter.step``, or :func:`policy_step` with its module bound). Modules are duck-typed:
``policy_logits(obs) -> (B, 6, D, H, W)`` and ``confidence(obs, action_values) -> (B, D, H, W)``.
"""
from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import torch

from mecca_rllib.envs.spaces import ACTION_TENTHS, ACTION_VALUES

__all__ = [
    "AdviceFn",
    "EnvEpisode",
    "Episode",
    "StepOutput",
    "StepRecord",
    "action_values",
    "choose_actions",
    "module_device",
    "play_episode",
    "policy_step",
    "probability",
    "step_tenths",
]

AdviceFn = Callable[[np.ndarray, np.ndarray, int], "np.ndarray | None"]
"""``advice_fn(obs (2 + C, D, H, W), confidence (D, H, W), step) -> bool mask (D, H, W) | None``
(the interaction guide, MECCA.md §4; e.g. :func:`mecca_rllib.guide.make_advice_fn`)."""

_TENTHS = torch.tensor(ACTION_TENTHS.tolist(), dtype=torch.int8)
_VALUES = torch.tensor(ACTION_VALUES.tolist(), dtype=torch.float32)


@dataclass
class StepOutput:
    """What a policy returns for one interaction step.

    Attributes:
        p: float32 ``(D, H, W)`` new foreground probability in [0, 1].
        confidence: float32 ``(D, H, W)`` confidence of the step's action in [0, 1]
            (MECCA.md §2), or None (not asked for, or no confidence network).
        actions: uint8 ``(D, H, W)`` action indices (RL policies), or None.
    """

    p: np.ndarray
    confidence: np.ndarray | None = None
    actions: np.ndarray | None = None


def choose_actions(
    logits: torch.Tensor, *, explore: bool = False, generator: torch.Generator | None = None
) -> torch.Tensor:
    """int64 action indices ``(B, D, H, W)`` from logits ``(B, 6, D, H, W)``: the argmax, or
    with ``explore`` a categorical sample (Gumbel-max, uniforms drawn from ``generator``)."""
    if explore:
        u = torch.rand(logits.shape, generator=generator, dtype=logits.dtype, device=logits.device)
        logits = logits - torch.log(-torch.log(u.clamp_min(1e-20)))
    return logits.argmax(dim=1)


def step_tenths(tenths: Any, actions: Any, out: np.ndarray | None = None) -> Any:
    """``p <- clip(p + a, 0, 1)`` in integer tenths (MECCA.md §1), so p stays on its 0.1 grid.

    ``tenths`` (p * 10, integers) and ``actions`` (indices into ``ACTION_VALUES``) are numpy
    arrays (``out`` may be ``tenths`` itself: updated in place) or torch tensors (a new
    tensor on ``tenths``' device). The result keeps ``tenths``' integer dtype.
    """
    if isinstance(tenths, torch.Tensor):
        table = _TENTHS.to(tenths.device)
        return (tenths + table[actions.long()]).clamp_(0, 10)
    new = np.add(tenths, np.take(ACTION_TENTHS, actions), out=out)
    return np.clip(new, 0, 10, out=new)


def probability(tenths: Any) -> Any:
    """Integer tenths -> float32 p (``k / 10`` exactly rounded), numpy or torch."""
    if isinstance(tenths, torch.Tensor):
        return tenths.to(torch.float32) / 10
    return np.asarray(tenths).astype(np.float32) / np.float32(10)


def action_values(actions: torch.Tensor) -> torch.Tensor:
    """Action indices (any integer dtype) -> float32 probability increments, same device."""
    return _VALUES.to(actions.device)[actions.long()]


def module_device(module: Any) -> torch.device:
    """The device of a module's parameters (CPU for a module without any)."""
    param = next(iter(module.parameters()), None) if hasattr(module, "parameters") else None
    return param.device if param is not None else torch.device("cpu")


@torch.inference_mode()
def policy_step(
    module: Any,
    obs: np.ndarray,
    *,
    explore: bool = False,
    generator: torch.Generator | None = None,
    with_confidence: bool = False,
) -> StepOutput:
    """One step of a MECCA module on an observation ``(2 + C, D, H, W)`` (MECCA.md §1-2):
    its actions (:func:`choose_actions`), the new p (:func:`step_tenths` on the observation's
    p) and, with ``with_confidence``, the confidence of the chosen actions."""
    x = torch.from_numpy(np.ascontiguousarray(obs, dtype=np.float32))[None].to(module_device(module))
    actions = choose_actions(module.policy_logits(x), explore=explore, generator=generator)
    tenths = step_tenths(torch.round(x[0, 1] * 10).to(torch.int8), actions[0])
    confidence = None
    if with_confidence:
        confidence = module.confidence(x, action_values(actions))[0].float().cpu().numpy()
    return StepOutput(p=probability(tenths).cpu().numpy(), confidence=confidence,
                      actions=actions[0].to(torch.uint8).cpu().numpy())


class Episode(Protocol):
    """What :func:`play_episode` plays: the current observation, the number of steps T and
    ``advance`` (apply the policy's output, then let the user click, restricted to
    ``advice`` when given, unless it was the last step)."""

    obs: np.ndarray
    steps: int

    def advance(self, out: StepOutput, advice: np.ndarray | None) -> dict[str, Any]: ...


class EnvEpisode:
    """An ``InteractiveSegEnv`` episode as an :class:`Episode`: reset at construction
    (``seed``, ``options``), then each ``advance`` sets the advice and steps the env with the
    output's ``actions`` (the env moves p itself, :func:`step_tenths`). ``info`` is the env's
    latest info dict."""

    def __init__(self, env: Any, *, seed: int | None = None, options: dict[str, Any] | None = None) -> None:
        self.env = env
        self.obs, self.info = env.reset(seed=seed, options=options)
        self.steps = int(env.config["steps"])

    def advance(self, out: StepOutput, advice: np.ndarray | None) -> dict[str, Any]:
        if out.actions is None:
            raise ValueError("the environment needs actions: the policy returned only p")
        self.env.set_advice(advice)
        self.obs, _, _, _, self.info = self.env.step(out.actions)
        return self.info


@dataclass
class StepRecord:
    """One step of :func:`play_episode`.

    Attributes:
        step: 0-based step index t.
        obs: the observation the policy acted on (a copy; ``obs[1]`` is p before the step).
        out: the policy's output.
        info: what ``episode.advance`` returned (the env's info; ``{}`` otherwise).
        policy_ms: wall time of the policy call, milliseconds.
        interaction_ms: wall time of the advice regions and ``advance`` (the user's next
            clicks and hint map), milliseconds.
    """

    step: int
    obs: np.ndarray
    out: StepOutput
    info: dict[str, Any] = field(default_factory=dict)
    policy_ms: float = 0.0
    interaction_ms: float = 0.0


def play_episode(
    episode: Episode,
    policy: Callable[..., StepOutput],
    *,
    advice_fn: AdviceFn | None = None,
    on_step: Callable[[StepRecord], None] | None = None,
) -> list[StepRecord]:
    """Play ``episode.steps`` interaction steps of ``policy`` on ``episode`` (MECCA.md §1).

    Each step: ``out = policy(obs, with_confidence=advice_fn is not None)``; when more
    clicks follow, ``advice_fn(obs, out.confidence, t)`` gives the mask the user's next
    clicks are restricted to (guided mode, MECCA.md §4); ``episode.advance(out, advice)``.
    ``on_step`` sees every :class:`StepRecord` as it happens; all are returned.
    """
    records = []
    for t in range(int(episode.steps)):
        obs = episode.obs.copy()
        start = time.perf_counter()
        out = policy(obs, with_confidence=advice_fn is not None)
        policy_ms = (time.perf_counter() - start) * 1e3
        start = time.perf_counter()
        advice = None
        if advice_fn is not None and t + 1 < episode.steps:
            advice = advice_fn(obs, out.confidence, t)
        info = episode.advance(out, advice) or {}
        record = StepRecord(t, obs, out, info, policy_ms, (time.perf_counter() - start) * 1e3)
        if on_step is not None:
            on_step(record)
        records.append(record)
    return records
