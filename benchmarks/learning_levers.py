"""Learning levers at a fixed env-step budget: train MECCA from a preset with overrides, then
print the argmax Dice per interaction step on held-out phantoms and what the policy does.

One run per call, so that each lever is measured with the same command and budget:

    .venv/bin/python benchmarks/learning_levers.py --env-steps 4800                       # the demo preset
    .venv/bin/python benchmarks/learning_levers.py --env-steps 4800 \\
        --override 'training.oracle_coeff=[[0, 1.0], [1200, 0.0]]'                        # oracle warm start
    .venv/bin/python benchmarks/learning_levers.py --env-steps 4800 \\
        --override env_runners.num_envs_per_env_runner=1 --override training.train_batch_size_per_learner=5

Evaluation: ``mecca train``'s held-out protocol (``split="test"``, 16 phantoms, deterministic
argmax) on the **validation** phantoms by default: ``--eval-seed 20000`` draws held-out
phantoms (and clicks) from another seed than the test phantoms of ``mecca train`` and the
README (``evaluation.seed``, 10,000), so levers are chosen without looking at test cases.
Training runs in this process (no Tune) and stops at the first iteration that reaches
``--env-steps`` sampled env steps.
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch


def _skills(learner: dict, steps: int) -> str:
    """The confidence gate's skill at each interaction step of the last update, both scorings
    (``reward_shaping.CONFIDENCE_SKILLS``), as ``a/b`` pairs; ``-`` where a step was not logged."""
    pairs = []
    for t in range(steps):
        a, b = (learner.get(f"step{t}/confidence_skill_{k}") for k in ("accuracy", "brier"))
        pairs.append("-" if a is None else f"{a:.2f}/{b:.2f}")
    return " ".join(pairs)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="demo", help="train preset or config file")
    parser.add_argument("--override", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--env-steps", type=int, default=4800, help="training budget in env steps (the demo preset: 4,800)")
    parser.add_argument("--episodes", type=int, default=16, help="held-out evaluation episodes")
    parser.add_argument("--eval-seed", type=int, default=20_000,
                        help="seed of the held-out phantoms and clicks: 20000 validation (default), "
                             "10000 the test phantoms of `mecca train`")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", default=None, help="also write the result here")
    parser.add_argument("--save", default=None, metavar="DIR",
                        help="also export the trained module here (mecca export's format)")
    parser.add_argument("--trace-every", type=int, default=20, help="print training stats every N iterations")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    import ray
    from ray.rllib.utils.metrics import ENV_RUNNER_RESULTS, NUM_ENV_STEPS_SAMPLED_LIFETIME

    import mecca_rllib  # noqa: F401
    from mecca_rllib.evaluation import evaluate
    from mecca_rllib.train import (
        build_algorithm_config,
        held_out_env_config,
        load_train_config,
        prepare_warm_start,
    )

    config = load_train_config(args.config, args.override)
    start = time.perf_counter()
    # A warm_start section pre-trains first; its env steps count inside --env-steps.
    warm_steps = 0 if config.get("training", {}).get("init_from") else int(
        (config.get("warm_start") or {}).get("env_steps", 0))
    config = prepare_warm_start(config, Path(tempfile.mkdtemp(prefix="levers_")) / "warm_start.pt")
    ray.init(include_dashboard=False, log_to_driver=False, configure_logging=False)
    algo = build_algorithm_config(config).build_algo()
    steps, iterations, collapsed = warm_steps, 0, 0
    try:
        while steps < args.env_steps:
            result = algo.train()
            iterations += 1
            steps = warm_steps + int(result[ENV_RUNNER_RESULTS][NUM_ENV_STEPS_SAMPLED_LIFETIME])
            mecca = result.get("mecca", {})
            collapsed += int(mecca.get("collapsed", 0.0) > 0)
            if iterations % args.trace_every == 0:
                learner = result.get("learners", {}).get("default_policy", {})
                last = int(config["env_config"].get("steps", 5)) - 1
                print(f"iter {iterations:4d} env steps {steps:6d}: sampled dice@T "
                      f"{mecca.get('dice_final', float('nan')):.3f}, entropy "
                      f"{learner.get('entropy', float('nan')):.3f}, foreground share "
                      f"{learner.get(f'step{last}/foreground_share', float('nan')):.3f}, "
                      f"+0.4 share {learner.get(f'step{last}/action_share_+0.4', float('nan')):.3f}, "
                      f"gate skill per step (accuracy / brier) {_skills(learner, last + 1)}",
                      flush=True)
        train_s = time.perf_counter() - start
        module = algo.get_module()
        module = module.unwrapped() if hasattr(module, "unwrapped") else module
        if args.save:  # the learner's full module (the env runner's lacks value head and confidence net)
            from mecca_rllib.policies.checkpoints import build_module, save_module

            full = build_module(dict(algo.config.model_config), tuple(config["env_config"]["shape"]))
            weights = algo.learner_group.get_weights()["default_policy"]
            full.load_state_dict({k: torch.as_tensor(v) for k, v in weights.items()})
            save_module(full, args.save)
        traces = evaluate(module, held_out_env_config(config, args.eval_seed), episodes=args.episodes,
                          seed=args.eval_seed, progress=False)
    finally:
        algo.stop()
        ray.shutdown()
    dice = np.stack([t.dice for t in traces]).mean(axis=0)
    rises = np.diff(dice[1:])
    print(f"\n{args.config} {' '.join(args.override)} (held-out seed {args.eval_seed})")
    print(f"{steps} env steps ({warm_steps} of them pre-training the warm start), {iterations} "
          f"RL iterations, {train_s:.0f} s of training, "
          f"{collapsed} iterations flagged collapsed")
    print("argmax Dice per step: " + " ".join(f"{d:.3f}" for d in dice))
    print(f"rises over steps 1-{len(dice) - 1}: " + " ".join(f"{r:+.3f}" for r in rises))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"overrides": args.override, "env_steps": steps, "iterations": iterations,
                       "train_s": train_s, "eval_seed": args.eval_seed, "dice": dice.tolist()}, f, indent=2)


if __name__ == "__main__":
    main()
