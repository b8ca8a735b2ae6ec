"""The benchmarked methods and how each is trained under one budget.

Supervised baselines train with the plain torch loops of
:mod:`mecca_rllib.baselines.supervised`; MECCA and its reward ablations (IteR-MRL and its
Focal-/Err- variants, MECCA.md §3-4) train through RLlib (``MECCAConfig``) in-process
(0 env runners, local learner) and are evaluated through
:class:`~mecca_rllib.baselines.ModuleSegmenter`. A new method plugs in as a
:class:`MethodSpec` whose ``train`` returns a :class:`~mecca_rllib.baselines.TrainResult`.
"""
from __future__ import annotations

import shutil
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from mecca_rllib.baselines import (
    ClickSchedule,
    ModuleSegmenter,
    SupervisedSettings,
    TrainResult,
    train_supervised,
)
from mecca_rllib.baselines.pretrain import WARM_START_KIND
from mecca_rllib.budget import Budget, BudgetTracker
from mecca_rllib.data import VolumeSource

__all__ = ["METHODS", "MethodSpec", "TrainSettings", "method_names", "select_methods", "train_rl"]


@dataclass(frozen=True)
class TrainSettings:
    """Settings every method trains with (the same backbone width for all, MECCA.md §2).

    Attributes:
        width: channels of every dilated block.
        dilations: the 5 block dilations (MECCA: 3 shared + 2 head blocks).
        conf_dilations: the confidence net's 6 block dilations (RL methods).
        lr: learning rate of every network (Adam).
        schedule: the simulated user's click schedule.
        rl_batch_env_steps: env steps sampled per RLlib training iteration.
        rl_envs: volumes the env runner steps together (``num_envs_per_env_runner``).
        entropy_coeff: RL entropy bonus (a float or a schedule ``[[env_steps, value], ...]``).
        rl_training: further ``MECCAConfig.training`` keywords of the RL methods (e.g.
            ``oracle_coeff``), the same for every RL method.
        rl_lr: the RL methods' policy learning rate, a float or a schedule over their RL
            env steps (None: ``lr``); their confidence nets and the warm start keep ``lr``.
        rl_warm_start: share of an RL method's budget spent pre-training its warm start (a
            supervised P-Net, ``baselines/pretrain.py``) before RL spends the rest; 0: none.
        rl_warm_start_kind: which supervised loop trains it (``baselines.supervised.KINDS``).
        rl_warm_start_lr: its learning rate (None: ``lr``).
        seed: seeds all training.
        keep_side: the RL methods' keep-side prior (``model_config["keep_side"]``; 0: off).
        rl_model_config: further ``model_config`` keys of the RL methods' module (e.g.
            ``conf_signed``), the same for every RL method.
        device: ``"cpu"`` or ``"cuda"`` for the networks being trained (RL: the learner).
        augment: every method trains on randomly flipped and quarter-turned training cases
            (``data.AugmentedSource``, MECCA.md §6; the demo preset's ``env_config.augment``).
    """

    width: int = 16
    dilations: tuple[int, ...] = (1, 2, 4, 8, 16)
    conf_dilations: tuple[int, ...] = (1, 2, 4, 8, 16, 1)
    lr: float = 1e-4
    schedule: ClickSchedule = field(default_factory=ClickSchedule)
    rl_batch_env_steps: int = 40
    rl_envs: int = 1
    entropy_coeff: float | list[list[float]] = 0.0
    rl_training: Mapping[str, Any] = field(default_factory=dict)
    rl_warm_start: float = 0.0
    rl_warm_start_kind: str = WARM_START_KIND
    rl_warm_start_lr: float | None = None
    rl_lr: float | list[list[float]] | None = None
    seed: int = 0
    device: str = "cpu"
    keep_side: float = 0.0
    rl_model_config: Mapping[str, Any] = field(default_factory=dict)
    augment: bool = False

    def model_config(self) -> dict[str, Any]:
        """The MECCA RLModule's ``model_config`` at these settings."""
        return {**self.rl_model_config, "width": self.width, "dilations": list(self.dilations),
                "conf_dilations": list(self.conf_dilations), "keep_side": self.keep_side}

    def supervised(self) -> SupervisedSettings:
        """The same settings for the supervised loops."""
        return SupervisedSettings(width=self.width, dilations=self.dilations, lr=self.lr,
                                  schedule=self.schedule, seed=self.seed, device=self.device)


