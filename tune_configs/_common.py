"""Shared pieces of the ``tune_configs/`` experiments (``mecca tune CONFIG``).

Convention: every ``tune_configs/NAME.py`` exposes

    get_experiment(smoke: bool = False, **overrides) -> (trainable, param_space, tune_config, run_config)

and a module docstring stating what it sweeps, the metric and the scheduler. ``overrides``
are train-config settings keyed ``"section.key"`` exactly as ``mecca train --override``
(``{"training.lr": 3e-4, "env_config.shape": [16, 32, 32]}``; sections in
``mecca_rllib.train.SECTIONS``); an override of a swept key fixes it (removes it from the
search). Most configs are three lines on top of :func:`make_experiment`.

The metric every sweep optimises is :data:`METRIC`: the mean final-step Dice of
deterministic (argmax) episodes on held-out volumes (``split="test"``, see
``mecca_rllib.train.held_out_env_config``), produced by RLlib's evaluation every
:data:`EVAL_EVERY` iterations (``evaluation_interval``) and logged per episode by
``mecca_rllib.callbacks.FinalDiceCallback``.

``smoke=True`` (``mecca tune --smoke``): shape (8, 16, 16), at most 2 trials, 1 iteration
each, no GPUs, ``num_env_runners=0``, ``num_learners=0``.
"""
from __future__ import annotations

import copy
import math
import os
from collections.abc import Callable, Mapping
from typing import Any

from mecca_rllib.train import (PRESETS, SECTIONS, apply_train_config, build_algorithm_config,
                               held_out_env_config)

METRIC = "evaluation/env_runners/dice_final"  # flattened Tune result key, see FinalDiceCallback
MODE = "max"
EVAL_EVERY = 5  # training iterations between two evaluations (``evaluation_interval``)
SMOKE_SHAPE = (8, 16, 16)
MAX_SMOKE_TRIALS = 2

Experiment = tuple[Any, dict[str, Any], Any, Any]  # (trainable, param_space, TuneConfig, RunConfig)


# ------------------------------------------------------------------------ train configs
def base_train_config(preset: str = "demo") -> dict[str, Any]:
    """A deep copy of a ``mecca train`` preset (``demo``: CPU-sized, ``paper``: MECCA.md §6)."""
    if preset not in PRESETS:
        raise ValueError(f"preset {preset!r}: expected one of {sorted(PRESETS)}")
    return copy.deepcopy(PRESETS[preset])


