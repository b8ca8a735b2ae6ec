"""Distribution, networks, RL module, learner loss pieces: no Ray cluster needed."""
import gymnasium as gym
import numpy as np
import pytest
import torch
from ray.rllib.core.columns import Columns

from mecca_rllib.envs import ACTION_VALUES
from mecca_rllib.inference import InferenceNet
from mecca_rllib.policies.distribution import VoxelCategorical
from mecca_rllib.policies.learner import masked_mean, symmetric_confidence_loss
from mecca_rllib.policies.networks import with_keep_side
from mecca_rllib.policies.rl_module import CONF_LOGITS, CONF_LOGITS_FLIPPED, MECCATorchRLModule

SHAPE = (4, 6, 5)


def make_module(shape=SHAPE, inference_only=False, **model_config):
    torch.manual_seed(0)
    return MECCATorchRLModule(
        observation_space=gym.spaces.Box(-np.inf, np.inf, (3, *shape), np.float32),
        action_space=gym.spaces.MultiDiscrete(np.full(shape, 6)),
        inference_only=inference_only,
        model_config={"width": 4, "dilations": (1, 2, 1, 2, 1), "conf_dilations": (1, 2, 1, 2, 1, 1),
                      **model_config},
    )


def obs_batch(b=2, shape=SHAPE, seed=0):
    g = torch.Generator().manual_seed(seed)
    obs = torch.rand(b, 3, *shape, generator=g)
    return obs


# ------------------------------------------------------------------------- distribution
def test_voxel_categorical_logp_entropy_match_torch_categorical():
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(2, 6, *SHAPE, generator=g)
    dist = VoxelCategorical(logits)
    actions = torch.randint(0, 6, (2, *SHAPE), generator=g).to(torch.uint8)
    logp = dist.logp(actions)
    n = int(np.prod(SHAPE))
    assert logp.shape == (2, n) and dist.entropy().shape == (2, n)
    # reference: voxel (b, d, h, w) has its own categorical over logits[b, :, d, h, w]
    for b, d, h, w in [(0, 0, 0, 0), (1, 3, 5, 4), (0, 2, 1, 3)]:
        ref = torch.distributions.Categorical(logits=logits[b, :, d, h, w])
        flat = np.ravel_multi_index((d, h, w), SHAPE)
        a = actions[b, d, h, w].long()
        assert logp[b, flat].item() == pytest.approx(ref.log_prob(a).item(), abs=1e-6)
        assert dist.entropy()[b, flat].item() == pytest.approx(ref.entropy().item(), abs=1e-6)
    # flat (B, N) actions give the same logp
    torch.testing.assert_close(dist.logp(actions.reshape(2, -1)), logp)
    other = VoxelCategorical(torch.randn(2, 6, *SHAPE, generator=g))
    kl = dist.kl(other)
    assert kl.shape == (2, n) and (kl >= -1e-6).all()
    assert torch.allclose(dist.kl(dist), torch.zeros(2, n), atol=1e-6)


def test_voxel_categorical_samples_uint8_and_argmax_is_deterministic():
    logits = torch.full((1, 6, *SHAPE), -20.0)
    logits[:, 4] = 20.0  # action 4 almost surely everywhere
    dist = VoxelCategorical(logits)
    sample = dist.sample()
    assert sample.dtype == torch.uint8 and sample.shape == (1, *SHAPE)
    assert (sample == 4).all()
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(1, 6, *SHAPE, generator=g)
    det = VoxelCategorical(logits).to_deterministic().sample()
    assert torch.equal(det.long(), logits.argmax(1))


def test_voxel_categorical_rejects_bad_logits():
    with pytest.raises(ValueError, match=r"\(B, 6, D, H, W\)"):
        VoxelCategorical(torch.zeros(2, 5, 3, 3, 3))


