"""Simulated labels, gradient mask and delta schedule (MECCA.md §5) without a Ray cluster."""
import numpy as np
import pytest
import torch
from ray.rllib.core.columns import Columns

from mecca_rllib.envs import ACTION_VALUES, InteractiveSegEnv
from mecca_rllib.policies.connectors import (
    ADVANTAGES, CONF_LOSS_MASK, LOSS_MASK, VALUE_TARGETS, AddMECCATrainColumns,
)
from mecca_rllib.policies.returns import discounted_returns, relative_gain
from mecca_rllib.policies.simulated_labels import (
    DeltaSchedule, SimulatedLabelProvider, gradient_mask, simulated_label, simulated_label_agreement,
)

from hand_made import TINY, hand_made_episode, tiny_module

SHAPE = (2, 3, 3)
N = int(np.prod(SHAPE))
T = 3


def _module():
    return tiny_module(SHAPE)


def _episode(seed, unlabeled):
    """A hand-made complete episode of T random actions on a random volume."""
    episode, obs, actions, _ = hand_made_episode(seed, unlabeled, SHAPE, T)
    return episode, np.stack(obs), np.stack(actions)


# --------------------------------------------------------------- Eqs. 10-11 and the mask

def test_simulated_label_keeps_confident_directions_and_flips_doubtful_ones():
    a = torch.tensor([0.2, 0.1, -0.4, -0.1, 0.4, -0.2])
    c = torch.tensor([0.9, 0.3, 0.8, 0.5, 0.5, 0.49])
    # +conf -> 1; +doubt -> 0; -conf -> 0; - at c = 0.5 (kept) -> 0; + at 0.5 -> 1; - doubt -> 1
    assert simulated_label(a, c).tolist() == [1, 0, 0, 0, 1, 1]


def test_simulated_label_broadcasts_over_maps():
    a = torch.tensor(ACTION_VALUES, dtype=torch.float32).reshape(6, 1)  # (6, 1)
    c = torch.tensor([[0.1, 0.9]])  # (1, 2)
    y = simulated_label(a, c)
    assert y.shape == (6, 2)
    assert y[:3].tolist() == [[1, 0]] * 3  # negative actions: label 1 only if flipped
    assert y[3:].tolist() == [[0, 1]] * 3


def test_gradient_mask_needs_decisive_confidence_either_way():
    c = torch.tensor([0.9, 0.1, 0.5, 0.86, 0.85, 0.15, 0.14])
    assert gradient_mask(c, 0.85).tolist() == [1, 1, 0, 1, 0, 0, 1]
    assert gradient_mask(c, 0.99).sum() == 0
    assert gradient_mask(c, 0.5).tolist() == [1, 1, 0, 1, 1, 1, 1]


# ------------------------------------------------------------------- delta schedule

def test_delta_schedule_grows_per_completed_epoch_and_saturates():
    schedule = DeltaSchedule(episodes_per_epoch=10)  # paper defaults 0.85 + 0.00025 / epoch, <= 0.99
    assert schedule(0) == schedule(9) == pytest.approx(0.85)
    assert schedule(10) == pytest.approx(0.85025)
    assert schedule(25) == pytest.approx(0.8505)
    assert schedule.epoch(25) == 2
    assert schedule(10 * 560) == pytest.approx(0.99)  # (0.99 - 0.85) / 0.00025 = 560 epochs
    assert schedule(10 * 10_000) == pytest.approx(0.99)
    fast = DeltaSchedule(0.6, 0.1, 0.8, episodes_per_epoch=4)
    assert [round(fast(e), 6) for e in (0, 4, 8, 12, 40)] == [0.6, 0.7, 0.8, 0.8, 0.8]


@pytest.mark.parametrize("kwargs, match", [
    ({"start": 0.3}, "delta_start"), ({"maximum": 1.5}, "delta_max"),
    ({"growth": -1.0}, "delta_growth"), ({"episodes_per_epoch": 0}, "episodes_per_epoch"),
])
def test_delta_schedule_rejects_bad_settings(kwargs, match):
    with pytest.raises(ValueError, match=match):
        DeltaSchedule(**kwargs)


# ------------------------------------------------------------- provider and connector

