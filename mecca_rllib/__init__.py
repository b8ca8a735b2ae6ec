"""mecca-rllib: interactive 3D medical image segmentation with MECCA on Ray RLlib.

``import mecca_rllib`` is light: it does not import Ray (an exported model runs without it,
``mecca_rllib.inference``). The environment (RLlib: ``"mecca_seg"``, Gymnasium:
``"mecca_rllib/InteractiveSeg-v0"``) and the trainable ``"MECCA"`` are registered as soon
as Ray's Tune registry is imported (at once if it already is; ``lazy_registration``), and
``MECCA`` / ``MECCAConfig`` are imported on first use.
"""
from __future__ import annotations

from typing import Any

from mecca_rllib._version import __version__
from mecca_rllib.lazy_registration import register_when_ray_loads
from mecca_rllib.registration import register_all

register_when_ray_loads()

__all__ = ["MECCA", "MECCAConfig", "__version__", "register_all"]


def __getattr__(name: str) -> Any:
    if name in ("MECCA", "MECCAConfig"):
        from mecca_rllib import algorithm  # imports RLlib; registration follows (lazy_registration)

        value = getattr(algorithm, name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