# ------------------------------------------------------------------------- module
def test_module_output_shapes_and_value_range():
    m = make_module()
    obs = obs_batch()
    assert m.policy_logits(obs).shape == (2, 6, *SHAPE)
    assert m.values(obs).shape == (2, *SHAPE)
    c = m.confidence(obs, torch.full((2, *SHAPE), 0.2))
    assert c.shape == (2, *SHAPE) and ((c > 0) & (c < 1)).all()
    # fully convolutional: the same weights serve another volume shape
    assert m.policy_logits(obs_batch(1, (5, 3, 7))).shape == (1, 6, 5, 3, 7)


def test_keep_side_prior_adds_the_voxel_log_odds_along_the_step_direction():
    # Equal network logits: the prior alone decides. p = 0.5 adds nothing, p = 0.9 favours
    # the +0.4 step by logit(0.9) = 2.197, p = 0 favours -0.4 by logit(0.05) (clamped).
    logits = torch.zeros(1, 6, 1, 1, 3)
    p = torch.tensor([0.5, 0.9, 0.0]).view(1, 1, 1, 3)
    out = with_keep_side(logits, p, 1.0)[0, :, 0, 0]
    torch.testing.assert_close(out[:, 0], torch.zeros(6))
    torch.testing.assert_close(out[:, 1], torch.tensor(ACTION_VALUES / 0.4) * np.log(9.0))
    torch.testing.assert_close(out[:, 2], -torch.tensor(ACTION_VALUES / 0.4) * np.log(19.0))
    assert with_keep_side(logits, p, 0.0) is logits


def test_module_keep_side_option_changes_every_policy_path_alike():
    plain, prior = make_module(), make_module(keep_side=2.0)  # the same seed: the same weights
    obs = obs_batch()
    expected = with_keep_side(plain.policy_logits(obs), obs[:, 1], 2.0)
    torch.testing.assert_close(prior.policy_logits(obs), expected)
    trained = prior.forward_train({Columns.OBS: obs})[Columns.ACTION_DIST_INPUTS]
    torch.testing.assert_close(trained, expected)
    greedy = prior.forward_inference({Columns.OBS: obs})[Columns.ACTIONS]
    torch.testing.assert_close(greedy.long(), expected.argmax(1))
    net = InferenceNet.from_module(prior)  # what sessions and exports run
    assert net.model_config["keep_side"] == 2.0
    torch.testing.assert_close(net.policy_logits(obs), expected)


def test_signed_confidence_is_symmetric_in_the_action_and_reaches_the_inference_net():
    """``conf_signed``: C(s, -a) = 1 - C(s, a) for every action (its logit is a belief in the
    foreground times the direction), in training and in the exported net alike."""
    m = make_module(conf_signed=True)
    obs = obs_batch()
    actions = torch.randint(0, 6, (2, *SHAPE), generator=torch.Generator().manual_seed(3))
    out = m.forward_train({Columns.OBS: obs, Columns.ACTIONS: actions})
    torch.testing.assert_close(out[CONF_LOGITS_FLIPPED], -out[CONF_LOGITS])
    plain = make_module().forward_train({Columns.OBS: obs, Columns.ACTIONS: actions})
    assert not torch.allclose(plain[CONF_LOGITS_FLIPPED], -plain[CONF_LOGITS])  # the default is not
    net = InferenceNet.from_module(m)
    values = torch.as_tensor(ACTION_VALUES, dtype=torch.float32)[actions.long()]
    torch.testing.assert_close(net.confidence_net(obs, values), out[CONF_LOGITS], atol=1e-5, rtol=1e-4)


def test_module_exploration_returns_uint8_actions_only():
    m = make_module()
    out = m.forward_exploration({Columns.OBS: obs_batch()})
    assert set(out) == {Columns.ACTIONS}
    assert out[Columns.ACTIONS].dtype == torch.uint8 and out[Columns.ACTIONS].shape == (2, *SHAPE)
    inf = m.forward_inference({Columns.OBS: obs_batch()})[Columns.ACTIONS]
    torch.testing.assert_close(inf.long(), m.policy_logits(obs_batch()).argmax(1))
    ppo_style = make_module(sample_in_module=False).forward_exploration({Columns.OBS: obs_batch()})
    assert set(ppo_style) == {Columns.ACTION_DIST_INPUTS}


