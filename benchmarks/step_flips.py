"""Why Dice falls at some interaction steps: which voxels change side, and do they come back?

For a trained module (``mecca export`` format, e.g. ``learning_levers.py --save DIR``) on
the preset's held-out phantoms (argmax actions, the evaluation protocol of ``mecca train``),
per step transition t -> t+1 it prints, as % of all voxels:

- ``fixed``: voxels whose side (p > 0.5 is foreground) changes to the true one;
- ``broken``: voxels whose side changes to the wrong one;
- ``near 0.5``: share of the broken voxels that sat at p in {0.5, 0.6} before the step;
- ``broken FP``: share of the broken voxels that became false positives (background
  voxels pushed over 0.5);
- ``back``: share of the voxels that changed side at t-1 -> t and change back at t -> t+1
  (a period-2 oscillation: no action leaves p where it is, MECCA.md §1).

It also prints the predicted foreground volume over the true one per step (> 1: over-
segmentation) and, per step, the share of voxels at each tenth of p around the threshold
(0.3-0.7) and at odd tenths: p starts at 0.5 and a +-0.1 step changes a tenth's parity, so a
voxel that hedges with +-0.1 can sit at 0.5 (background) only after even steps and at 0.6
(foreground) only after odd ones. ``--bench DATASET`` trains MECCA as ``mecca bench --small --validation``
does (same settings, budget, ``--seed`` and ``--override``; ``--env-steps N`` another
budget) and plays the bench's protocol on the validation cases instead of loading a module:

    .venv/bin/python benchmarks/learning_levers.py --config demo --save /tmp/demo_module
    .venv/bin/python benchmarks/step_flips.py --module /tmp/demo_module --config demo
    .venv/bin/python benchmarks/step_flips.py --bench atlas --seed 0 --env-steps 4000   # ~4 min on 1 core
"""
from __future__ import annotations

import argparse
import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _bench_validation import (add_bench_arguments, bench_settings, open_validation,  # noqa: E402
                               train_like_bench, validation_episodes)


def flip_table(probabilities: list[np.ndarray], labels: list[np.ndarray]) -> list[dict[str, float]]:
    """Per transition t -> t+1 (t >= 1): fixed / broken / near-0.5 / back shares, in %.

    ``probabilities``: per episode ``(T+1, D, H, W)`` p after reset and after every step;
    ``labels``: per episode ``(D, H, W)`` truth.
    """
    steps = probabilities[0].shape[0] - 1
    rows = []
    for t in range(1, steps):
        fixed = broken = near = back = changed_before = voxels = false_pos = 0
        for p, label in zip(probabilities, labels):
            side = p > 0.5  # (T+1, D, H, W)
            truth = label.astype(bool)
            change = side[t + 1] != side[t]
            fixed += int((change & (side[t + 1] == truth)).sum())
            bad = change & (side[t + 1] != truth)
            broken += int(bad.sum())
            false_pos += int((bad & side[t + 1]).sum())
            tenths = np.rint(p[t] * 10)
            near += int((bad & ((tenths == 5) | (tenths == 6))).sum())
            before = side[t] != side[t - 1]
            changed_before += int(before.sum())
            back += int((before & change).sum())
            voxels += truth.size
        rows.append({"transition": f"{t} -> {t + 1}", "fixed": 100 * fixed / voxels,
                     "broken": 100 * broken / voxels,
                     "near_0.5": 100 * near / max(broken, 1),
                     "broken_fp": 100 * false_pos / max(broken, 1),
                     "back": 100 * back / max(changed_before, 1)})
    return rows


def foreground_ratio(probabilities: list[np.ndarray], labels: list[np.ndarray]) -> np.ndarray:
    """``(T,)`` mean over episodes of predicted foreground voxels / true ones after each step."""
    return np.mean([(p[1:] > 0.5).reshape(len(p) - 1, -1).sum(1) / max(int(label.sum()), 1)
                    for p, label in zip(probabilities, labels)], axis=0)


