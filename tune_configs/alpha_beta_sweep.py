"""Sweep MECCA's self-adaptive reward: alpha, beta and the confidence form (MECCA.md §3, Eq. 8).

Sweeps: ``alpha`` in {0.6, 0.8, 1.0} x ``beta`` in {0.5, 1, 2} x ``confidence_form`` in
{``focal``, ``paper``} (18 trials) on the ``demo`` preset, ``reward_weighting="confidence"``.
Metric: ``_common.METRIC`` (final-step Dice of deterministic episodes on held-out phantoms,
evaluated every ``_common.EVAL_EVERY`` iterations), maximised.
Scheduler: ASHA on ``training_iteration`` (rungs on evaluation iterations).
Fractional GPUs: ``--override learners.num_gpus_per_learner=0.25`` packs 4 trials per GPU.
"""
from __future__ import annotations

from ray import tune

from _common import base_train_config, make_experiment


def get_experiment(smoke: bool = False, **overrides):
    config = base_train_config("demo")
    config["training"].update(reward_weighting="confidence")
    config["stop"] = {"training_iteration": 300}
    search = {
        "training.alpha": tune.grid_search([0.6, 0.8, 1.0]),
        "training.beta": tune.grid_search([0.5, 1.0, 2.0]),
        "training.confidence_form": tune.grid_search(["focal", "paper"]),
    }
    return make_experiment("alpha_beta_sweep", train_config=config, search=search, smoke=smoke,
                           overrides=overrides)
