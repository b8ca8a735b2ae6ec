"""The env inside an RLlib 2.x EnvRunner (registered as "mecca_seg"), with random actions."""
import numpy as np
import pytest

import mecca_rllib  # noqa: F401  (registers "mecca_seg")


@pytest.mark.slow
def test_env_runner_samples_distinct_truncated_episodes():
    from ray.rllib.algorithms.ppo import PPOConfig
    from ray.rllib.env.single_agent_env_runner import SingleAgentEnvRunner

    class RandomActionRunner(SingleAgentEnvRunner):
        def make_module(self):  # no network needed to exercise the env
            self.module = None

    config = (
        PPOConfig()
        .environment("mecca_seg", env_config={"shape": (8, 16, 16), "num_cases": 4, "steps": 3,
                                              "initial_clicks": 5})
        .env_runners(num_envs_per_env_runner=2, rollout_fragment_length=6)
        .debugging(seed=1)
    )
    runner = RandomActionRunner(config=config)
    episodes = runner.sample(num_timesteps=6, random_actions=True)
    assert len(episodes) == 2 and all(len(e) == 3 and e.is_truncated for e in episodes)
    infos = [e.get_infos() for e in episodes]
    assert all(i[-1]["label"].shape == (8, 16, 16) and len(i[-1]["clicks"]) == 5 + 2 * 5
               for i in infos)
    # The two vector slots are seeded apart: their episodes differ.
    obs = [e.get_observations()[0] for e in episodes]
    assert obs[0].shape == (3, 8, 16, 16) and not np.array_equal(obs[0], obs[1])
    runner.stop()