def test_provider_targets_of_unlabeled_episode_come_from_confidence():
    module = _module()
    episode, obs, actions = _episode(0, unlabeled=True)
    a = torch.from_numpy(ACTION_VALUES[actions].reshape(T, -1).astype(np.float32))
    provider = SimulatedLabelProvider(delta=0.5)
    out = provider(episode, observations=torch.from_numpy(obs), action_values=a, module=module)
    with torch.no_grad():
        c = module.confidence(torch.from_numpy(obs[:-1]), a.reshape(T, *SHAPE)).reshape(T, -1)
    assert not out.trains_confidence
    assert torch.equal(out.label, simulated_label(a, c))
    assert torch.equal(out.mask, gradient_mask(c, 0.5))
    provider.delta = 0.999999
    assert provider(episode, observations=torch.from_numpy(obs), action_values=a, module=module).mask.sum() == 0


def test_connector_trains_unlabeled_segmentation_on_simulated_labels_only():
    module = _module()
    (lab, lab_obs, lab_act), (unl, unl_obs, unl_act) = _episode(1, False), _episode(2, True)
    batch = {"default_policy": {
        Columns.OBS: torch.from_numpy(np.concatenate([lab_obs[:-1], unl_obs[:-1]])),
        Columns.ACTIONS: torch.from_numpy(np.concatenate([lab_act, unl_act])),
    }}
    provider = SimulatedLabelProvider(delta=0.5)
    piece = AddMECCATrainColumns(gamma=0.9, reward_weighting="none", label_provider=provider)
    cols = piece(rl_module={"default_policy": module}, batch=batch, episodes=[lab, unl])["default_policy"]
    a = torch.from_numpy(ACTION_VALUES[unl_act].reshape(T, -1).astype(np.float32))
    with torch.no_grad():
        c = module.confidence(torch.from_numpy(unl_obs[:-1]), a.reshape(T, *SHAPE)).reshape(T, -1)
    y_sim = simulated_label(a, c)
    p = torch.from_numpy(unl_obs[:, 1].reshape(T + 1, -1))
    torch.testing.assert_close(cols[VALUE_TARGETS][T:], discounted_returns(relative_gain(p[:-1], p[1:], y_sim), 0.9))
    mask = gradient_mask(c, 0.5)
    assert 0 < mask.sum() < mask.numel()  # the test exercises both sides of the mask
    assert torch.equal(cols[LOSS_MASK][T:], mask)
    assert (cols[CONF_LOSS_MASK][T:] == 0).all()  # confidence net: labeled episodes only
    assert (cols[LOSS_MASK][:T] == 1).all() and (cols[CONF_LOSS_MASK][:T] == 1).all()


# ---------------------------------------------------------------- gradients through M

@pytest.fixture(scope="module")
def learner():
    from mecca_rllib import MECCAConfig

    torch.manual_seed(0)
    env = InteractiveSegEnv({"shape": SHAPE, "num_cases": 2, "steps": T, "initial_clicks": 0,
                             "clicks_per_step": 0, "hint_kernel": 1})
    config = (MECCAConfig().environment("mecca_seg", env_config={"shape": SHAPE, "num_cases": 8})
              .rl_module(model_config=dict(TINY))
              .training(delta_start=0.6, delta_growth=0.1, delta_max=0.8))
    return config.build_learner(env=env)


def _grads(learner, batch):
    module = learner.module["default_policy"].unwrapped()
    module.zero_grad(set_to_none=False)
    fwd = module.forward_train(batch)
    loss = learner.compute_loss_for_module(module_id="default_policy", config=learner.config,
                                           batch=batch, fwd_out=fwd)
    loss.backward()
    return {name: p.grad.detach().clone() for name, p in module.named_parameters()}


def _train_batch(seed, mask, conf_mask):
    g = torch.Generator().manual_seed(seed)
    b = mask.shape[0]
    return {
        Columns.OBS: torch.randn(b, 3, *SHAPE, generator=g),
        Columns.ACTIONS: torch.randint(0, 6, (b, *SHAPE), generator=g, dtype=torch.uint8),
        ADVANTAGES: torch.randn(b, N, generator=g),
        VALUE_TARGETS: torch.randn(b, N, generator=g),
        "conf_targets": (torch.rand(b, N, generator=g) > 0.5).float(),
        LOSS_MASK: mask, CONF_LOSS_MASK: conf_mask,
    }


