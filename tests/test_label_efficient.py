"""Label-efficient training (MECCA.md §5): case interleaving, label isolation, a short run."""
import numpy as np
import pytest
import torch
from ray.rllib.env.single_agent_episode import SingleAgentEpisode

from mecca_rllib.data import VolumeSource, open_source
from mecca_rllib.envs import InteractiveSegEnv

SHAPE = (6, 8, 8)
MODEL = {"width": 4, "dilations": [1, 2, 1, 2, 1], "conf_dilations": [1, 2, 1, 2, 1, 1]}


# --------------------------------------------------------- Algorithm 1's alternation

def _labeled_sequence(episodes, **config):
    env = InteractiveSegEnv({"shape": SHAPE, "num_cases": 8, "steps": 1, "initial_clicks": 0,
                             "clicks_per_step": 0, **config})
    cases = [env.reset()[1]["case"] for _ in range(episodes)]
    index = {name: i for i, name in enumerate(env.source.names)}
    return [bool(env.source.labeled[index[c]]) for c in cases], cases


def test_ratio_one_half_alternates_labeled_and_unlabeled_cases_starting_labeled():
    flags, cases = _labeled_sequence(12, labeled_fraction=0.25, labeled_episode_ratio=0.5)
    assert flags == [True, False] * 6
    # each group is served by passes over its own members: the 6 unlabeled all come once
    assert len(set(cases[1::2])) == 6
    assert len(set(cases[0::2])) == 2 and cases[0::2].count(cases[0]) == 3


def test_ratio_sets_the_share_of_labeled_episodes():
    flags, _ = _labeled_sequence(16, labeled_fraction=0.5, labeled_episode_ratio=0.25)
    assert flags == [True, False, False, False] * 4
    flags, _ = _labeled_sequence(8, labeled_fraction=0.5, labeled_episode_ratio=0.0)
    assert not any(flags)
    flags, _ = _labeled_sequence(8, labeled_fraction=0.0, labeled_episode_ratio=0.5)
    assert not any(flags)  # no labeled case: the unlabeled group serves every episode


def test_without_ratio_cases_come_from_one_permutation_of_all_cases():
    flags, cases = _labeled_sequence(8, labeled_fraction=0.25)
    assert sorted(set(cases)) == sorted(cases) and sum(flags) == 2


@pytest.mark.parametrize("ratio", [1.5, -0.1, True])
def test_bad_ratio_is_rejected(ratio):
    with pytest.raises(ValueError, match="labeled_episode_ratio"):
        InteractiveSegEnv({"shape": SHAPE, "labeled_episode_ratio": ratio})


# ------------------------------------------------------------ hidden labels stay hidden

class PoisonedSource(VolumeSource):
    """Synthetic phantoms whose labels pass through ``poison(label, is_labeled)``."""

    def __init__(self, poison):
        self._inner = open_source("synthetic", SHAPE, num_cases=4, labeled_fraction=0.5, seed=3)
        self.names, self.shape, self.labeled = self._inner.names, self._inner.shape, self._inner.labeled
        self._poison = poison

    def get(self, index, rng):
        image, label = self._inner.get(index, rng)
        return image, self._poison(label, bool(self.labeled[index])).astype(np.uint8)


def _truth(label, is_labeled):
    return label


def _unlabeled_all_ones(label, is_labeled):
    return label if is_labeled else np.ones_like(label)


def _unlabeled_inverted(label, is_labeled):
    return label if is_labeled else 1 - label


def _labeled_inverted(label, is_labeled):
    return 1 - label if is_labeled else label


def _train(poison):
    """One update on 4 episodes (2 labeled, 2 unlabeled) with fixed random actions.

    No clicks: a simulated user legitimately clicks on the true boundary, which would make
    observations depend on the hidden label; with none, only the label itself could leak.
    """
    from mecca_rllib import MECCAConfig

    env = InteractiveSegEnv({"dataset": PoisonedSource(poison), "steps": 2, "initial_clicks": 0,
                             "clicks_per_step": 0, "hint_kernel": 1})
    episodes = []
    for case in range(4):
        obs, info = env.reset(seed=case, options={"case": case})
        ep = SingleAgentEpisode(observations=[obs], infos=[info], len_lookback_buffer=0)
        rng = np.random.default_rng(case)
        for _ in range(2):
            action = rng.integers(0, 6, SHAPE, dtype=np.uint8)
            obs, reward, term, trunc, info = env.step(action)
            ep.add_env_step(obs, action, reward, infos=info, terminated=term, truncated=trunc)
        episodes.append(ep.to_numpy())
    torch.manual_seed(0)
    config = (MECCAConfig().environment("mecca_seg", env_config={"shape": SHAPE, "num_cases": 4})
              .rl_module(model_config=dict(MODEL))
              .training(lr=1e-2, confidence_lr=1e-2, delta_start=0.5, train_batch_size_per_learner=8))
    learner = config.build_learner(env=env)
    batch = learner._learner_connector(rl_module=learner.module, batch={}, episodes=episodes,
                                       shared_data={}, metrics=None)["default_policy"]
    learner.update(episodes=episodes, timesteps={"num_env_steps_sampled_lifetime": 0})
    params = {k: v.detach().clone() for k, v in learner.module["default_policy"].state_dict().items()}
    return {k: v.clone() for k, v in batch.items() if isinstance(v, torch.Tensor)}, params


