"""One MECCA run at the paper's size (MECCA.md §6) on a GPU cluster: distributed learners
and env runners, results on shared or object storage.

Settings (all ``--override``-able): ``learners.num_learners`` = 2 DDP learners with
``learners.num_gpus_per_learner`` = 1 (fractions share a GPU, e.g. 0.5), ``NODES`` x
``ENV_RUNNERS_PER_NODE`` env runners (``env_runners.num_env_runners``), and the storage path
(``--storage /shared/runs`` or ``--storage s3://bucket/runs``; every node must reach it).
Sweeps nothing (one trial; grow ``training.train_batch_size_per_learner`` with the learners).
Metric: ``_common.METRIC`` (final-step Dice of deterministic episodes on held-out phantoms,
every ``_common.EVAL_EVERY`` iterations), maximised.
Scheduler: none (a single trial).
"""
from __future__ import annotations

from _common import base_train_config, make_experiment

NODES = 2
ENV_RUNNERS_PER_NODE = 4


def get_experiment(smoke: bool = False, **overrides):
    config = base_train_config("paper")
    config["env_runners"] = {"num_env_runners": NODES * ENV_RUNNERS_PER_NODE,
                             "num_cpus_per_env_runner": 1}
    config["learners"] = {"num_learners": 2, "num_gpus_per_learner": 1}
    config["training"]["train_batch_size_per_learner"] = 40
    return make_experiment("gpu_cluster", train_config=config, smoke=smoke, overrides=overrides,
                           scheduler=False)
