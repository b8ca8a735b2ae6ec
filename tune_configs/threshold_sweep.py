"""Sweep the simulated-label gradient-mask threshold delta (MECCA.md §5, Eqs. 10-11).

Sweeps: ``delta_start`` in {0.8, 0.85, 0.9} x ``delta_growth`` per epoch in {1e-4, 2.5e-4,
1e-3} x ``delta_max`` in {0.95, 0.99} (18 trials) on the ``demo`` preset with half of the
training volumes unlabeled (``env_config.labeled_fraction=0.5``) and simulated labels on.
Metric: ``_common.METRIC`` (final-step Dice of deterministic episodes on held-out,
fully labeled phantoms, evaluated every ``_common.EVAL_EVERY`` iterations), maximised.
Scheduler: ASHA on ``training_iteration``.
"""
from __future__ import annotations

from ray import tune

from _common import base_train_config, make_experiment


def get_experiment(smoke: bool = False, **overrides):
    config = base_train_config("demo")
    config["env_config"].update(labeled_fraction=0.5)
    config["training"].update(simulated_labels=True)
    config["stop"] = {"training_iteration": 300}
    search = {
        "training.delta_start": tune.grid_search([0.8, 0.85, 0.9]),
        "training.delta_growth": tune.grid_search([1e-4, 2.5e-4, 1e-3]),
        "training.delta_max": tune.grid_search([0.95, 0.99]),
    }
    return make_experiment("threshold_sweep", train_config=config, search=search, smoke=smoke,
                           overrides=overrides)