def test_hidden_labels_of_unlabeled_cases_never_reach_the_learner():
    labeled = PoisonedSource(_truth).labeled
    assert labeled.sum() == 2  # two labeled, two unlabeled cases
    batch, params = _train(_truth)
    unlabeled_rows = np.repeat(~labeled, 2)  # 2 steps per episode, cases in order
    assert batch["voxel_loss_mask"][unlabeled_rows].sum() > 0  # unlabeled episodes do train S
    assert batch["conf_loss_mask"][unlabeled_rows].sum() == 0
    for poison in (_unlabeled_all_ones, _unlabeled_inverted):
        other_batch, other_params = _train(poison)
        assert batch.keys() == other_batch.keys()
        for key in batch:
            assert torch.equal(batch[key], other_batch[key]), (poison.__name__, key)
        for key in params:
            assert torch.equal(params[key], other_params[key]), (poison.__name__, key)
    # Control: the labels of labeled cases do reach the learner.
    _, control = _train(_labeled_inverted)
    assert not torch.equal(params["policy_head.out.weight"], control["policy_head.out.weight"])


# ------------------------------------------------------------------ a short real run

@pytest.mark.slow
def test_short_run_with_a_quarter_labeled_reports_label_metrics(tmp_path):
    import ray

    from mecca_rllib import MECCAConfig

    env_config = {"dataset": "synthetic", "shape": list(SHAPE), "num_cases": 8, "steps": 2,
                  "initial_clicks": 3, "clicks_per_step": 1, "hint_kernel": 2,
                  "labeled_fraction": 0.25, "labeled_episode_ratio": 0.5}
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    try:
        config = (
            MECCAConfig()
            .environment(InteractiveSegEnv, env_config=env_config)  # by class: survives a Ray restart
            .rl_module(model_config=dict(MODEL))
            .training(train_batch_size_per_learner=8, delta_start=0.5, delta_growth=0.01,
                      episodes_per_epoch=4, agreement_episodes=1, agreement_interval=1)
            .env_runners(num_env_runners=1)
            .debugging(seed=0)
        )
        algo = config.build_algo()
        try:
            results = [algo.train() for _ in range(3)]
        finally:
            algo.stop()
    finally:
        ray.shutdown()
    for i, result in enumerate(results):
        mecca, learner = result["mecca"], result["learners"]["default_policy"]
        assert mecca["labeled_episodes"] + mecca["unlabeled_episodes"] == mecca["episodes"] == 4
        assert mecca["labeled_episodes"] == 2  # strict alternation
        assert mecca["episodes_trained_lifetime"] == 4 * (i + 1)
        assert mecca["delta"] == pytest.approx(0.5 + 0.01 * i)  # one epoch per iteration
        assert 0.0 <= learner["unlabeled_mask_fraction"] <= 1.0
        assert learner["labeled_episode_fraction"] == 0.5
        assert 0.0 <= mecca["sim_label_agreement"] <= 1.0
        for key in ("policy_loss", "vf_loss", "confidence_loss"):
            assert np.isfinite(learner[key]), key


def test_seeded_env_runner_does_not_replay_one_case():
    """RLlib re-seeds at every complete-episodes ``sample()``; MECCA's runner seeds once."""
    from mecca_rllib import MECCAConfig
    from mecca_rllib.algorithm import MECCAEnvRunner

    config = (MECCAConfig()
              .environment(InteractiveSegEnv, env_config={"shape": list(SHAPE), "num_cases": 4,
                                                          "steps": 1, "initial_clicks": 0, "clicks_per_step": 0})
              .rl_module(model_config=dict(MODEL)).debugging(seed=0))
    assert config.env_runner_cls is MECCAEnvRunner
    runner = MECCAEnvRunner(config=config)
    cases = [runner.sample()[0].get_infos(0)["case"] for _ in range(4)]
    assert sorted(cases) == sorted(set(cases))  # one pass over the 4 cases