Trainer = Callable[[VolumeSource, Budget, TrainSettings], TrainResult]


@dataclass(frozen=True)
class MethodSpec:
    """One benchmarked method.

    Attributes:
        name: display name (a table row).
        family: ``"supervised"`` or ``"rl"``.
        train: ``train(source, budget, settings) -> TrainResult``.
        reward_weighting: RL methods: the reward weighting (MECCA.md §3), for the ablation.
        guided_variant: also evaluate with the interaction guide (MECCA.md §4).
    """

    name: str
    family: str
    train: Trainer
    reward_weighting: str | None = None
    guided_variant: bool = False


def train_rl(weighting: str, source: VolumeSource, budget: Budget, settings: TrainSettings,
             name: str = "MECCA") -> TrainResult:
    """Train MECCA with ``reward_weighting=weighting`` through RLlib until ``budget`` is spent.

    One ``algo.train()`` per iteration (``rl_batch_env_steps`` env steps of complete
    episodes); env steps are RLlib's lifetime count of sampled steps. With
    ``settings.rl_warm_start`` > 0 that share of the budget first pre-trains the policy's
    warm start (its env steps, or its seconds, count as spent). Returns the learner's
    full module (policy, value head, confidence net) wrapped in a ``ModuleSegmenter``.
    Needs a running Ray (``ray.init``) or starts a local one.
    """
    import torch

    from mecca_rllib import MECCAConfig
    from mecca_rllib.algorithm import GATE_SKILL, MECCA_RESULTS
    from mecca_rllib.policies.checkpoints import build_module

    env_config = {**settings.schedule.env_config(), "dataset": source,
                  "shape": list(source.shape)}
    tracker = budget.tracker()
    warm: dict[str, Any] = {}
    if settings.rl_warm_start > 0:
        warm, tracker = _warm_start(source, budget, settings)
    config = (
        MECCAConfig()
        .environment("mecca_seg", env_config=env_config)
        .rl_module(model_config=settings.model_config())
        .training(reward_weighting=weighting, lr=settings.rl_lr or settings.lr, confidence_lr=settings.lr,
                  entropy_coeff=settings.entropy_coeff,
                  train_batch_size_per_learner=settings.rl_batch_env_steps,
                  **dict(settings.rl_training), **warm)
        .env_runners(num_env_runners=0, num_envs_per_env_runner=settings.rl_envs)
        .learners(num_learners=0, num_gpus_per_learner=int(settings.device.startswith("cuda")))
        .debugging(seed=settings.seed)
    )
    algo = config.build_algo()
    losses: list[float] = []
    gate: list[float] = []  # the confidence gate's skill per iteration (MECCA with a gate only)
    spent_before = tracker.env_steps
    try:
        while not tracker.updates or not tracker.exhausted:
            result = algo.train()
            tracker.env_steps = spent_before + int(result["env_runners"]["num_env_steps_sampled_lifetime"])
            tracker.updates += 1
            learner = result.get("learners", {}).get("default_policy", {})
            if "policy_loss" in learner:
                losses.append(float(learner["policy_loss"]))
            if GATE_SKILL in result.get(MECCA_RESULTS, {}):
                gate.append(float(result[MECCA_RESULTS][GATE_SKILL]))
        weights = algo.learner_group.get_weights()["default_policy"]
    finally:
        logdir = Path(getattr(algo, "logdir", "") or "")
        algo.stop()
        if logdir.is_dir() and not any(logdir.iterdir()):
            shutil.rmtree(logdir)  # the empty results folder the Trainable made under ~/ray_results
    module = build_module(settings.model_config(), tuple(source.shape))
    module.load_state_dict({k: torch.as_tensor(v) for k, v in weights.items()})
    module.to(settings.device).eval()
    spent = tracker.summary()
    if gate:  # how much the self-adaptive reward was MECCA's own (0: IteR-MRL's, scaled)
        spent |= {"gate_skill_mean": round(float(np.mean(gate)), 4),
                  "gate_open_share": round(float(np.mean(np.asarray(gate) > 0)), 4)}
    return TrainResult(ModuleSegmenter(module, name=name), spent, losses)


