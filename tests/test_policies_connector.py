"""The learner connector piece on hand-made episodes (no Ray cluster)."""
import numpy as np
import pytest
import torch
from ray.rllib.core.columns import Columns

from mecca_rllib.envs import ACTION_VALUES
from mecca_rllib.policies.connectors import (
    ADVANTAGES, CONF_TARGETS, LOSS_MASK, VALUE_TARGETS, AddMECCATrainColumns, EpisodeLabels,
)
from mecca_rllib.policies.returns import discounted_returns, relative_gain

from hand_made import hand_made_episode, tiny_module

SHAPE = (2, 3, 3)
T = 3


def _module():
    return tiny_module(SHAPE)


def _episode(seed, unlabeled=False):
    return hand_made_episode(seed, unlabeled, SHAPE, T)


def _batch(episodes):
    return {"default_policy": {
        Columns.OBS: torch.from_numpy(np.concatenate([np.stack(o[:-1]) for _, o, _, _ in episodes])),
        Columns.ACTIONS: torch.from_numpy(np.concatenate([np.stack(a) for _, _, a, _ in episodes])),
    }}


def test_columns_match_hand_computed_returns_and_targets():
    module = _module()
    eps = [_episode(0), _episode(1, unlabeled=True)]
    piece = AddMECCATrainColumns(gamma=0.9, reward_weighting="none")
    batch = piece(rl_module={"default_policy": module}, batch=_batch(eps), episodes=[e[0] for e in eps])
    cols = batch["default_policy"]
    for key in (ADVANTAGES, VALUE_TARGETS, CONF_TARGETS, LOSS_MASK):
        assert cols[key].shape == (2 * T, np.prod(SHAPE))
    _, obs, actions, label = eps[0]
    p = torch.from_numpy(np.stack([o[1] for o in obs])).reshape(T + 1, -1)
    y = torch.from_numpy(label.reshape(-1))
    expected = discounted_returns(relative_gain(p[:-1], p[1:], y), 0.9)
    torch.testing.assert_close(cols[VALUE_TARGETS][:T], expected)
    values = module.values(torch.from_numpy(np.stack(obs[:-1]))).reshape(T, -1).detach()
    torch.testing.assert_close(cols[ADVANTAGES][:T], expected - values)
    a = torch.from_numpy(ACTION_VALUES[np.stack(actions)].reshape(T, -1))
    assert torch.equal(cols[CONF_TARGETS][:T], (((a > 0) & (y == 1)) | ((a < 0) & (y == 0))).float())
    assert (cols[LOSS_MASK][:T] == 1).all()
    # the unlabeled episode trains nothing (until simulated labels, MECCA.md §5)
    assert (cols[LOSS_MASK][T:] == 0).all() and (cols[ADVANTAGES][T:] == 0).all()


def test_label_provider_hook_supplies_targets_and_mask():
    module = _module()
    eps = [_episode(2, unlabeled=True)]

    def half_mask(episode, *, observations, action_values, module):
        label = torch.ones(T, int(np.prod(SHAPE)))
        mask = torch.zeros_like(label)
        mask[:, :4] = 1
        return EpisodeLabels(label=label, mask=mask)

    piece = AddMECCATrainColumns(gamma=0.95, reward_weighting="confidence", label_provider=half_mask)
    cols = piece(rl_module={"default_policy": module}, batch=_batch(eps), episodes=[eps[0][0]])["default_policy"]
    assert cols[LOSS_MASK].sum() == 4 * T
    a = torch.from_numpy(ACTION_VALUES[np.stack(eps[0][2])].reshape(T, -1))
    assert torch.equal(cols[CONF_TARGETS], (a > 0).float())  # label 1 everywhere


def test_connector_rejects_batches_that_are_not_complete_episodes():
    module = _module()
    eps = [_episode(0)]
    batch = _batch(eps)
    batch["default_policy"] = {k: v[:-1] for k, v in batch["default_policy"].items()}
    with pytest.raises(ValueError, match="complete episodes"):
        AddMECCATrainColumns(gamma=0.95)(rl_module={"default_policy": module}, batch=batch,
                                          episodes=[eps[0][0]])
