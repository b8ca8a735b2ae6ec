"""The same env and RLModule under RLlib's PPO, with and without MECCA's self-adaptive reward.

Sweeps: ``self_adaptive_reward`` in {False, True} (plain per-voxel gain vs. confidence-weighted
reward + confidence net, MECCA.md §3) x ``clip_param`` in {0.1, 0.2} x ``lr`` in {3e-4, 1e-3}
(8 trials) on the ``demo`` preset; PPO with per-voxel GAE advantages
(``mecca_rllib.policies.ppo``), 4 epochs of minibatch 10 per iteration.
Metric: ``_common.METRIC`` (final-step Dice of deterministic episodes on held-out phantoms,
evaluated every ``_common.EVAL_EVERY`` iterations), maximised; directly comparable with
``alpha_beta_sweep`` and ``reward_ablation`` (MECCA).
Scheduler: ASHA on ``training_iteration``.
"""
from __future__ import annotations

from ray import tune

from _common import base_train_config, configure, make_experiment
from mecca_rllib.policies.ppo import MECCAPPO, MECCAPPOConfig


def build_ppo_config(train_config):
    """``MECCAPPOConfig`` from a train config; the minibatch never exceeds the batch."""
    config = configure(MECCAPPOConfig(), train_config)
    config.training(minibatch_size=min(10, config.train_batch_size_per_learner))
    return config


def get_experiment(smoke: bool = False, **overrides):
    config = base_train_config("demo")
    # The demo preset's options that only MECCA's learner knows (class balance, the oracle
    # terms, ...), found by name so that a new MECCA option needs no edit here, and the
    # ones PPO sets itself.
    ppo = MECCAPPOConfig()
    mecca_only = [key for key in config["training"] if not hasattr(ppo, key)]
    for key in (*mecca_only, "confidence_lr", "minibatch_size", "shuffle_batch_per_epoch"):
        config["training"].pop(key, None)
    config["training"].update(lr=1e-3, num_epochs=4)
    config["stop"] = {"training_iteration": 300}
    search = {
        "training.self_adaptive_reward": tune.grid_search([False, True]),
        "training.clip_param": tune.grid_search([0.1, 0.2]),
        "training.lr": tune.grid_search([3e-4, 1e-3]),
    }
    return make_experiment("ppo_swap", train_config=config, search=search, smoke=smoke,
                           overrides=overrides, algo_config_fn=build_ppo_config, trainable=MECCAPPO)