def test_forward_train_computes_both_confidence_passes():
    m = make_module()
    obs = obs_batch()
    actions = torch.randint(0, 6, (2, *SHAPE), generator=torch.Generator().manual_seed(3))
    out = m.forward_train({Columns.OBS: obs, Columns.ACTIONS: actions})
    a = torch.tensor(np.asarray(ACTION_VALUES))[actions]
    torch.testing.assert_close(torch.sigmoid(out[CONF_LOGITS]), m.confidence(obs, a))
    torch.testing.assert_close(torch.sigmoid(out[CONF_LOGITS_FLIPPED]), m.confidence(obs, -a))
    assert out[Columns.VF_PREDS].shape == (2, *SHAPE)
    # every parameter gets a gradient from one backward (DDP requirement)
    sum(o.sum() for o in out.values()).backward()
    assert all(p.grad is not None for p in m.parameters())


def test_inference_only_module_drops_value_head_and_confidence_net():
    full = make_module()
    light = make_module(inference_only=True)
    assert not hasattr(light, "confidence_net") and not hasattr(light, "value_head")
    light.set_state(full.get_state(inference_only=True))
    obs = obs_batch()
    torch.testing.assert_close(light.policy_logits(obs), full.policy_logits(obs))


def test_module_rejects_bad_config():
    with pytest.raises(ValueError, match="dilations"):
        make_module(dilations=(1, 2))
    with pytest.raises(ValueError, match="conf_dilations"):
        make_module(conf_dilations=(1, 2, 3))


# ------------------------------------------------------------------------- losses
def test_symmetric_confidence_loss_eq6_on_hand_made_tensors():
    logits = torch.tensor([[2.0, -1.0]])
    flipped = torch.tensor([[-3.0, 0.5]])
    targets = torch.tensor([[1.0, 0.0]])
    mask = torch.ones(1, 2)
    bce = lambda x, y: -(y * np.log(1 / (1 + np.exp(-x))) + (1 - y) * np.log(1 - 1 / (1 + np.exp(-x))))  # noqa: E731
    expected = np.mean([bce(2.0, 1) + bce(-3.0, 0), bce(-1.0, 0) + bce(0.5, 1)])
    got = symmetric_confidence_loss(logits, flipped, targets, mask)
    assert got.item() == pytest.approx(expected, rel=1e-6)
    # masked voxels do not count
    only_first = symmetric_confidence_loss(logits, flipped, targets, torch.tensor([[1.0, 0.0]]))
    assert only_first.item() == pytest.approx(bce(2.0, 1) + bce(-3.0, 0), rel=1e-6)


def test_masked_mean_ignores_masked_entries_and_handles_empty_mask():
    x = torch.tensor([[1.0, 100.0, 3.0]], requires_grad=True)
    assert masked_mean(x, torch.tensor([[1.0, 0.0, 1.0]])).item() == pytest.approx(2.0)
    empty = masked_mean(x, torch.zeros(1, 3))
    assert empty.item() == 0.0
    empty.backward()  # still differentiable (unused parameters under DDP otherwise)
    assert torch.equal(x.grad, torch.zeros(1, 3))


def test_split_hint_module_reads_four_channels_and_round_trips(tmp_path, make_tiny_module):
    """hint_channels=2 (image, p, fg hint, bg hint): both nets read 4 channels, the export
    records it, and a mismatch between config and observations is a clear error."""
    from mecca_rllib.policies.checkpoints import load_rl_module, save_module

    m = make_tiny_module(SHAPE, hint_channels=2)
    assert m.hint_channels == 2 and m.trunk[0][0].in_channels == 4
    obs = torch.rand(1, 4, *SHAPE, generator=torch.Generator().manual_seed(1))
    assert m.confidence(obs, torch.full((1, *SHAPE), 0.1)).shape == (1, *SHAPE)
    back = load_rl_module(save_module(m, tmp_path / "split"))
    assert back.hint_channels == 2
    torch.testing.assert_close(back.policy_logits(obs), m.policy_logits(obs))
    with pytest.raises(ValueError, match="hint_channels"):
        make_module(hint_channels=2)  # a 3-channel observation space
