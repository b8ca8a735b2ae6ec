"""Why Dice falls at some interaction steps: which voxels change side, and do they come back?

For a trained module (``mecca export`` format, e.g. ``learning_levers.py --save DIR``) on
the preset's held-out phantoms (argmax actions, the evaluation protocol of ``mecca train``),
per step transition t -> t+1 it prints, as % of all voxels:

- ``fixed``: voxels whose side (p > 0.5 is foreground) changes to the true one;
- ``broken``: voxels whose side changes to the wrong one;
- ``near 0.5``: share of the broken voxels that sat at p in {0.5, 0.6} before the step;
- ``back``: share of the voxels that changed side at t-1 -> t and change back at t -> t+1
  (a period-2 oscillation: no action leaves p where it is, MECCA.md §1).

    .venv/bin/python benchmarks/learning_levers.py --config demo --save /tmp/demo_module
    .venv/bin/python benchmarks/step_flips.py --module /tmp/demo_module --config demo
"""
from __future__ import annotations

import argparse

import numpy as np
import torch


def flip_table(probabilities: list[np.ndarray], labels: list[np.ndarray]) -> list[dict[str, float]]:
    """Per transition t -> t+1 (t >= 1): fixed / broken / near-0.5 / back shares, in %.

    ``probabilities``: per episode ``(T+1, D, H, W)`` p after reset and after every step;
    ``labels``: per episode ``(D, H, W)`` truth.
    """
    steps = probabilities[0].shape[0] - 1
    rows = []
    for t in range(1, steps):
        fixed = broken = near = back = changed_before = voxels = 0
        for p, label in zip(probabilities, labels):
            side = p > 0.5  # (T+1, D, H, W)
            truth = label.astype(bool)
            change = side[t + 1] != side[t]
            fixed += int((change & (side[t + 1] == truth)).sum())
            bad = change & (side[t + 1] != truth)
            broken += int(bad.sum())
            tenths = np.rint(p[t] * 10)
            near += int((bad & ((tenths == 5) | (tenths == 6))).sum())
            before = side[t] != side[t - 1]
            changed_before += int(before.sum())
            back += int((before & change).sum())
            voxels += truth.size
        rows.append({"transition": f"{t} -> {t + 1}", "fixed": 100 * fixed / voxels,
                     "broken": 100 * broken / voxels,
                     "near_0.5": 100 * near / max(broken, 1),
                     "back": 100 * back / max(changed_before, 1)})
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--module", required=True, help="exported module folder (mecca export)")
    p.add_argument("--config", default="demo", help="train preset or config file (held-out data)")
    p.add_argument("--episodes", type=int, default=16)
    p.add_argument("--eval-seed", type=int, default=20_000,
                   help="held-out phantoms and clicks: 20000 validation (default), 10000 the test phantoms")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)

    from mecca_rllib.evaluation import evaluate
    from mecca_rllib.policies.checkpoints import load_rl_module
    from mecca_rllib.train import held_out_env_config, load_train_config

    module = load_rl_module(args.module)
    env_config = held_out_env_config(load_train_config(args.config), args.eval_seed)
    traces = evaluate(module, env_config, episodes=args.episodes, seed=args.eval_seed, progress=False)
    dice = np.mean([t.dice for t in traces], axis=0)
    print(f"mean Dice per step (0 = after reset): {' '.join(f'{d:.3f}' for d in dice)}")
    print(f"{'transition':>10} {'fixed %':>8} {'broken %':>9} {'broken near 0.5 %':>18} {'back %':>7}")
    for row in flip_table([t.probabilities for t in traces], [t.label for t in traces]):
        print(f"{row['transition']:>10} {row['fixed']:>8.2f} {row['broken']:>9.2f} "
              f"{row['near_0.5']:>18.1f} {row['back']:>7.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
