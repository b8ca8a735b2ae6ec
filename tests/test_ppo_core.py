"""PPO/APPO core fixes (mecca_rllib.policies.ppo): the confidence loss mask, the recorded
hint settings and the driver-side resolution of the reward weighting."""
from __future__ import annotations

import dataclasses
import uuid

import numpy as np
import pytest
import torch

from mecca_rllib.policies.connectors import EpisodeLabels, labels_from_infos
from mecca_rllib.policies.ppo import MECCAAPPOConfig, MECCAPPOConfig
from mecca_rllib.policies.reward_shaping import register_weighting

SHAPE = (8, 16, 16)
ENV = {"dataset": "synthetic", "shape": list(SHAPE), "num_cases": 4, "steps": 2,
       "initial_clicks": 4, "clicks_per_step": 2, "hint_kernel": 2}
TINY_MODEL = {"width": 4, "dilations": [1] * 5, "conf_dilations": [1] * 6}


@pytest.fixture(scope="module")
def ray_local():
    import ray

    ray.init(num_cpus=2, include_dashboard=False, ignore_reinit_error=True)
    yield
    ray.shutdown()


def _tiny(config, **env_overrides):
    import mecca_rllib  # noqa: F401  (registers mecca_seg)

    torch.manual_seed(0)
    return (config.environment("mecca_seg", env_config={**ENV, **env_overrides})
            .rl_module(model_config=TINY_MODEL).debugging(seed=0))


# ----------------------------------------------------------------------------- 1: conf mask
def _simulated_labels(episode, **kwargs):
    """Every episode trains the segmentation losses but never the confidence net (§5)."""
    labels = labels_from_infos(episode, **kwargs)
    if labels is None:
        t = kwargs["observations"].shape[0] - 1
        flat = torch.zeros(t, int(np.prod(SHAPE)), device=kwargs["observations"].device)
        labels = EpisodeLabels(label=flat, mask=torch.ones_like(flat))
    return dataclasses.replace(labels, trains_confidence=False)


def test_ppo_confidence_net_ignores_episodes_that_must_not_train_it():
    """A Learner and an EnvRunner built directly (no Ray): one PPO update on episodes whose
    labels must not train C (MECCA.md §5) leaves the confidence net bitwise unchanged."""
    from ray.rllib.env.single_agent_env_runner import SingleAgentEnvRunner

    config = _tiny(MECCAPPOConfig().training(
        self_adaptive_reward=True, label_provider=_simulated_labels, train_batch_size_per_learner=4,
        minibatch_size=2, num_epochs=1, lr=1e-3, confidence_lr=1e-2,
    ))
    runner = SingleAgentEnvRunner(config=config)
    try:
        learner = config.build_learner(env=runner.env)
        module = learner.module["default_policy"]
        before = {k: v.detach().clone() for k, v in module.state_dict().items()}
        episodes = runner.sample(num_episodes=2, random_actions=False)
        results = learner.update(episodes=episodes, timesteps={"num_env_steps_sampled_lifetime": 0})
        after = module.state_dict()
    finally:
        runner.stop()
    assert np.isfinite(float(results["default_policy"]["confidence_loss"].peek()))
    conf = [k for k in before if k.startswith("confidence_net")]
    assert conf
    for key in conf:  # bitwise: zero gradients, zero Adam steps
        assert torch.equal(before[key], after[key]), key
    assert any(k.startswith("policy_head") and not torch.equal(before[k], after[k]) for k in before)


def test_appo_confidence_loss_gives_no_gradient_on_episodes_that_must_not_train_it():
    """APPO (Learner and EnvRunner built directly, no Ray): the loss on a batch of such
    episodes has zero gradient on the confidence net; with ``voxel_loss_mask`` in place of
    ``conf_loss_mask`` (the old drift) it would not."""
    from ray.rllib.core.columns import Columns
    from ray.rllib.env.single_agent_env_runner import SingleAgentEnvRunner

    from mecca_rllib.policies.connectors import CONF_LOSS_MASK, LOSS_MASK

    config = _tiny(MECCAAPPOConfig().training(
        self_adaptive_reward=True, label_provider=_simulated_labels, train_batch_size_per_learner=4,
        lr=1e-3, confidence_lr=1e-2,
    ))
    runner = SingleAgentEnvRunner(config=config)
    try:
        learner = config.build_learner(env=runner.env)
        episodes = runner.sample(num_episodes=2, random_actions=False)
    finally:
        runner.stop()
    assert sorted(n for n, _ in learner.get_optimizers_for_module("default_policy")) == [
        "confidence", "segmentation"]
    batch = learner._learner_connector(rl_module=learner.module, batch={}, episodes=episodes,
                                       shared_data={}, metrics=None)["default_policy"]
    module = learner.module["default_policy"]
    module_config = learner.config.get_config_for_module("default_policy")

    def conf_grad(batch) -> float:
        module.zero_grad()
        loss = learner.compute_loss_for_module(module_id="default_policy", config=module_config,
                                               batch=batch, fwd_out=module.forward_train(batch))
        loss.backward()
        grads = [p.grad for n, p in module.named_parameters() if n.startswith("confidence_net")]
        return max(float(g.abs().max()) if g is not None else 0.0 for g in grads)

    assert batch[Columns.OBS].shape[0] == 4 and float(batch[CONF_LOSS_MASK].sum()) == 0.0
    assert conf_grad(batch) == 0.0
    assert conf_grad({**batch, CONF_LOSS_MASK: batch[LOSS_MASK]}) > 0.0


