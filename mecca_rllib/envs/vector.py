"""Vector-env support for infos whose arrays differ in shape between sub-envs.

Gymnasium's ``SyncVectorEnv`` stacks each info array into one ``(num_envs, *shape)``
array sized by the first sub-env that reports it. ``info["clicks"]`` is ``(K, 3)`` with K
the clicks placed so far, and K differs between sub-envs whenever the simulated user
finds fewer edge voxels or errors than it was asked to click (a small structure), which
made batched sampling fail with "could not broadcast input array from shape (22,3) into
shape (25,3)". :func:`allow_ragged_infos` keeps such a key as an object array (one
array per sub-env) instead; RLlib's ``DictInfoToList`` then hands every sub-env its own.
"""
from __future__ import annotations

from types import MethodType
from typing import Any

import numpy as np

__all__ = ["allow_ragged_infos"]


def _add_ragged_info(self: Any, vector_infos: dict[str, Any], env_info: dict[str, Any],
                     env_num: int) -> dict[str, Any]:
    for key, value in env_info.items():
        stacked = vector_infos.get(key)
        if (isinstance(value, np.ndarray) and isinstance(stacked, np.ndarray)
                and stacked.dtype != object and stacked.shape[1:] != value.shape):
            ragged = np.full(self.num_envs, None, dtype=object)
            for i in np.flatnonzero(vector_infos[f"_{key}"]):
                ragged[i] = stacked[i]
            vector_infos[key] = ragged  # later sub-envs' arrays go in as objects
    return type(self)._add_info(self, vector_infos, env_info, env_num)


def allow_ragged_infos(vector_env: Any) -> Any:
    """Let ``vector_env`` (a gymnasium ``VectorEnv``) stack info arrays of different
    shapes as an object array of per-sub-env arrays. Returns ``vector_env``."""
    vector_env._add_info = MethodType(_add_ragged_info, vector_env)
    return vector_env
