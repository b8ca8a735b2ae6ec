"""RLlib callbacks shared by ``mecca tune`` and the ready sweeps in ``tune_configs/``.

It sits below both (``tune_cli`` loads ``tune_configs``; both import this module), so no
module imports the one that loads it.
"""
from __future__ import annotations

from ray.rllib.callbacks.callbacks import RLlibCallback

__all__ = ["FINAL_DICE_KEY", "FinalDiceCallback"]

FINAL_DICE_KEY = "dice_final"  # env-runner metric; in results at evaluation/env_runners/dice_final


class FinalDiceCallback(RLlibCallback):
    """Logs each episode's Dice after its last step (``info["dice"]``) as the env-runner
    metric ``dice_final``: mean over the last ``evaluation_duration`` episodes on an
    evaluation runner (one evaluation round), over ``metrics_num_episodes_for_smoothing``
    episodes otherwise."""

    def on_episode_end(self, *, episode, env_runner=None, metrics_logger=None, **kwargs) -> None:
        dice = episode.get_infos(-1).get("dice")
        if metrics_logger is None or dice is None:
            return
        window = 100
        if env_runner is not None:
            cfg = env_runner.config
            evaluating = cfg.in_evaluation and cfg.evaluation_duration_unit == "episodes"
            window = int(cfg.evaluation_duration if evaluating else cfg.metrics_num_episodes_for_smoothing)
        metrics_logger.log_value(FINAL_DICE_KEY, float(dice), reduce="mean", window=max(window, 1))