def test_masked_voxels_contribute_no_gradient(learner):
    mask = torch.zeros(2, N)
    mask[0, :5] = 1
    base = _train_batch(0, mask, torch.zeros(2, N))
    # Change every target where M = 0: the gradients must not move.
    other = dict(base)
    off = mask == 0
    other[ADVANTAGES] = torch.where(off, base[ADVANTAGES] * -7 + 3, base[ADVANTAGES])
    other[VALUE_TARGETS] = torch.where(off, base[VALUE_TARGETS] + 50, base[VALUE_TARGETS])
    other["conf_targets"] = torch.where(off, 1 - base["conf_targets"], base["conf_targets"])
    g1, g2 = _grads(learner, base), _grads(learner, other)
    for name in g1:
        torch.testing.assert_close(g1[name], g2[name], msg=name)
    assert g1["policy_head.out.weight"].abs().sum() > 0  # the unmasked voxels do train
    # conf_loss_mask = 0: the confidence net gets no gradient at all
    assert all((g == 0).all() for n, g in g1.items() if n.startswith("confidence_net"))


def test_all_zero_mask_leaves_segmentation_untrained_but_confidence_trains(learner):
    grads = _grads(learner, _train_batch(1, torch.zeros(2, N), torch.ones(2, N)))
    seg = [g for n, g in grads.items() if not n.startswith("confidence_net")]
    conf = [g for n, g in grads.items() if n.startswith("confidence_net")]
    assert all((g == 0).all() for g in seg)
    assert any((g != 0).any() for g in conf)


def test_learner_sets_delta_from_episodes_trained(learner):
    from mecca_rllib.policies.learner import EPISODES_TRAINED_LIFETIME

    piece = next(p for p in learner._learner_connector.connectors if isinstance(p, AddMECCATrainColumns))
    assert isinstance(piece.label_provider, SimulatedLabelProvider)
    for episodes, delta in ((0, 0.6), (7, 0.6), (8, 0.7), (17, 0.8), (800, 0.8)):
        learner.before_gradient_based_update(timesteps={EPISODES_TRAINED_LIFETIME: episodes})
        assert piece.label_provider.delta == pytest.approx(delta), episodes


# ------------------------------------------------------------------ env-side agreement

class _AlwaysUpConfident(torch.nn.Module):
    """Picks +0.1 everywhere with confidence 0.9: y_sim = 1 on every voxel."""

    def policy_logits(self, x):
        logits = torch.full((x.shape[0], 6, *x.shape[2:]), -30.0)
        logits[:, 3] = 30.0
        return logits

    def confidence(self, x, a):
        return torch.full(a.shape, 0.9)

    def action_values_of(self, actions):
        return torch.tensor(np.array(ACTION_VALUES), dtype=torch.float32)[actions.long()]


def test_agreement_is_measured_against_the_hidden_truth_of_unlabeled_cases():
    env = InteractiveSegEnv({"shape": (8, 16, 16), "num_cases": 4, "labeled_fraction": 0.5,
                             "steps": 2, "initial_clicks": 2, "clicks_per_step": 1, "hint_kernel": 3})
    unlabeled = np.flatnonzero(~env.source.labeled)
    foreground = np.mean([env.source.get(i, None)[1].mean() for i in unlabeled])
    stats = simulated_label_agreement(_AlwaysUpConfident(), env, delta=0.85, episodes=len(unlabeled))
    assert stats["agreement"] == pytest.approx(foreground)  # y_sim = 1 agrees on foreground only
    assert stats["mask_fraction"] == 1.0 and stats["masked_agreement"] == pytest.approx(foreground)
    assert simulated_label_agreement(_AlwaysUpConfident(), env, delta=0.95)["mask_fraction"] == 0.0
    all_labeled = InteractiveSegEnv({"shape": (8, 16, 16), "num_cases": 2, "steps": 1})
    assert simulated_label_agreement(_AlwaysUpConfident(), all_labeled, delta=0.85) == {}
