"""MECCA on RLlib: integration tests on tiny 8x16x16 phantoms (one shared local Ray)."""
import json

import numpy as np
import pytest
import torch

pytestmark = pytest.mark.slow

SHAPE = (8, 16, 16)
ENV = {"dataset": "synthetic", "shape": list(SHAPE), "num_cases": 8, "steps": 3,
       "initial_clicks": 4, "clicks_per_step": 2, "hint_kernel": 3}
MODEL = {"width": 8, "dilations": [1, 2, 1, 2, 1], "conf_dilations": [1, 2, 1, 2, 1, 1]}


@pytest.fixture(scope="module")
def ray_session(tmp_path_factory):
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             _temp_dir=None, configure_logging=False)
    yield
    ray.shutdown()


def tiny_config(**training):
    from mecca_rllib import MECCAConfig

    return (
        MECCAConfig()
        .environment("mecca_seg", env_config=dict(ENV))
        .rl_module(model_config=dict(MODEL))
        .training(train_batch_size_per_learner=6, **training)
        .debugging(seed=0)
    )


def _per_learner(algo, fn):
    """``fn(unwrapped module)`` on every Learner, results in a list."""
    results = algo.learner_group.foreach_learner(
        lambda learner: fn(learner.module["default_policy"].unwrapped()))
    return [r.get() for r in results]


def _check_result(result, episodes_at_least=2):
    mecca = result["mecca"]
    assert mecca["episodes"] >= episodes_at_least
    assert set(f"dice_step_{t}" for t in range(ENV["steps"] + 1)) <= set(mecca)
    assert 0.0 <= mecca["dice_final"] <= 1.0
    learner = result["learners"]["default_policy"]
    for key in ("policy_loss", "vf_loss", "confidence_loss", "entropy", "confidence_accuracy", "mean_gain"):
        assert np.isfinite(learner[key]), key
    assert learner["labeled_episode_fraction"] == 1.0


def test_local_training_iterations_update_weights(ray_session):
    algo = tiny_config(reward_weighting="confidence", gae_lambda=0.9).build_algo()
    try:
        def learner_state():
            return _per_learner(algo, lambda m: {k: v.detach().clone() for k, v in m.state_dict().items()})[0]

        before = learner_state()
        for _ in range(2):
            result = algo.train()
        _check_result(result)
        after = learner_state()
        # both optimizers stepped: segmentation net and confidence net
        assert not torch.equal(before["confidence_net.out.weight"], after["confidence_net.out.weight"])
        assert not torch.equal(before["policy_head.out.weight"], after["policy_head.out.weight"])
        # the inference-only env-runner module acts with the learner's weights after the sync
        runner = algo.get_module()
        assert not hasattr(runner, "confidence_net")
        torch.testing.assert_close(runner.policy_head.out.weight, after["policy_head.out.weight"])
    finally:
        algo.stop()


def test_remote_env_runner_with_two_envs(ray_session):
    config = tiny_config(reward_weighting="none").env_runners(
        num_env_runners=1, num_envs_per_env_runner=2)
    algo = config.build_algo()
    try:
        _check_result(algo.train())
    finally:
        algo.stop()


def test_two_ddp_learners_on_cpu(ray_session):
    config = tiny_config(reward_weighting="error_region").learners(num_learners=2)
    algo = config.build_algo()
    try:
        result = algo.train()
        _check_result(result)
        # both learners hold the same weights after the DDP update
        weights = _per_learner(algo, lambda m: m.policy_head.out.weight.detach().numpy().copy())
        assert len(weights) == 2
        np.testing.assert_allclose(weights[0], weights[1])
    finally:
        algo.stop()


def test_checkpoint_round_trip_gives_identical_actions(ray_session, tmp_path):
    from ray.rllib.algorithms.algorithm import Algorithm
    from ray.rllib.core.columns import Columns

    from mecca_rllib.policies.checkpoints import export_rl_module, load_rl_module

    algo = tiny_config().build_algo()
    try:
        algo.train()
        ckpt = algo.save_to_path(tmp_path / "algo")
        obs = torch.rand(2, 3, *SHAPE, generator=torch.Generator().manual_seed(0))
        expected = algo.get_module().forward_inference({Columns.OBS: obs})[Columns.ACTIONS]
    finally:
        algo.stop()
    for module in (load_rl_module(ckpt), load_rl_module(export_rl_module(ckpt, tmp_path / "exported"))):
        assert torch.equal(module.forward_inference({Columns.OBS: obs})[Columns.ACTIONS], expected)
        assert module.resolved_model_config()["shape"] == SHAPE or tuple(module.resolved_model_config()["shape"]) == SHAPE
    meta = json.loads((tmp_path / "exported" / "mecca_module.json").read_text())
    assert meta["model_config"]["width"] == MODEL["width"]
    restored = Algorithm.from_checkpoint(ckpt)
    try:
        again = restored.get_module().forward_inference({Columns.OBS: obs})[Columns.ACTIONS]
        assert torch.equal(again, expected)
    finally:
        restored.stop()


