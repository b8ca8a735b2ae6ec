"""mecca-rllib: interactive 3D medical image segmentation with MECCA on Ray RLlib.

Importing the package registers the environment (RLlib: ``"mecca_seg"``, Gymnasium:
``"mecca_rllib/InteractiveSeg-v0"``) and the trainable ``"MECCA"`` with Tune.
"""
from mecca_rllib._version import __version__
from mecca_rllib.registration import register_all

register_all()

from mecca_rllib.algorithm import MECCA, MECCAConfig  # noqa: E402  (after registration)

__all__ = ["MECCA", "MECCAConfig", "__version__", "register_all"]
