"""Shared fixtures: tiny MECCA modules and checkpoints (no training run needed)."""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from mecca_rllib.policies.checkpoints import build_module, save_module

@pytest.fixture(autouse=True, scope="session")
def _private_cache_dir(tmp_path_factory):
    """``backend="auto"`` caches its measured choice: keep it out of the user's home."""
    mp = pytest.MonkeyPatch()
    mp.setenv("MECCA_CACHE_DIR", str(tmp_path_factory.mktemp("mecca_cache")))
    yield
    mp.undo()


TINY_NET = {"width": 4, "dilations": (1, 2, 1, 2, 1), "conf_dilations": (1, 2, 1, 2, 1, 1)}


@pytest.fixture(scope="session")
def make_tiny_module() -> Callable[..., torch.nn.Module]:
    """``make(shape=(8, 16, 16), **model_config)``: a seeded, randomly initialised MECCA
    module of width 4 (``model_config`` overrides, e.g. ``hint_channels=2``)."""

    def make(shape: tuple[int, int, int] = (8, 16, 16), **model_config):
        torch.manual_seed(0)
        return build_module({"shape": tuple(shape), **TINY_NET, **model_config})

    return make


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory, make_tiny_module) -> Path:
    """An exported module folder (as ``mecca export`` writes it) for shape (8, 16, 16)."""
    return save_module(make_tiny_module(), tmp_path_factory.mktemp("ckpt") / "exported")
