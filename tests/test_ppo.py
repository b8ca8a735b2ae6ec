"""PPO and APPO on the voxel env with per-voxel advantages (issue 7, mecca_rllib.policies.ppo)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from mecca_rllib.policies.connectors import ADVANTAGES, LOSS_MASK, VALUE_TARGETS
from mecca_rllib.policies.ppo import (
    MECCAAPPOConfig,
    MECCAPPOConfig,
    MECCAPPOTorchLearner,
    voxel_ppo_loss,
)

SHAPE = (8, 16, 16)
N = int(np.prod(SHAPE))
ENV = {"dataset": "synthetic", "shape": list(SHAPE), "num_cases": 4, "steps": 2,
       "initial_clicks": 4, "clicks_per_step": 2, "hint_kernel": 2}
TINY_MODEL = {"width": 4, "dilations": [1] * 5, "conf_dilations": [1] * 6}


# ----------------------------------------------------------------------------- the loss
def _loss_inputs(b=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(b, 6, *SHAPE, generator=g, requires_grad=True)
    actions = torch.randint(0, 6, (b, *SHAPE), generator=g)
    behaviour = torch.log_softmax(logits.detach(), dim=1).flatten(2).gather(
        1, actions.reshape(b, 1, -1)).squeeze(1)
    return dict(
        logits=logits, old_logits=logits.detach(), actions=actions, behaviour_logp=behaviour,
        advantages=torch.randn(b, N, generator=g), values=torch.zeros(b, N),
        value_targets=torch.ones(b, N), mask=torch.ones(b, N),
        clip_param=0.2, vf_clip_param=10.0, vf_loss_coeff=0.5, entropy_coeff=0.0,
        normalize_advantages=False,
    )


def test_on_policy_loss_is_the_voxel_mean_policy_gradient():
    inputs = _loss_inputs()
    loss, stats = voxel_ppo_loss(**inputs)
    # ratio = 1 everywhere: policy loss = -mean(A), KL = 0, value loss = mean((0 - 1)^2) = 1.
    assert stats["policy_loss"].item() == pytest.approx(-inputs["advantages"].mean().item(), abs=1e-5)
    assert stats["mean_kl_loss"].item() == pytest.approx(0.0, abs=1e-6)
    assert stats["vf_loss"].item() == pytest.approx(1.0)
    assert loss.item() == pytest.approx(stats["policy_loss"].item() + 0.5, abs=1e-5)


def test_clipping_stops_the_gradient_per_voxel():
    inputs = _loss_inputs()
    inputs["advantages"] = torch.ones(2, N)
    # Behaviour probabilities far below the current ones: ratio >> 1 + clip everywhere.
    inputs["behaviour_logp"] = inputs["behaviour_logp"] - 5.0
    loss, stats = voxel_ppo_loss(**inputs)
    loss.backward()
    assert stats["clip_fraction"].item() == 1.0
    assert inputs["logits"].grad.abs().max().item() == 0.0


def test_masked_voxels_do_not_count():
    inputs = _loss_inputs()
    mask = torch.zeros(2, N)
    mask[:, : N // 2] = 1.0
    inputs["mask"] = mask
    _, stats = voxel_ppo_loss(**inputs)
    assert stats["policy_loss"].item() == pytest.approx(-inputs["advantages"][:, : N // 2].mean().item(), abs=1e-5)


def test_normalized_advantages_have_unit_scale():
    inputs = _loss_inputs()
    inputs["advantages"] = 100.0 * inputs["advantages"] + 7.0
    inputs["normalize_advantages"] = True
    _, stats = voxel_ppo_loss(**inputs)
    assert abs(stats["policy_loss"].item()) < 1e-3  # mean of standardized advantages


# ----------------------------------------------------------------------------- configs
def test_self_adaptive_reward_is_one_switch():
    plain = MECCAPPOConfig()
    adaptive = MECCAPPOConfig().training(self_adaptive_reward=True)
    assert plain._weighting().name == "none"
    assert adaptive._weighting().name == "confidence" and adaptive._weighting().needs_confidence
    assert adaptive.get_default_learner_class() is MECCAPPOTorchLearner
    bad = MECCAPPOConfig().environment("mecca_seg", env_config=ENV).training(reward_weighting="confidence")
    with pytest.raises(ValueError, match="self_adaptive_reward"):
        bad.validate()
    with pytest.raises(ValueError, match="complete_episodes"):
        MECCAPPOConfig().environment("mecca_seg", env_config=ENV).env_runners(
            batch_mode="truncate_episodes").validate()


# ----------------------------------------------------------------------------- training

@pytest.fixture(scope="module")
def ray_local():
    import ray

    ray.init(num_cpus=2, include_dashboard=False, ignore_reinit_error=True)
    yield
    ray.shutdown()


def _train_two_iterations(config):
    import ray.rllib  # noqa: F401

    import mecca_rllib  # noqa: F401  (registers mecca_seg)

    torch.manual_seed(0)
    config = (config.environment("mecca_seg", env_config=ENV).rl_module(model_config=TINY_MODEL)
              .debugging(seed=0))
    algo = config.build_algo()
    try:
        before = algo.learner_group.get_weights()["default_policy"]
        results = [algo.train() for _ in range(2)]
        after = algo.learner_group.get_weights()["default_policy"]
        episodes = algo.env_runner.sample(num_episodes=2, random_actions=False)

        def columns(learner):
            batch = learner._learner_connector(rl_module=learner.module, batch={}, episodes=episodes,
                                               shared_data={}, metrics=None)["default_policy"]
            pieces = [type(c).__name__ for c in learner._learner_connector.connectors]
            opts = sorted(name for name, _ in learner.get_optimizers_for_module("default_policy"))
            return {k: tuple(v.shape) for k, v in batch.items() if hasattr(v, "shape")}, pieces, opts

        (call,) = list(algo.learner_group.foreach_learner(columns))
        shapes, pieces, optimizers = call.get()
    finally:
        algo.stop()
    return results, before, after, episodes, shapes, pieces, optimizers


def _assert_voxel_training(results, before, after, episodes, shapes, pieces):
    b = sum(len(e) for e in episodes)
    for key in (ADVANTAGES, VALUE_TARGETS, LOSS_MASK):
        assert shapes[key] == (b, N), key  # per-voxel columns (B, N)
    assert "GeneralAdvantageEstimation" not in pieces and "AddOneTsToEpisodesAndTruncate" not in pieces
    assert pieces[-1] == "AddMECCATrainColumns"
    stats = results[-1]["learners"]["default_policy"]
    for key in ("policy_loss", "vf_loss", "entropy", "mean_kl_loss"):
        assert np.isfinite(stats[key]), key
    assert 0.0 < stats["entropy"] <= np.log(6) + 1e-6  # a voxel mean, not a sum over N voxels
    changed = [k for k in before if not np.allclose(before[k], after[k])]
    assert any(k.startswith("policy_head") for k in changed)


@pytest.mark.slow
def test_ppo_trains_two_iterations_with_voxel_advantages(ray_local):
    config = MECCAPPOConfig().training(train_batch_size_per_learner=4, minibatch_size=2, num_epochs=2,
                                       lr=1e-3)
    results, before, after, episodes, shapes, pieces, optimizers = _train_two_iterations(config)
    _assert_voxel_training(results, before, after, episodes, shapes, pieces)
    assert optimizers == ["default_optimizer"]
    assert "confidence_loss" not in results[-1]["learners"]["default_policy"]


@pytest.mark.slow
def test_ppo_with_self_adaptive_reward_trains_the_confidence_net(ray_local):
    config = MECCAPPOConfig().training(self_adaptive_reward=True, train_batch_size_per_learner=4,
                                       minibatch_size=2, num_epochs=1, lr=1e-3, confidence_lr=1e-2)
    results, before, after, episodes, shapes, pieces, optimizers = _train_two_iterations(config)
    _assert_voxel_training(results, before, after, episodes, shapes, pieces)
    assert optimizers == ["confidence", "segmentation"]
    assert np.isfinite(results[-1]["learners"]["default_policy"]["confidence_loss"])
    assert any(k.startswith("confidence_net") and not np.allclose(before[k], after[k]) for k in before)


@pytest.mark.slow
def test_appo_trains_two_iterations_with_voxel_advantages(ray_local):
    config = MECCAAPPOConfig().training(train_batch_size_per_learner=4, lr=1e-3)
    results, before, after, episodes, shapes, pieces, _ = _train_two_iterations(config)
    _assert_voxel_training(results, before, after, episodes, shapes, pieces)
