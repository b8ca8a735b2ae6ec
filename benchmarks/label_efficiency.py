"""Label efficiency on phantoms: final-step Dice vs labeled fraction, with and without
simulated labels (MECCA.md §5; the shape of the paper's Table 3).

For each labeled fraction, MECCA trains for the same fixed budget (``--updates`` learner
updates of ``--episodes`` complete episodes each; labeled and unlabeled cases alternate as
in Algorithm 1, ``labeled_episode_ratio=0.5``) in two arms:

- ``simulated``: unlabeled episodes train the segmentation network against simulated
  labels where the gradient mask passes (``simulated_labels=True``);
- ``ignored``: unlabeled episodes are sampled but contribute nothing (``simulated_labels=False``).

Both arms start from the demo preset's warm start: a P-Net pre-trained for
``--warm-start-steps`` env steps (default: the preset's) on the run's *labeled* cases only (``mecca pretrain``), which
count inside the budget. At fraction 1.0 there is no unlabeled case and both arms are the
same run (trained once).
Each trained module is evaluated deterministically (argmax) on held-out phantoms
(``split="test"``, all labeled); the table shows the final-step Dice (mean ± std over
seeds) and, for the
simulated arm, the env-side agreement of simulated labels with the hidden truth and the
fraction of unlabeled voxels passing the mask at the end of training. No Ray cluster: an
EnvRunner and a Learner are built directly (as in ``tests/test_algorithm_learning.py``).

    .venv/bin/python benchmarks/label_efficiency.py                  # ~40 min on 2 CPU cores
    .venv/bin/python benchmarks/label_efficiency.py --fractions 0.25 1.0 --updates 10 --seeds 0
    .venv/bin/python benchmarks/label_efficiency.py --warm-start-steps 0   # RL from scratch
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch


def train_config(args: argparse.Namespace, fraction: float, simulated: bool, seed: int) -> dict:
    """A ``mecca train`` config (the ``demo`` settings at a small shape)."""
    from mecca_rllib.train import load_train_config

    config = load_train_config("demo")
    config["env_config"].update(
        shape=list(args.shape), num_cases=args.num_cases, labeled_fraction=fraction,
        labeled_episode_ratio=0.5, seed=seed,
    )
    config["training"].update(
        simulated_labels=simulated, train_batch_size_per_learner=args.episodes * config["env_config"]["steps"],
        delta_start=args.delta_start, delta_growth=args.delta_growth, delta_max=args.delta_max,
    )
    config["evaluation"].update(episodes=args.eval_episodes)
    if args.warm_start_steps is not None:
        config["warm_start"] = {**config.get("warm_start", {}), "env_steps": args.warm_start_steps}
    config["seed"] = seed
    return config


def train_and_evaluate(args: argparse.Namespace, fraction: float, simulated: bool, seed: int) -> dict:
    """Train one arm for the fixed budget; held-out final-step Dice and label statistics."""
    from mecca_rllib.algorithm import MECCAEnvRunner
    from mecca_rllib.envs import InteractiveSegEnv
    from mecca_rllib.evaluation import evaluate
    from mecca_rllib.policies.learner import EPISODES_TRAINED_LIFETIME
    from mecca_rllib.policies.simulated_labels import simulated_label_agreement
    from mecca_rllib.policies.warm_start import warm_start_from_file
    from mecca_rllib.train import build_algorithm_config, held_out_env_config, prepare_warm_start

    with tempfile.TemporaryDirectory(prefix="mecca_label_eff_") as tmp:
        # Pre-trained on the labeled cases only (MECCA.md §5: unlabeled labels stay hidden).
        config = prepare_warm_start(train_config(args, fraction, simulated, seed), Path(tmp) / "warm.pt")
        algo_config = build_algorithm_config(config).environment(InteractiveSegEnv)
        torch.manual_seed(seed)
        runner = MECCAEnvRunner(config=algo_config)
        learner = algo_config.build_learner(env=runner.env)
        if config["training"].get("init_from"):
            path = config["training"]["init_from"]
            policy = learner.module["default_policy"]
            policy.set_state(warm_start_from_file(policy.get_state(), path, algo_config.model_config,
                                                  action_scale=algo_config.init_from_scale))
            runner.module.set_state(policy.get_state(inference_only=True))
    schedule = algo_config.delta_schedule()
    trained, start = 0, time.perf_counter()
    for _ in range(args.updates):
        episodes = runner.sample(num_episodes=args.episodes)
        learner.update(episodes=episodes, timesteps={"num_env_steps_sampled_lifetime": 0,
                                                     EPISODES_TRAINED_LIFETIME: trained})
        trained += len(episodes)
        runner.module.set_state(learner.module["default_policy"].get_state(inference_only=True))
    train_s = time.perf_counter() - start
    module = learner.module["default_policy"].unwrapped()
    traces = evaluate(module, held_out_env_config(config), episodes=args.eval_episodes,
                      seed=10_000, progress=False)
    out = {"dice": float(np.mean([t.dice[-1] for t in traces])), "train_s": train_s}
    if fraction < 1.0:
        env = InteractiveSegEnv(config["env_config"])
        agreement = simulated_label_agreement(module, env, delta=schedule(trained), episodes=4, seed=seed)
        out["agreement"] = agreement.get("agreement", float("nan"))
        out["mask_fraction"] = agreement.get("mask_fraction", float("nan"))
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--fractions", type=float, nargs="+", default=[0.125, 0.25, 0.5, 1.0])
    p.add_argument("--shape", type=int, nargs=3, default=[8, 16, 16], metavar=("D", "H", "W"))
    p.add_argument("--num-cases", type=int, default=32, help="training phantoms")
    p.add_argument("--updates", type=int, default=60, help="learner updates per run (the RL budget)")
    p.add_argument("--episodes", type=int, default=4,
                   help="complete episodes per update (the demo samples 4 volumes together)")
    p.add_argument("--warm-start-steps", type=int, default=None,
                   help="env steps of the labeled-only P-Net warm start (0: none), inside the "
                        "budget (default: the demo preset's)")
    p.add_argument("--eval-episodes", type=int, default=16, help="held-out phantoms evaluated")
    p.add_argument("--delta-start", type=float, default=0.85)
    p.add_argument("--delta-growth", type=float, default=0.00025)
    p.add_argument("--delta-max", type=float, default=0.99)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    p.add_argument("--threads", type=int, default=2, help="torch intra-op threads")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)

    rows = []
    for fraction in sorted(args.fractions):
        arms = {}
        for simulated in (True, False) if fraction < 1.0 else (True,):
            runs = [train_and_evaluate(args, fraction, simulated, seed) for seed in args.seeds]
            arms[simulated] = {k: float(np.mean([r.get(k, np.nan) for r in runs])) for k in runs[0]}
            arms[simulated]["dice_std"] = float(np.std([r["dice"] for r in runs]))
            print(f"fraction {fraction:.3f} {'simulated' if simulated else 'ignored'}: "
                  f"{arms[simulated]}", flush=True)
        arms.setdefault(False, arms[True])
        rows.append((fraction, arms))

    print(f"\nFinal-step Dice on {args.eval_episodes} held-out phantoms {tuple(args.shape)}, "
          f"{train_config(args, 1.0, False, 0)['warm_start'].get('env_steps', 0)} warm-start env "
          f"steps + {args.updates} updates x "
          f"{args.episodes} episodes, seeds {args.seeds}")
    head = (f"{'labeled':>8} {'simulated':>15} {'ignored':>15} {'gain':>7} {'sim. agree':>11} "
            f"{'mask frac':>10} {'train s':>8}")
    print(head)
    print("-" * len(head))
    for fraction, arms in rows:
        sim, ign = arms[True], arms[False]
        print(f"{fraction:>8.3f} {sim['dice']:>7.3f} ± {sim['dice_std']:.3f} {ign['dice']:>7.3f} ± "
              f"{ign['dice_std']:.3f} {sim['dice'] - ign['dice']:>+7.3f} "
              f"{sim.get('agreement', np.nan):>11.3f} {sim.get('mask_fraction', np.nan):>10.3f} "
              f"{sim['train_s'] + ign['train_s'] * (ign is not sim):>8.0f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