def set_key(config: dict[str, Any], key: str, value: Any) -> None:
    """Set ``config[section][...][name] = value`` for ``key = "section.name"`` (or ``"seed"``)."""
    parts = key.split(".")
    if parts[0] not in SECTIONS:
        raise ValueError(f"override {key!r}: unknown section {parts[0]!r}; one of {list(SECTIONS)}")
    if len(parts) == 1:
        config[key] = value
        return
    node = config
    for part in parts[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ValueError(f"override {key!r}: {part!r} is not a section")
    node[parts[-1]] = value


def smoke_train_config(config: dict[str, Any]) -> dict[str, Any]:
    """The smallest runnable version of ``config``: 8x16x16, 2 steps, 1 iteration, CPU only."""
    config = copy.deepcopy(config)
    env = config.setdefault("env_config", {})
    env.update(shape=list(SMOKE_SHAPE), num_cases=4, steps=2, initial_clicks=4, clicks_per_step=2,
               hint_kernel=2, augment=False)
    config.setdefault("model_config", {}).update(width=4, dilations=[1, 1, 1, 1, 1],
                                                  conf_dilations=[1, 1, 1, 1, 1, 1])
    config.setdefault("training", {}).update(train_batch_size_per_learner=2)
    config["training"].pop("minibatch_size", None)  # one update of the tiny batch
    config["env_runners"] = {**config.get("env_runners", {}), "num_env_runners": 0,
                             "num_envs_per_env_runner": 1}
    config["learners"] = {**config.get("learners", {}), "num_learners": 0, "num_gpus_per_learner": 0}
    config["resources"] = {}
    config["stop"] = {"training_iteration": 1}
    config["evaluation"] = {**config.get("evaluation", {}), "episodes": 1}
    return config


# ------------------------------------------------------------------------ algorithm
def configure(algo_config, train_config: Mapping[str, Any]):
    """Apply a train config's sections to any ``AlgorithmConfig`` (PPO, APPO, ...), as
    ``mecca_rllib.train.build_algorithm_config`` does for ``MECCAConfig``."""
    return apply_train_config(algo_config, train_config)


def with_evaluation(algo_config, train_config: Mapping[str, Any], *, every: int):
    """Add held-out, deterministic evaluation every ``every`` iterations and the Dice callback."""
    from mecca_rllib.callbacks import FinalDiceCallback

    episodes = int(train_config.get("evaluation", {}).get("episodes", 16))
    return (
        algo_config
        .evaluation(
            evaluation_interval=every,
            evaluation_duration=episodes,
            evaluation_duration_unit="episodes",
            evaluation_num_env_runners=0,
            evaluation_config={"env_config": held_out_env_config(dict(train_config)), "explore": False},
        )
        .callbacks(FinalDiceCallback)
    )


def asha(max_t: int, grace_period: int | None = None):
    """ASHA on ``training_iteration`` (metric and mode come from ``TuneConfig``);
    rungs land on evaluation iterations (multiples of ``EVAL_EVERY``)."""
    from ray.tune.schedulers import ASHAScheduler

    grace = grace_period or max(EVAL_EVERY, max_t // 9)
    return ASHAScheduler(time_attr="training_iteration", max_t=max(max_t, grace), grace_period=grace,
                         reduction_factor=3)


def reporter(search: Mapping[str, Any]):
    """Tune's CLI reporter: swept keys as parameter columns, iteration, time and Dice."""
    from ray import tune

    return tune.CLIReporter(
        parameter_columns=[_space_key(k) for k in search],
        metric_columns={"training_iteration": "iter", "time_total_s": "time (s)",
                        "mecca/dice_final": "train dice@T", METRIC: "eval dice@T"},
        max_report_frequency=30,
    )


def _space_key(key: str) -> str:
    """Flattened param-space key of a ``"section.key"`` search key (see ``_to_param_space``)."""
    section, _, name = key.partition(".")
    if not name:
        return section
    if section == "model_config":
        return f"_model_config/{name}"
    return f"{section}/{name}" if section == "env_config" else name


def _smoke_search(search: dict[str, Any], num_samples: int) -> tuple[dict[str, Any], int]:
    """At most ``MAX_SMOKE_TRIALS`` trials: the first grid keeps its first 2 values, other
    grids their first value; random domains keep their sampler (``num_samples`` limits them)."""
    out, grid_trials = {}, 1
    for key, domain in search.items():
        if isinstance(domain, dict) and "grid_search" in domain:
            keep = max(1, min(len(domain["grid_search"]), MAX_SMOKE_TRIALS // grid_trials))
            out[key] = {"grid_search": list(domain["grid_search"][:keep])}
            grid_trials *= keep
        else:
            out[key] = domain
    return out, max(1, min(num_samples, MAX_SMOKE_TRIALS // grid_trials))


def _to_param_space(algo_config, search: Mapping[str, Any]) -> dict[str, Any]:
    """``algo_config.to_dict()`` with ``"section.key"`` search domains placed where RLlib
    reads them: ``env_config.*``/``model_config.*`` nested, other sections top level."""
    space = algo_config.to_dict()
    for key, domain in search.items():
        section, _, name = key.partition(".")
        if section in ("env_config", "model_config"):
            slot = "_model_config" if section == "model_config" else section  # to_dict's names
            space[slot] = {**(space.get(slot) or {}), name: domain}
        elif section in ("training", "env_runners", "learners", "resources") and name:
            space[name] = domain
        elif key == "seed":
            space["seed"] = domain
        else:
            raise ValueError(f"search key {key!r}: cannot sweep section {section!r}")
    return space


def make_experiment(
    name: str,
    *,
    train_config: dict[str, Any],
    search: Mapping[str, Any] | None = None,
    num_samples: int = 1,
    smoke: bool = False,
    overrides: Mapping[str, Any] | None = None,
    algo_config_fn: Callable[[dict[str, Any]], Any] = build_algorithm_config,
    trainable: Any = "MECCA",
    scheduler: bool = True,
    eval_every: int = EVAL_EVERY,
) -> Experiment:
    """Assemble ``(trainable, param_space, tune_config, run_config)``.

    Args:
        name: experiment name (folder under the storage path).
        train_config: a ``mecca train`` config (sections of ``SECTIONS``).
        search: ``{"section.key": tune domain}`` (``tune.grid_search``, ``tune.uniform``...).
        num_samples: Tune's ``num_samples`` (repeats every grid point).
        smoke: shrink to the smoke size (module docstring).
        overrides: ``{"section.key": value}`` applied last; fixes a swept key.
        algo_config_fn: train config -> ``AlgorithmConfig`` (PPO/APPO configs pass theirs).
        trainable: what ``tune.Tuner`` runs (a registered name or an ``Algorithm`` class).
        scheduler: use ASHA (sweeps) or none (single runs).
        eval_every: evaluation interval in training iterations (1 when smoke).
    """
    from ray import tune

    train_config = copy.deepcopy(train_config)
    search = dict(search or {})
    if smoke:
        train_config = smoke_train_config(train_config)
        search, num_samples = _smoke_search(search, num_samples)
        eval_every = 1
    for key, value in (overrides or {}).items():
        set_key(train_config, key, value)
        search.pop(key, None)
    max_t = int(train_config.get("stop", {}).get("training_iteration", 100))
    if not smoke:  # stop on an evaluation iteration so the last result carries METRIC
        max_t = max(eval_every, math.ceil(max_t / eval_every) * eval_every)
        train_config.setdefault("stop", {})["training_iteration"] = max_t

    algo_config = with_evaluation(algo_config_fn(train_config), train_config, every=eval_every)
    param_space = _to_param_space(algo_config, search)
    tune_config = tune.TuneConfig(
        metric=METRIC,
        mode=MODE,
        num_samples=num_samples,
        scheduler=asha(max_t) if scheduler and not smoke else None,
    )
    run_config = tune.RunConfig(
        name=name,
        progress_reporter=reporter(search),
        storage_path=os.path.abspath(os.path.expanduser("~/mecca_tune")),
        stop=dict(train_config.get("stop", {})),
        checkpoint_config=tune.CheckpointConfig(
            checkpoint_at_end=True, num_to_keep=2, checkpoint_score_attribute=None
        ),
    )
    return trainable, param_space, tune_config, run_config
