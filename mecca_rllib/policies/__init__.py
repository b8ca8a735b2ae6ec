"""MECCA's learning parts on RLlib's new API stack (MECCA.md §2-3).

``networks`` (dilated 3D CNNs), ``distribution`` (``VoxelCategorical``), ``rl_module``
(``MECCATorchRLModule``), ``returns`` (per-voxel signals), ``reward_shaping`` (weighting
registry), ``connectors`` (learner connector), ``learner`` (``MECCATorchLearner``),
``checkpoints`` (load / export the module).

The names below are imported on first use (module ``__getattr__``): ``distribution`` and
``rl_module`` import RLlib, and the pure-torch parts (``networks``, ``checkpoints``' readers)
must load without it (an exported model runs without Ray, ``mecca_rllib.inference``).
"""
from __future__ import annotations

import importlib
from typing import Any

__all__ = ["MECCATorchRLModule", "VoxelCategorical", "get_weighting", "register_weighting"]

_LAZY = {
    "VoxelCategorical": "mecca_rllib.policies.distribution",
    "get_weighting": "mecca_rllib.policies.reward_shaping",
    "register_weighting": "mecca_rllib.policies.reward_shaping",
    "MECCATorchRLModule": "mecca_rllib.policies.rl_module",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
