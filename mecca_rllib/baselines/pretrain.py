"""Supervised pre-training of MECCA's warm start: a P-Net on the training data, written as a
warm-start file (``policies/warm_start.py``) for ``MECCAConfig.training(init_from=...)``.

    mecca pretrain --config demo --env-steps 800 --out pnet.pt
    mecca train --config demo --init-from pnet.pt

By default (``kind="deepigeos"``) the P-Net trains with the DeepIGeoS-like loop of
:mod:`mecca_rllib.baselines.supervised`: single interactions from image and hint map, one
environment step of the benchmark's budget per volume (the policy's p channel starts with
zero weights, and RL learns to read it). ``kind="intercnn"`` unrolls whole interactions on
its own previous prediction (every channel the policy reads); it collapsed one atlas seed
(README "Sixth round").
"""
from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from mecca_rllib.baselines.interaction import ClickSchedule
from mecca_rllib.baselines.supervised import KINDS, SupervisedSettings, train_supervised
from mecca_rllib.budget import Budget
from mecca_rllib.data import AugmentedSource, VolumeSource, open_source
from mecca_rllib.envs import DEFAULT_CONFIG as ENV_DEFAULTS
from mecca_rllib.policies.warm_start import save_warm_start

__all__ = ["WARM_START_KIND", "pretrain_warm_start", "training_source"]

#: The supervised loop whose network initialises MECCA's policy (README "Sixth round").
WARM_START_KIND = "deepigeos"


class _LabeledCases(VolumeSource):
    """The labeled cases of a source (a view: nothing is copied)."""

    def __init__(self, source: VolumeSource) -> None:
        self._source = source
        self._index = np.flatnonzero(np.asarray(source.labeled, dtype=bool))
        self.names = [source.names[i] for i in self._index]
        self.shape = source.shape
        self.labeled = np.ones(len(self._index), dtype=bool)

    def get(self, index: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        return self._source.get(int(self._index[self._check_index(index)]), rng)


def training_source(env_config: Mapping[str, Any]) -> VolumeSource:
    """The training cases an ``InteractiveSegEnv`` with ``env_config`` draws from, augmented
    as it augments them (``augment``)."""
    cfg = {**ENV_DEFAULTS, **env_config}
    source = cfg["dataset"]
    if not isinstance(source, VolumeSource):
        source = open_source(cfg["dataset"], cfg["shape"], num_cases=cfg["num_cases"], split=cfg["split"],
                             labeled_fraction=cfg["labeled_fraction"], seed=cfg["seed"],
                             channel=cfg["channel"], label_value=cfg["label_value"])
    return AugmentedSource(source) if cfg["augment"] else source


def pretrain_warm_start(source: VolumeSource, out: str | os.PathLike, *,
                        env_steps: int | None = None, seconds: float | None = None, schedule: ClickSchedule, width: int, dilations: tuple[int, ...],
                        lr: float = 1e-3, seed: int = 0, device: str = "cpu",
                        kind: str = WARM_START_KIND) -> tuple[Path, dict[str, float]]:
    """Train a ``kind`` P-Net on ``source`` for ``env_steps`` (or ``seconds`` of wall time)
    and write it to ``out``.

    Only labeled cases train it (the supervised loss needs the truth). Returns the file and
    what the training spent (``env_steps``, ``updates``, ``seconds``).
    """
    if (env_steps is None) == (seconds is None):
        raise ValueError("pass one of env_steps and seconds")
    budget = Budget("env_steps", env_steps) if env_steps is not None else Budget("seconds", seconds)
    labeled = _LabeledCases(source)
    if len(labeled) == 0:
        raise ValueError(f"{source!r}: no labeled case to pre-train the warm start on")
    settings = SupervisedSettings(width=width, dilations=tuple(dilations), lr=lr,
                                  schedule=schedule, seed=seed, device=device)
    trained = train_supervised(kind, labeled, budget, settings)
    channels = KINDS[kind][0]
    path = save_warm_start(out, trained.segmenter.net.state_dict(), channels=channels,
                           width=width, dilations=dilations,
                           meta={"kind": kind, **{k: float(v) for k, v in trained.spent.items()}})
    return path, trained.spent
