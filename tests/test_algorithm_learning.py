"""Learning is real: a reduced demo on tiny phantoms, without a Ray cluster.

An EnvRunner and a Learner built directly (FACTS.md: much faster than ``ray.init``)
train MECCA for a fixed number of updates; on held-out phantoms the trained policy's
Dice (deterministic argmax) must clearly beat the untrained one's at every step.
"""
import numpy as np
import pytest
import torch

from mecca_rllib.evaluation import evaluate
from mecca_rllib.policies.checkpoints import build_module
from mecca_rllib.train import build_algorithm_config, held_out_env_config, load_train_config

pytestmark = pytest.mark.slow

UPDATES = 50


def test_trained_policy_beats_untrained_on_held_out_phantoms():
    from mecca_rllib.algorithm import MECCAEnvRunner

    torch.manual_seed(0)
    config = load_train_config("demo", [
        "env_config.shape=[8,16,16]", "env_config.num_cases=32",
        "training.train_batch_size_per_learner=5", "training.lr=3e-3",
        "training.confidence_lr=3e-3", "training.entropy_coeff=0.01",
        "evaluation.episodes=4",
    ])
    algo_config = build_algorithm_config(config)
    runner = MECCAEnvRunner(config=algo_config)
    learner = algo_config.build_learner(env=runner.env)
    learner.build()
    for _ in range(UPDATES):
        episodes = runner.sample(num_episodes=1)
        learner.update(episodes=episodes, timesteps={"num_env_steps_sampled_lifetime": 0})
        runner.module.set_state(learner.module["default_policy"].get_state(inference_only=True))

    trained = learner.module["default_policy"].unwrapped()
    untrained = build_module(trained.resolved_model_config())
    kwargs = dict(episodes=config["evaluation"]["episodes"], seed=123, progress=False)
    env_config = held_out_env_config(config)
    before = np.mean([t.dice for t in evaluate(untrained, env_config, **kwargs)], axis=0)
    after = np.mean([t.dice for t in evaluate(trained, env_config, **kwargs)], axis=0)
    assert before.shape == after.shape == (6,)
    print(f"Dice per step, untrained {np.round(before, 3)}, trained {np.round(after, 3)}")
    assert after[-1] > before[-1] + 0.2, (before, after)
    assert (after[1:] > before[1:] + 0.1).all(), (before, after)
    assert after[-1] >= after[1] - 0.02, after  # no decay across interaction steps