def tenth_shares(probabilities: list[np.ndarray]) -> np.ndarray:
    """``(T, 11)`` mean over episodes of the % of voxels at p = 0.0, 0.1, ..., 1.0 after
    each step (p moves on its grid of tenths, MECCA.md §1)."""
    return np.mean([[100 * np.bincount(np.rint(step * 10).astype(np.int64).ravel(), minlength=11)[:11] / step.size
                     for step in p[1:]] for p in probabilities], axis=0)


def bench_traces(dataset: str, seed: int, overrides: list[str],
                 env_steps: int | None = None) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Train MECCA as ``mecca bench --small --validation --dataset DATASET --seed SEED`` does
    and play the bench's protocol on the validation cases: per episode ``(T+1, D, H, W)`` p
    and the ``(D, H, W)`` label."""
    from mecca_rllib.envs.rollout import play_episode

    data = open_validation(dataset)
    segmenter = train_like_bench("confidence", data, bench_settings(seed, overrides), env_steps)
    probabilities, labels = [], []
    for label, episode in validation_episodes(data):
        segmenter.start(episode.obs[0])
        p = [episode.p.copy()]
        for rec in play_episode(episode, segmenter.step):
            p.append(np.asarray(rec.out.p, np.float32))
        probabilities.append(np.stack(p))
        labels.append(label)
    return probabilities, labels


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--module", help="exported module folder (mecca export)")
    source.add_argument("--bench", metavar="DATASET",
                        help="train MECCA as `mecca bench --small --validation` on DATASET instead")
    add_bench_arguments(p, prefix="--bench: ")
    p.add_argument("--config", default="demo", help="train preset or config file (held-out data)")
    p.add_argument("--episodes", type=int, default=16)
    p.add_argument("--eval-seed", type=int, default=20_000,
                   help="held-out phantoms and clicks: 20000 validation (default), 10000 the test phantoms")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)

    from mecca_rllib.evaluation import evaluate
    from mecca_rllib.metrics import dice as dice_score
    from mecca_rllib.policies.checkpoints import load_rl_module
    from mecca_rllib.train import held_out_env_config, load_train_config

    if args.bench:
        probabilities, labels = bench_traces(args.bench, args.seed, args.override, args.env_steps)
    else:
        module = load_rl_module(args.module)
        env_config = held_out_env_config(load_train_config(args.config), args.eval_seed)
        traces = evaluate(module, env_config, episodes=args.episodes, seed=args.eval_seed, progress=False)
        probabilities, labels = [t.probabilities for t in traces], [t.label for t in traces]
    dice = np.mean([[dice_score(p[t] > 0.5, label) for t in range(len(p))]
                    for p, label in zip(probabilities, labels)], axis=0)
    print(f"mean Dice per step (0 = after reset): {' '.join(f'{d:.3f}' for d in dice)}")
    ratio = foreground_ratio(probabilities, labels)
    print(f"predicted / true foreground per step: {' '.join(f'{r:.3f}' for r in ratio)}")
    shares = tenth_shares(probabilities)
    print(f"{'step':>4} " + " ".join(f"{'p=0.' + str(k) + ' %':>9}" for k in range(3, 8)) + f" {'odd tenths %':>13}")
    for t, row in enumerate(shares, start=1):
        print(f"{t:>4} " + " ".join(f"{row[k]:>9.2f}" for k in range(3, 8)) + f" {row[1::2].sum():>13.2f}")
    print(f"{'transition':>10} {'fixed %':>8} {'broken %':>9} {'broken near 0.5 %':>18} "
          f"{'broken FP %':>12} {'back %':>7}")
    for row in flip_table(probabilities, labels):
        print(f"{row['transition']:>10} {row['fixed']:>8.2f} {row['broken']:>9.2f} "
              f"{row['near_0.5']:>18.1f} {row['broken_fp']:>12.1f} {row['back']:>7.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
