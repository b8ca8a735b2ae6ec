"""Batched sampling (several volumes per env-runner step) and the one-forward update (issue 13)."""
import numpy as np
import pytest
import torch
from ray.rllib.core.columns import Columns

import mecca_rllib  # noqa: F401  (registers "mecca_seg")
from mecca_rllib.data.sources import VolumeSource
from mecca_rllib.envs import InteractiveSegEnv
from mecca_rllib.policies.connectors import (
    ADVANTAGES, CONF_LOSS_MASK, CONF_TARGETS, EPISODE_ID, EPISODE_STEP, LOSS_MASK, P_NEXT,
    REWARD_LABELS, VALUE_TARGETS, AddMECCATrainColumns,
)

from hand_made import hand_made_episode, tiny_module

SHAPE = (8, 16, 16)
ENV = {"dataset": "synthetic", "shape": list(SHAPE), "num_cases": 8, "steps": 3,
       "initial_clicks": 4, "clicks_per_step": 2, "hint_kernel": 3}
MODEL = {"width": 8, "dilations": [1, 2, 1, 2, 1], "conf_dilations": [1, 2, 1, 2, 1, 1]}


def _config(envs: int, seed: int | None = 0):
    from mecca_rllib import MECCAConfig

    config = (
        MECCAConfig()
        .environment("mecca_seg", env_config=dict(ENV))
        .rl_module(model_config=dict(MODEL))
        .training(train_batch_size_per_learner=3 * envs)
        .env_runners(num_envs_per_env_runner=envs)
    )
    return config if seed is None else config.debugging(seed=seed)


@pytest.mark.parametrize("seed", [None, 3])
def test_sub_envs_of_one_runner_draw_distinct_cases(seed):
    from mecca_rllib.algorithm import MECCAEnvRunner

    runner = MECCAEnvRunner(config=_config(4, seed))
    try:
        rounds = [runner.sample(num_episodes=4) for _ in range(2)]
    finally:
        runner.stop()
    cases = [[e.get_infos(0)["case"] for e in episodes] for episodes in rounds]
    for round_cases in cases:  # four sub-envs stepping together: four different volumes
        assert len(round_cases) == 4 and len(set(round_cases)) == 4, cases
    # the sub-envs take turns along one case order: 8 episodes are one pass over 8 cases
    assert len(set(cases[0] + cases[1])) == 8, cases


def test_vector_slots_share_one_case_order():
    envs = [InteractiveSegEnv(ENV) for _ in range(3)]
    for i, env in enumerate(envs):
        env.set_vector_slot(i, 3)
    drawn = [[env.reset()[1]["case"] for env in envs] for _ in range(4)]
    flat = [c for row in drawn for c in row]
    assert len(set(flat[:8])) == 8  # the first pass: no case twice
    single = InteractiveSegEnv(ENV)  # slot 0 of 1: the env's order as before
    assert [single.reset()[1]["case"] for _ in range(3)] == flat[:3]
    with pytest.raises(ValueError, match="slot 3 outside"):
        envs[0].set_vector_slot(3, 3)


@pytest.fixture
def ray_session():
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield
    ray.shutdown()  # later tests (e.g. the `ray start` cluster test) need no driver left behind


@pytest.mark.slow
def test_batched_sampling_gives_the_same_train_columns_as_single_env(ray_session):
    """Episodes from 1 and from 4 sub-envs go through the learner connector to the same
    columns, shapes and (all-one, labeled) masks."""
    batches = {}
    for envs in (1, 4):
        algo = _config(envs).build_algo()
        try:
            episodes = algo.env_runner.sample(num_episodes=4)
            learner = algo.learner_group._learner
            batch = learner._learner_connector(
                rl_module=learner.module, batch={}, episodes=episodes, shared_data={}, metrics=None,
            )["default_policy"]
            batches[envs] = batch
            assert algo.train()["mecca"]["episodes"] == envs  # the runner batches `envs` volumes
        finally:
            algo.stop()
    single, batched = batches[1], batches[4]
    assert set(single) == set(batched)
    n = int(np.prod(SHAPE))
    for key in (CONF_TARGETS, LOSS_MASK, CONF_LOSS_MASK, P_NEXT, REWARD_LABELS):
        assert single[key].shape == batched[key].shape == (12, n), key
    for batch in (single, batched):
        assert torch.equal(batch[LOSS_MASK], torch.ones(12, n))
        assert torch.equal(batch[CONF_LOSS_MASK], torch.ones(12, n))
        assert batch[EPISODE_ID].tolist() == [0] * 3 + [1] * 3 + [2] * 3 + [3] * 3
        assert batch[EPISODE_STEP].tolist() == [0, 1, 2] * 4
        assert batch[Columns.OBS].shape == (12, 3, *SHAPE)
        # p_next of a row is the next row's p inside an episode
        p_prev = batch[Columns.OBS][:, 1].reshape(12, -1)
        same_episode = batch[EPISODE_ID][1:] == batch[EPISODE_ID][:-1]
        assert torch.equal(batch[P_NEXT][:-1][same_episode], p_prev[1:][same_episode])