# ----------------------------------------------------------------------------- 2: hints
@pytest.mark.parametrize("config_class", [MECCAPPOConfig, MECCAAPPOConfig])
def test_module_records_the_env_hint_settings(config_class):
    from mecca_rllib.envs import InteractiveSegEnv

    config = _tiny(config_class(), hint_kernel=4)
    assert config.model_config["hint_kernel"] == 4
    assert config.model_config["hint_channels"] == 1
    env = InteractiveSegEnv(config.env_config)
    module = config.get_rl_module_spec(env=env).build()
    assert module.model_config["hint_kernel"] == 4
    assert module.model_config["hint_channels"] == 1


def test_hint_settings_default_to_the_env_defaults():
    from mecca_rllib.envs.interactive_seg_env import DEFAULT_CONFIG

    env = {k: v for k, v in ENV.items() if k != "hint_kernel"}
    config = MECCAPPOConfig().environment("mecca_seg", env_config=env)
    assert config.model_config["hint_kernel"] == DEFAULT_CONFIG["hint_kernel"]
    assert config.model_config["hint_channels"] == DEFAULT_CONFIG["hint_channels"]


# ----------------------------------------------------------------------------- 3: weighting
def test_weighting_is_resolved_on_the_driver():
    name = f"driver_only_{uuid.uuid4().hex}"

    def gain(inputs):
        return inputs.gain

    register_weighting(name, gain)
    config = MECCAPPOConfig().training(reward_weighting=name)
    assert config.weighting is not None and config.weighting.name == name
    adaptive = MECCAPPOConfig().training(self_adaptive_reward=True)
    assert adaptive.weighting.name == "confidence" and adaptive._weighting().needs_confidence


@pytest.mark.slow
def test_ppo_weighting_registered_on_the_driver_only_reaches_a_remote_learner(ray_local):
    name = f"driver_only_{uuid.uuid4().hex}"

    def half_gain(inputs):  # a local function: cloudpickled by value to the learner actor
        return 0.5 * inputs.gain

    register_weighting(name, half_gain)
    config = _tiny(MECCAPPOConfig().training(
        reward_weighting=name, train_batch_size_per_learner=4, minibatch_size=2, num_epochs=1,
        lr=1e-3,
    )).learners(num_learners=1)
    algo = config.build_algo()
    try:
        result = algo.train()
    finally:
        algo.stop()
    assert np.isfinite(result["learners"]["default_policy"]["policy_loss"])


def test_voxel_kl_stays_finite_when_a_probability_underflows():
    """A voxel whose current policy gives an action probability 0 in fp32 must not make the
    KL statistic (and APPO's KL loss) infinite; elsewhere it is the categorical KL."""
    import torch

    from mecca_rllib.policies.distribution import VoxelCategorical
    from mecca_rllib.policies.ppo import voxel_ppo_loss

    g = torch.Generator().manual_seed(0)
    old = torch.randn(1, 6, 2, 2, 2, generator=g)
    logits = torch.randn(1, 6, 2, 2, 2, generator=g)
    n = 8
    kwargs = dict(actions=torch.zeros(1, 2, 2, 2, dtype=torch.long), behaviour_logp=torch.zeros(1, n),
                  advantages=torch.ones(1, n), values=torch.zeros(1, n), value_targets=torch.zeros(1, n),
                  mask=torch.ones(1, n), clip_param=0.2, vf_clip_param=10.0, vf_loss_coeff=1.0,
                  entropy_coeff=0.0, is_ratio_clip=2.0)
    _, stats = voxel_ppo_loss(logits=logits, old_logits=old, **kwargs)
    (kl_key,) = [k for k in stats if "kl" in k]
    reference = VoxelCategorical(old).kl(VoxelCategorical(logits)).mean()
    torch.testing.assert_close(stats[kl_key], reference, rtol=1e-5, atol=1e-6)
    logits[0, 1:, 0, 0, 0] = 150.0  # action 0 at one voxel: probability exp(-150) = 0 in fp32
    logits[0, 0, 0, 0, 0] = -150.0
    _, stats = voxel_ppo_loss(logits=logits, old_logits=old, **kwargs)
    assert torch.isfinite(stats[kl_key]) and stats[kl_key] > reference
