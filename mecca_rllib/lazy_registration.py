"""Register mecca-rllib's Ray names on first use, so ``import mecca_rllib`` stays light.

``import mecca_rllib`` must not import Ray (an exported model runs without it), yet
``tune.Tuner("MECCA", ...)`` and RLlib's ``"mecca_seg"`` env name must work once Ray is in
use. :func:`register_when_ray_loads` calls :func:`mecca_rllib.registration.register_all`
at once when Ray's Tune registry is already imported; otherwise it puts a small finder on
``sys.meta_path`` that wraps the loaders of ``ray.tune.registry``, ``ray.tune``,
``ray.rllib`` and every ``mecca_rllib.*`` module: right after one of them has been executed,
and while none of the others is still half-initialised (``register_all`` imports RLlib and
``mecca_rllib.algorithm``, which imports the policies), it registers and removes itself. The Gymnasium ids (no Ray needed) are registered at once.
"""
from __future__ import annotations

import importlib.abc
import sys
import warnings
from typing import Any

from mecca_rllib.registration import ENV_NAME, GYM_ID, register_all

__all__ = ["register_gym_ids", "register_when_ray_loads", "registered"]

_WATCHED = ("ray.tune.registry", "ray.tune", "ray.rllib")
_state = {"done": False, "running": False}


def registered() -> bool:
    """Whether this process has registered the names (through this module)."""
    return _state["done"]


def _watched(name: str) -> bool:
    return name in _WATCHED or name.startswith("mecca_rllib.")


def _busy(finished: str | None) -> bool:
    """Whether a watched module other than ``finished`` is still running its body."""
    for name, module in list(sys.modules.items()):
        if name != finished and _watched(name):
            if getattr(getattr(module, "__spec__", None), "_initializing", False):
                return True
    return False


def _maybe_register(finished: str | None = None) -> None:
    """Register if Tune's registry is loaded and no watched module is mid-import."""
    if _state["done"] or _state["running"] or "ray.tune.registry" not in sys.modules:
        return
    if _busy(finished):
        return  # one of them is still running its body: its own loader will call back
    _state["running"] = True
    try:
        register_all()
        _state["done"] = True
    except Exception as err:  # never break the user's `import ray...`
        _state["done"] = True
        warnings.warn(f"mecca-rllib could not register its Ray names ({type(err).__name__}: {err})",
                      RuntimeWarning, stacklevel=2)
    finally:
        _state["running"] = False
        if _state["done"]:
            sys.meta_path[:] = [f for f in sys.meta_path if not isinstance(f, _RegisteringFinder)]


class _RegisteringLoader(importlib.abc.Loader):
    """Runs the real loader, then gives registration a chance."""

    def __init__(self, loader: Any, name: str) -> None:
        self._loader, self._name = loader, name

    def create_module(self, spec: Any) -> Any:
        return self._loader.create_module(spec)

    def exec_module(self, module: Any) -> None:
        try:
            self._loader.exec_module(module)
        finally:  # the module keeps its real loader
            module.__loader__ = self._loader
            if getattr(module, "__spec__", None) is not None:
                module.__spec__.loader = self._loader
        _maybe_register(self._name)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._loader, name)


class _RegisteringFinder(importlib.abc.MetaPathFinder):
    """Finds the watched modules with the other finders and wraps their loaders."""

    def find_spec(self, fullname: str, path: Any, target: Any = None) -> Any:
        if not _watched(fullname):
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None:
                if spec.loader is not None and hasattr(spec.loader, "exec_module"):
                    spec.loader = _RegisteringLoader(spec.loader, fullname)
                return spec
        return None


def register_gym_ids() -> None:
    """The Gymnasium ids of the env (``gymnasium.make``), as ``register_all`` registers them."""
    import gymnasium

    for gym_id in (GYM_ID, ENV_NAME):
        if gym_id not in gymnasium.registry:
            gymnasium.register(id=gym_id, entry_point="mecca_rllib.envs:InteractiveSegEnv")


def register_when_ray_loads() -> None:
    """Register now if Ray's Tune registry is imported, else as soon as it is (idempotent);
    the Gymnasium ids at once."""
    register_gym_ids()
    _maybe_register()
    if not _state["done"] and not any(isinstance(f, _RegisteringFinder) for f in sys.meta_path):
        sys.meta_path.insert(0, _RegisteringFinder())
