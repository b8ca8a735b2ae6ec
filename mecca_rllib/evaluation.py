"""Run a MECCA module on the interactive environment and record what happened.

Used by ``mecca train`` (trained vs untrained table and plot), the interaction guide and
the learning benchmarks. ``mecca evaluate`` runs the paper's protocol instead
(:mod:`mecca_rllib.bench.protocol`); both play through :mod:`mecca_rllib.envs.rollout`.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Any

import numpy as np
import torch

from mecca_rllib.envs.rollout import AdviceFn, EnvEpisode, play_episode, policy_step

__all__ = ["AdviceFn", "EpisodeTrace", "dice_table", "evaluate", "run_episode"]


@dataclass
class EpisodeTrace:
    """One evaluation episode."""

    case: str
    label: np.ndarray  # uint8 (D, H, W)
    probabilities: np.ndarray  # float32 (T+1, D, H, W): p after reset and after each step
    segmentations: np.ndarray  # bool (T+1, D, H, W): the env's readout of p (envs/readout.py)
    dice: np.ndarray  # (T+1,)
    clicks: np.ndarray  # int (K, 3)
    policy_ms: np.ndarray  # (T,) module step time (forward, action choice, new p), milliseconds


def run_episode(
    module: Any,
    env: Any,
    *,
    seed: int,
    explore: bool = False,
    advice_fn: AdviceFn | None = None,
    options: dict[str, Any] | None = None,
) -> EpisodeTrace:
    """Play one episode of ``env`` (an ``InteractiveSegEnv``) with ``module``.

    ``explore=False`` takes the argmax action of every voxel; ``True`` samples (seeded by
    ``seed``). With ``advice_fn``, the confidence of the chosen actions is computed and the
    mask it returns goes to ``env.set_advice(mask)`` before the env's next clicks (guided
    mode). ``options`` are passed to ``env.reset`` (e.g. ``{"case": 3}``). The loop is the
    rollout core's :func:`~mecca_rllib.envs.rollout.play_episode`.
    """
    was_training = module.training
    module.eval()
    policy = partial(policy_step, module, explore=explore,
                     generator=torch.Generator().manual_seed(int(seed)))
    try:
        episode = EnvEpisode(env, seed=int(seed), options=options)
        probs, dice = [episode.obs[1].copy()], [float(episode.info["dice"])]
        segs = [env.segmentation.copy()]
        records = play_episode(episode, policy, advice_fn=advice_fn,
                               on_step=lambda rec: segs.append(env.segmentation.copy()))
        for rec in records:
            probs.append(rec.out.p)
            dice.append(float(rec.info["dice"]))
        info = episode.info
        return EpisodeTrace(
            case=str(info.get("case", "")),
            label=np.asarray(env.label, dtype=np.uint8),
            probabilities=np.stack(probs).astype(np.float32),
            segmentations=np.stack(segs),
            dice=np.asarray(dice),
            clicks=np.asarray(info.get("clicks", np.zeros((0, 3), int))),
            policy_ms=np.asarray([rec.policy_ms for rec in records]),
        )
    finally:
        if was_training:
            module.train()


def evaluate(
    module: Any,
    env_config: dict,
    *,
    episodes: int,
    seed: int = 0,
    explore: bool = False,
    advice_fn: AdviceFn | None = None,
    progress: bool = True,
) -> list[EpisodeTrace]:
    """Run ``episodes`` episodes on a fresh ``InteractiveSegEnv(env_config)`` (tqdm bar).

    Episode i plays case ``i mod num_cases`` with seed ``seed + i``: two modules evaluated
    with the same arguments see the same volumes.
    """
    from tqdm.auto import tqdm

    from mecca_rllib.envs import InteractiveSegEnv

    if episodes < 1:
        raise ValueError(f"episodes must be >= 1, got {episodes}")
    env = InteractiveSegEnv(env_config)
    n_cases = len(env.source) if hasattr(env, "source") else episodes
    try:
        return [
            run_episode(module, env, seed=seed + i, explore=explore, advice_fn=advice_fn,
                        options={"case": i % n_cases})
            for i in tqdm(range(episodes), desc="evaluate", unit="episode", disable=not progress)
        ]
    finally:
        env.close()


def dice_table(curves: dict[str, np.ndarray]) -> str:
    """A plain-text table of mean Dice per step: rows = policies, columns = steps 0..T.

    ``curves``: name -> Dice ``(episodes, T + 1)``.
    """
    steps = next(iter(curves.values())).shape[1]
    head = f"{'policy':<12}" + "".join(f"{'step ' + str(t):>9}" for t in range(steps))
    rows = [head, "-" * len(head)]
    for name, dice in curves.items():
        rows.append(f"{name:<12}" + "".join(f"{v:>9.3f}" for v in np.asarray(dice).mean(axis=0)))
    return "\n".join(rows)