def test_load_rl_module_rejects_what_is_not_a_mecca_checkpoint(tmp_path):
    from mecca_rllib.policies.checkpoints import load_rl_module

    with pytest.raises(ValueError, match="no such checkpoint folder"):
        load_rl_module(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match=r"empty: not a MECCA checkpoint"):
        load_rl_module(tmp_path / "empty")
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "mecca_module.json").write_text("{not json")
    with pytest.raises(ValueError, match="mecca_module.json"):
        load_rl_module(bad)


def test_tuner_runs_one_mecca_trial(ray_session, tmp_path):
    from ray import tune

    from mecca_rllib.policies.checkpoints import load_rl_module

    tuner = tune.Tuner(
        "MECCA",
        param_space=tiny_config(),
        run_config=tune.RunConfig(
            storage_path=str(tmp_path), name="t", stop={"training_iteration": 1},
            checkpoint_config=tune.CheckpointConfig(checkpoint_at_end=True), verbose=0),
    )
    result = tuner.fit()[0]
    assert result.error is None
    assert result.metrics["training_iteration"] == 1
    assert "dice_final" in result.metrics["mecca"]
    module = load_rl_module(result.checkpoint.path)
    assert module.policy_logits(torch.zeros(1, 3, *SHAPE)).shape == (1, 6, *SHAPE)


def test_config_validation_names_the_problem():
    from mecca_rllib import MECCAConfig

    with pytest.raises(ValueError, match="unknown reward_weighting 'nope'"):
        MECCAConfig().environment("mecca_seg", env_config=dict(ENV)).training(reward_weighting="nope").validate()
    with pytest.raises(ValueError, match="complete_episodes"):
        MECCAConfig().environment("mecca_seg", env_config=dict(ENV)).env_runners(
            batch_mode="truncate_episodes").validate()
    with pytest.raises(ValueError, match="gae_lambda"):
        MECCAConfig().environment("mecca_seg", env_config=dict(ENV)).training(gae_lambda=2.0).validate()


def test_model_config_records_the_training_shape_and_hint_kernel():
    from mecca_rllib import MECCAConfig

    config = MECCAConfig().environment("mecca_seg", env_config={"shape": (8, 16, 16), "hint_kernel": 4})
    assert config.model_config["shape"] == (8, 16, 16)
    assert config.model_config["hint_kernel"] == 4


def test_init_from_starts_learner_and_env_runner_from_a_pretrained_pnet(ray_session, tmp_path):
    """``mecca pretrain``'s file (prepare_warm_start) reaches every copy of the policy."""
    from mecca_rllib.baselines import PNet
    from mecca_rllib.envs import ACTION_VALUES
    from mecca_rllib.policies.warm_start import load_warm_start
    from mecca_rllib.train import prepare_warm_start

    config = {"env_config": dict(ENV), "model_config": dict(MODEL), "seed": 0,
              "training": {"lr": 1e-3}, "warm_start": {"env_steps": 6}}
    prepared = prepare_warm_start(config, tmp_path / "warm.pt")
    path = prepared["training"]["init_from"]
    assert path == str((tmp_path / "warm.pt").resolve()) and "init_from" not in config["training"]
    warm = load_warm_start(path)
    # the default warm start is the DeepIGeoS-like loop: it reads the image (0) and hint (2)
    assert warm["meta"]["env_steps"] == 6 and warm["channels"] == [0, 2]
    net = PNet(len(warm["channels"]), MODEL["width"], MODEL["dilations"])
    net.load_state_dict(warm["state_dict"])
    algo = (tiny_config(init_from=path, init_from_scale=0.25, init_confidence=True)
            .rl_module(model_config={**MODEL, "conf_signed": True}).build_algo())
    try:
        obs = torch.randn(1, 3, *SHAPE, generator=torch.Generator().manual_seed(0))
        with torch.no_grad():  # the policy ignores the channel the P-Net did not read (p)
            logits = net(obs[:, warm["channels"]])
            expected = torch.where(logits > 0, int(np.argmax(ACTION_VALUES)), int(np.argmin(ACTION_VALUES)))
            gains = 0.25 * torch.tensor(ACTION_VALUES).view(1, -1, 1, 1, 1) / max(ACTION_VALUES)
        learner = _per_learner(algo, lambda m: m.policy_logits(obs))[0]
        runner = algo.env_runner.module.policy_logits(obs)
        assert torch.equal(learner.argmax(1), expected) and torch.equal(runner.argmax(1), expected)
        torch.testing.assert_close(learner, gains * logits)  # init_from_scale: a quarter of the gaps
        a = torch.tensor(ACTION_VALUES, dtype=torch.float32)[torch.randint(0, 6, (1, *SHAPE))]
        confidence = _per_learner(algo, lambda m: m.confidence(obs, a))[0]  # init_confidence
        torch.testing.assert_close(confidence, torch.sigmoid(torch.sign(a) * logits.squeeze(1)))
        algo.train()  # and RL goes on from there
    finally:
        algo.stop()
