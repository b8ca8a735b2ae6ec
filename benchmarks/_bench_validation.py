"""Train as ``mecca bench --small --validation`` does and replay its protocol (helper of
``step_flips.py`` and ``confidence_check.py``).

Both scripts study one RL method exactly as the bench trains it (the ``--small`` preset's
settings and budget, a training ``--seed`` and ``--override`` changes) on a dataset's
*validation* cases, so their tables line up with the bench's validation rows.
"""
from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Iterator
from typing import Any

import numpy as np


def add_bench_arguments(parser: argparse.ArgumentParser, prefix: str = "") -> None:
    """``--seed``, ``--override`` and ``--env-steps``, as ``mecca bench`` reads them.
    ``prefix`` starts each help text (e.g. ``"--bench: "`` where training is optional)."""
    parser.add_argument("--seed", type=int, default=0, help=f"{prefix}training seed")
    parser.add_argument("--override", action="append", default=[], metavar="KEY=VALUE",
                        help=f"{prefix}changes to the preset (as mecca bench --override)")
    parser.add_argument("--env-steps", type=int, default=None,
                        help=f"{prefix}budget per method in env steps (default: the --small bench's)")


def bench_settings(seed: int, overrides: list[str]) -> Any:
    """The ``--small`` preset's ``TrainSettings`` with ``overrides`` applied, the training
    ``seed`` and the CPU device (``mecca bench --small --seed SEED --override ...``)."""
    from mecca_rllib.bench.commands import _overridden_settings
    from mecca_rllib.bench.run import SMALL

    settings = _overridden_settings(overrides, preset_sized=True) if overrides else SMALL.settings
    return dataclasses.replace(settings, seed=seed, device="cpu")


def open_validation(dataset: str) -> Any:
    """The bench dataset at the ``--small`` shape with its validation cases as ``.test``."""
    from mecca_rllib.bench.datasets import open_bench_data
    from mecca_rllib.bench.run import SMALL

    return open_bench_data(dataset, SMALL.shape, validation=True)


def train_like_bench(weighting: str, data: Any, settings: Any, env_steps: int | None = None) -> Any:
    """Train ``weighting`` (``confidence`` = MECCA, ``none`` = IteR-MRL) on ``data.train``
    through RLlib in a local Ray that is shut down afterwards; ``env_steps`` (default: the
    ``--small`` budget) is the budget. Returns the bench's ``ModuleSegmenter``."""
    import ray

    from mecca_rllib.budget import Budget
    from mecca_rllib.bench.methods import train_rl
    from mecca_rllib.bench.run import SMALL

    budget = SMALL.budget if env_steps is None else Budget("env_steps", env_steps)
    ray.init(include_dashboard=False, log_to_driver=False, configure_logging=False)
    try:
        return train_rl(weighting, data.train, budget, settings).segmenter
    finally:
        ray.shutdown()


def load_or_train(weighting: str, data: Any, settings: Any, *, load: str | None = None,
                  save: str | None = None, env_steps: int | None = None) -> Any:
    """The RLModule whose state dict ``load`` holds (built for ``settings`` and the data's
    shape), or one trained by :func:`train_like_bench` and, with ``save``, saved there;
    returned in eval mode."""
    import time

    import torch

    from mecca_rllib.policies.checkpoints import build_module

    if load:
        module = build_module(settings.model_config(), tuple(data.train.shape))
        module.load_state_dict(torch.load(load, weights_only=True))
    else:
        start = time.perf_counter()
        module = train_like_bench(weighting, data, settings, env_steps).module
        print(f"trained {weighting} in {time.perf_counter() - start:.0f} s", flush=True)
        if save:
            torch.save(module.state_dict(), save)
    return module.eval()


def validation_episodes(data: Any, readout: str | None = None) -> Iterator[tuple[np.ndarray, Any]]:
    """The bench protocol's episodes on ``data.test``: per repeat and case, its ``(D, H, W)``
    label and a fresh ``Interaction`` (the same cases and clicks as the bench draws);
    ``readout`` replaces the schedule's (:mod:`mecca_rllib.envs.readout`)."""
    from mecca_rllib.baselines import Interaction, with_schedule
    from mecca_rllib.bench.run import SMALL

    protocol = SMALL.protocol
    if readout is not None:
        protocol = with_schedule(protocol, readout=readout)
    for r in range(protocol.repeats):
        for c in range(len(data.test)):
            image, label, clicks = protocol.draw(data.test, r, c)
            yield label, Interaction(image, label, protocol.schedule, clicks)
