"""Reward-weighting ablation of MECCA.md §3 / §4.4 (the paper's Fig. 9) on one config.

Sweeps the five reward weightings ("arms"), three seeds each (15 trials), on the ``demo``
preset: ``none`` (IteR-MRL), ``focal_prob`` (Eqs. 12-13), ``error_region`` (Eq. 14), and
the self-adaptive ``confidence`` reward (Eq. 8) in its two forms, ``confidence/focal``
(alpha (1 - c)^beta) and ``confidence/paper`` ((alpha - c)^beta).
The arm is the grid key ``reward_arm``; ``reward_weighting`` and ``confidence_form`` follow
from it. ``--override training.reward_weighting=...`` fixes the weighting (seeds only).
Metric: ``_common.METRIC`` (final-step Dice of deterministic episodes on held-out phantoms,
every ``_common.EVAL_EVERY`` iterations), maximised.
Scheduler: none: an ablation compares every arm at the same budget, so no early stopping.
"""
from __future__ import annotations

from ray import tune

from _common import MAX_SMOKE_TRIALS, base_train_config, make_experiment

ARMS = ("none/focal", "focal_prob/focal", "error_region/focal", "confidence/focal", "confidence/paper")
SEEDS = (0, 1, 2)


def _weighting(spec) -> str:
    return spec.config.reward_arm.split("/")[0]


def _form(spec) -> str:
    return spec.config.reward_arm.split("/")[1]


def get_experiment(smoke: bool = False, **overrides):
    config = base_train_config("demo")
    config["stop"] = {"training_iteration": 300}
    trainable, space, tune_config, run_config = make_experiment(
        "reward_ablation", train_config=config, search={"seed": tune.grid_search(list(SEEDS))},
        smoke=smoke, overrides=overrides, scheduler=False,
    )
    if "training.reward_weighting" not in overrides:
        arms = list(ARMS[-MAX_SMOKE_TRIALS:]) if smoke else list(ARMS)
        if smoke:
            space["seed"] = SEEDS[0]
        space["reward_arm"] = tune.grid_search(arms)
        space["reward_weighting"] = tune.sample_from(_weighting)
        space["confidence_form"] = tune.sample_from(_form)
        run_config.progress_reporter.add_parameter_column("reward_arm")
    return trainable, space, tune_config, run_config