@pytest.mark.parametrize("weighting", ["none", "confidence"])
def test_one_forward_targets_equal_the_connector_pre_pass(weighting):
    """``module_terms="loss"``: the learner's RewardShaping on the train forward's values and
    confidence reproduces the connector's advantages and value targets."""
    shape, steps = (2, 3, 3), 3
    module = tiny_module(shape)
    eps = [hand_made_episode(s, False, shape, steps) for s in (0, 1)]
    obs = torch.from_numpy(np.concatenate([np.stack(o[:-1]) for _, o, _, _ in eps]))
    actions = torch.from_numpy(np.concatenate([np.stack(a) for _, _, a, _ in eps]))

    def columns(terms):
        piece = AddMECCATrainColumns(gamma=0.9, reward_weighting=weighting, module_terms=terms,
                                     weighting_params={"alpha": 0.8, "beta": 1.0, "confidence_form": "focal"})
        batch = {"default_policy": {Columns.OBS: obs.clone(), Columns.ACTIONS: actions.clone()}}
        cols = piece(rl_module={"default_policy": module}, batch=batch, episodes=[e[0] for e in eps])
        return piece, cols["default_policy"]

    _, pre = columns("connector")
    piece, deferred = columns("loss")
    assert ADVANTAGES not in deferred and VALUE_TARGETS not in deferred
    b = obs.shape[0]
    out = module.forward_train({Columns.OBS: obs, Columns.ACTIONS: actions})
    from mecca_rllib.policies.rl_module import CONF_LOGITS

    adv, targets, _ = piece.shaping.targets(
        p_prev=obs[:, 1].reshape(b, -1), p_next=deferred[P_NEXT], label=deferred[REWARD_LABELS],
        values=out[Columns.VF_PREDS].reshape(b, -1).detach(),
        confidence=torch.sigmoid(out[CONF_LOGITS].reshape(b, -1)).detach(),
        episode_id=deferred[EPISODE_ID], mask=deferred[LOSS_MASK],
    )
    torch.testing.assert_close(adv, pre[ADVANTAGES], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(targets, pre[VALUE_TARGETS], rtol=1e-5, atol=1e-6)


class _TinyAndLargeTargets(VolumeSource):
    """Two cases: a 2-voxel target (fewer edge voxels than the user is asked to click)
    and a large cube, so sub-envs report ``info["clicks"]`` of different lengths."""

    names = ["tiny", "large"]
    shape = SHAPE
    labeled = np.ones(2, bool)

    def get(self, index, rng):
        label = np.zeros(SHAPE, np.uint8)
        if self._check_index(index) == 0:
            label[4, 8, 8:10] = 1
        else:
            label[2:6, 4:12, 4:12] = 1
        image = label.astype(np.float32) + np.float32(0.1) * rng.standard_normal(SHAPE, np.float32)
        return image, label


def test_sub_envs_with_different_click_counts_sample_together():
    """A small structure gets fewer clicks than asked for; batched sampling must not fail
    to stack the sub-envs' infos (gymnasium sizes an info array by the first sub-env)."""
    from mecca_rllib.algorithm import MECCAEnvRunner

    config = _config(2).environment("mecca_seg", env_config={
        **ENV, "dataset": _TinyAndLargeTargets(), "initial_clicks": 6, "augment": False})
    runner = MECCAEnvRunner(config=config)
    try:
        episodes = runner.sample(num_episodes=2)
    finally:
        runner.stop()
    clicks = {e.get_infos(0)["case"]: e.get_infos(-1)["clicks"] for e in episodes}
    assert set(clicks) == {"tiny", "large"}
    assert all(c.dtype == np.int32 and c.shape[1] == 3 for c in clicks.values())
    assert len(clicks["tiny"]) < 6 + 2 * 2 <= len(clicks["large"])  # the tiny one got fewer