def _warm_start(source: VolumeSource, budget: Budget,
                settings: TrainSettings) -> tuple[dict[str, Any], BudgetTracker]:
    """Pre-train the warm start on ``settings.rl_warm_start`` of ``budget``; returns the
    ``training(init_from=...)`` keyword and a tracker of the whole budget charged with it."""
    import tempfile

    from mecca_rllib.baselines.pretrain import pretrain_warm_start

    share = Budget(budget.kind, budget.amount * settings.rl_warm_start)
    if share.kind == "env_steps":
        steps, seconds = int(share.amount), None
    else:
        steps, seconds = None, share.amount
    tracker = budget.tracker()
    folder = Path(tempfile.mkdtemp(prefix="mecca_warm_start_"))
    path, spent = pretrain_warm_start(
        source, folder / "warm_start.pt", env_steps=steps, seconds=seconds,
        schedule=settings.schedule, width=settings.width, dilations=settings.dilations,
        lr=settings.rl_warm_start_lr or settings.lr, seed=settings.seed, device=settings.device,
        kind=settings.rl_warm_start_kind)
    tracker.spend(int(spent["env_steps"]), int(spent["updates"]))
    return {"init_from": str(path)}, tracker


def _supervised(kind: str) -> Trainer:
    def train(source: VolumeSource, budget: Budget, settings: TrainSettings) -> TrainResult:
        return train_supervised(kind, source, budget, settings.supervised())

    return train


def _rl(weighting: str, name: str) -> Trainer:
    return partial(train_rl, weighting, name=name)


#: Table 1's methods (MECCA.md §7) that this project implements, plus the reward ablation.
METHODS: tuple[MethodSpec, ...] = (
    MethodSpec("P-Net", "supervised", _supervised("pnet")),
    MethodSpec("DeepIGeoS", "supervised", _supervised("deepigeos")),
    MethodSpec("InterCNN", "supervised", _supervised("intercnn")),
    MethodSpec("IteR-MRL", "rl", _rl("none", "IteR-MRL"), reward_weighting="none"),
    MethodSpec("Focal-IteR-MRL", "rl", _rl("focal_prob", "Focal-IteR-MRL"),
               reward_weighting="focal_prob"),
    MethodSpec("Err-IteR-MRL", "rl", _rl("error_region", "Err-IteR-MRL"),
               reward_weighting="error_region"),
    MethodSpec("MECCA", "rl", _rl("confidence", "MECCA"), reward_weighting="confidence",
               guided_variant=True),
)


def method_names() -> list[str]:
    """Names of the registered methods, in table order."""
    return [m.name for m in METHODS]


def select_methods(names: list[str] | None) -> list[MethodSpec]:
    """The registered methods named in ``names`` (case-insensitive); None = all."""
    if not names:
        return list(METHODS)
    lookup = {m.name.lower(): m for m in METHODS}
    unknown = [n for n in names if n.lower() not in lookup]
    if unknown:
        raise ValueError(f"--methods: unknown method(s) {unknown}; choose from {method_names()}")
    wanted = {n.lower() for n in names}
    return [m for m in METHODS if m.name.lower() in wanted]
