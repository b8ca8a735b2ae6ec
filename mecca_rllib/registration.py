"""Registers mecca-rllib's names with Gymnasium, RLlib (``register_env``) and Tune."""
from __future__ import annotations

ENV_NAME = "mecca_seg"
TRAINABLE_NAME = "MECCA"
GYM_ID = "mecca_rllib/InteractiveSeg-v0"

_done = False


def _make_env(config):
    from mecca_rllib.envs import InteractiveSegEnv

    return InteractiveSegEnv(config)


def register_all() -> None:
    """Register the env with Gymnasium and RLlib and the ``MECCA`` trainable with Tune.

    Idempotent: safe to call from every Ray worker process.
    """
    global _done
    if _done:
        return
    import gymnasium

    if GYM_ID not in gymnasium.registry:
        gymnasium.register(id=GYM_ID, entry_point="mecca_rllib.envs:InteractiveSegEnv")
    from ray.tune.registry import register_env

    register_env(ENV_NAME, _make_env)

    from ray.tune.registry import register_trainable

    from mecca_rllib.algorithm import MECCA

    register_trainable(TRAINABLE_NAME, MECCA)
    _done = True
