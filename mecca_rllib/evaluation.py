"""Run a MECCA module on the interactive environment and record what happened.

Used by ``mecca train`` (trained vs untrained table and plot), by the interaction guide
and by ``mecca evaluate``.
"""
from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

AdviceFn = Callable[[np.ndarray, np.ndarray, int], "np.ndarray | None"]
"""``advice_fn(obs (3, D, H, W), confidence (D, H, W), step) -> bool mask (D, H, W) | None``."""


@dataclass
class EpisodeTrace:
    """One evaluation episode."""

    case: str
    label: np.ndarray  # uint8 (D, H, W)
    probabilities: np.ndarray  # float32 (T+1, D, H, W): p after reset and after each step
    dice: np.ndarray  # (T+1,)
    clicks: np.ndarray  # int (K, 3)
    policy_ms: np.ndarray  # (T,) module forward time per step, milliseconds


def _choose(logits: torch.Tensor, explore: bool, generator: torch.Generator) -> torch.Tensor:
    """uint8 action indices ``(B, D, H, W)`` from logits ``(B, 6, D, H, W)``: argmax, or a
    categorical sample (Gumbel-max with ``generator``, so no global RNG is touched)."""
    if explore:
        u = torch.rand(logits.shape, generator=generator, dtype=logits.dtype)
        logits = logits - torch.log(-torch.log(u.clamp_min(1e-20)))
    return logits.argmax(dim=1).to(torch.uint8)


@torch.no_grad()
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
    mode). ``options`` are passed to ``env.reset`` (e.g. ``{"case": 3}``).
    """
    was_training = module.training
    module.eval()
    generator = torch.Generator().manual_seed(int(seed))
    try:
        obs, info = env.reset(seed=int(seed), options=options)
        probs, dice, times = [obs[1].copy()], [float(info["dice"])], []
        done = False
        step = 0
        while not done:
            x = torch.from_numpy(np.ascontiguousarray(obs, dtype=np.float32))[None]
            start = time.perf_counter()
            action = _choose(module.policy_logits(x), explore, generator)
            times.append((time.perf_counter() - start) * 1000.0)
            if advice_fn is not None:
                conf = module.confidence(x, module.action_values_of(action))[0].numpy()
                env.set_advice(advice_fn(obs, conf, step))
            obs, _, terminated, truncated, info = env.step(action[0].numpy())
            probs.append(obs[1].copy())
            dice.append(float(info["dice"]))
            done = terminated or truncated
            step += 1
        return EpisodeTrace(
            case=str(info.get("case", "")),
            label=np.asarray(env.label, dtype=np.uint8),
            probabilities=np.stack(probs).astype(np.float32),
            dice=np.asarray(dice),
            clicks=np.asarray(info.get("clicks", np.zeros((0, 3), int))),
            policy_ms=np.asarray(times),
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
