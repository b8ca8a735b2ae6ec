"""tune_configs/label_fraction.py: the label-efficiency sweep (the paper's Table 3 shape)."""
import pytest

from mecca_rllib.tune_cli import load_config_module


def test_sweeps_the_four_fractions_with_simulated_labels_on_held_out_dice():
    module = load_config_module("label_fraction")
    import _common

    _, space, tune_config, run_config = module.get_experiment()
    assert space["env_config"]["labeled_fraction"] == {"grid_search": [0.125, 0.25, 0.5, 1.0]}
    assert space["env_config"]["labeled_episode_ratio"] == 0.5  # Algorithm 1's alternation
    assert space["simulated_labels"] is True
    assert (space["delta_start"], space["delta_growth"], space["delta_max"]) == (0.85, 0.00025, 0.99)
    assert tune_config.metric == _common.METRIC == "evaluation/env_runners/dice_final"
    assert tune_config.mode == "max" and tune_config.scheduler is None
    # the metric comes from held-out, fully labeled volumes
    held_out = space["evaluation_config"]["env_config"]
    assert held_out["split"] == "test" and held_out["labeled_fraction"] == 1.0
    assert run_config.stop["training_iteration"] % _common.EVAL_EVERY == 0


def test_overrides_fix_the_fraction_or_turn_simulated_labels_off():
    module = load_config_module("label_fraction")
    _, space, _, _ = module.get_experiment(**{"env_config.labeled_fraction": 0.25,
                                               "training.simulated_labels": False})
    assert space["env_config"]["labeled_fraction"] == 0.25 and space["simulated_labels"] is False
    _, smoke, tune_config, _ = module.get_experiment(smoke=True)
    assert smoke["env_config"]["labeled_fraction"] == {"grid_search": [0.125, 0.25]}
    assert tune_config.num_samples == 1


def test_the_swept_config_builds_a_valid_mecca_config():
    from mecca_rllib import MECCAConfig

    _, space, _, _ = load_config_module("label_fraction").get_experiment()
    space = dict(space, env_config=dict(space["env_config"], labeled_fraction=0.125))
    config = MECCAConfig.from_dict(space)
    config.validate()
    assert config.delta_schedule().episodes_per_epoch == space["env_config"]["num_cases"]
    with pytest.raises(ValueError, match="delta_start"):
        MECCAConfig.from_dict(dict(space, delta_start=0.2)).validate()
