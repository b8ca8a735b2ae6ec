"""Label efficiency (the paper's Table 3 shape): Dice against the fraction of labeled volumes.

Sweeps ``env_config.labeled_fraction`` in {0.125, 0.25, 0.5, 1.0} (4 trials) on the ``demo``
preset with MECCA.md §5 on: unlabeled training volumes still get clicks and train the
segmentation network against simulated labels where the gradient mask passes (delta 0.85,
+0.00025 per epoch = ``num_cases`` episodes, at most 0.99); labeled and unlabeled episodes
alternate as in Algorithm 1 (``env_config.labeled_episode_ratio=0.5``; at fraction 1.0
every episode is labeled). Simulated-label agreement with the hidden truth is reported
(``mecca/sim_label_agreement``, env-side, monitoring only) at every evaluation.
Metric: ``_common.METRIC`` (final-step Dice of deterministic episodes on held-out, fully
labeled phantoms, every ``_common.EVAL_EVERY`` iterations), maximised; one row per fraction.
Scheduler: none: every fraction gets the same budget.
``--override training.simulated_labels=False`` gives the baseline that ignores unlabeled volumes.
"""
from __future__ import annotations

from ray import tune

from _common import EVAL_EVERY, base_train_config, make_experiment

FRACTIONS = (0.125, 0.25, 0.5, 1.0)


def get_experiment(smoke: bool = False, **overrides):
    config = base_train_config("demo")
    config["env_config"].update(labeled_episode_ratio=0.5)
    config["training"].update(simulated_labels=True, delta_start=0.85, delta_growth=0.00025,
                              delta_max=0.99, agreement_episodes=2, agreement_interval=EVAL_EVERY)
    search = {"env_config.labeled_fraction": tune.grid_search(list(FRACTIONS))}
    return make_experiment("label_fraction", train_config=config, search=search, smoke=smoke,
                           overrides=overrides, scheduler=False)
