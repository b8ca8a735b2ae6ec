"""Registers mecca-rllib's names with Gymnasium, RLlib (``register_env``) and Tune.

Tune keeps registrations in the running Ray session's key-value store, so they vanish with
``ray.shutdown()``. Two fallbacks keep the names working across Ray sessions:
``"mecca_seg"`` is also a Gymnasium id (RLlib's env runners fall back to ``gym.make`` for a
name Tune does not know), and ``"MECCA"`` is added to RLlib's algorithm table, which Tune
re-registers whenever it meets an unknown trainable name.
"""
from __future__ import annotations

ENV_NAME = "mecca_seg"
TRAINABLE_NAME = "MECCA"
GYM_ID = "mecca_rllib/InteractiveSeg-v0"
_ENTRY_POINT = "mecca_rllib.envs:InteractiveSegEnv"


def _make_env(config):
    from mecca_rllib.envs import InteractiveSegEnv

    return InteractiveSegEnv(config)


def _mecca_class_and_config():
    from mecca_rllib.algorithm import MECCA

    return MECCA, MECCA.get_default_config()


def register_all() -> None:
    """Register the env with Gymnasium and RLlib and the ``MECCA`` trainable with Tune.

    Idempotent: safe to call from every Ray worker process and again after ``ray.init``.
    """
    import gymnasium
    from ray.rllib.algorithms.registry import ALGORITHMS
    from ray.tune.registry import register_env, register_trainable

    for gym_id in (GYM_ID, ENV_NAME):
        if gym_id not in gymnasium.registry:
            gymnasium.register(id=gym_id, entry_point=_ENTRY_POINT)
    register_env(ENV_NAME, _make_env)
    ALGORITHMS.setdefault(TRAINABLE_NAME, _mecca_class_and_config)
    register_trainable(TRAINABLE_NAME, _mecca_class_and_config()[0])
