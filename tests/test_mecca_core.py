"""One MECCA core (issue 15, part 1): ``MECCAConfig`` and the PPO/APPO configs compose one
config mixin (``policies/config_core.py``), their learners one learner mixin
(``policies/learner_core.py``). No Ray needed."""
from __future__ import annotations

import uuid

import pytest
import torch
from ray.rllib.core.columns import Columns

from mecca_rllib.algorithm import MECCAConfig
from mecca_rllib.policies.config_core import CORE_DEFAULTS, MECCACoreConfigMixin
from mecca_rllib.policies.connectors import (
    CONF_LOSS_MASK,
    CONF_TARGETS,
    LOSS_MASK,
    AddMECCATrainColumns,
)
from mecca_rllib.policies.learner import MECCATorchLearner
from mecca_rllib.policies.learner_core import MECCALearnerCoreMixin, confidence_terms
from mecca_rllib.policies.ppo import (
    MECCAAPPOConfig,
    MECCAAPPOTorchLearner,
    MECCAPPOConfig,
    MECCAPPOTorchLearner,
)
from mecca_rllib.policies.reward_shaping import REWARD_DEFAULTS, register_weighting
from mecca_rllib.policies.rl_module import CONF_LOGITS, CONF_LOGITS_FLIPPED

ENV = {"dataset": "synthetic", "shape": [8, 16, 16], "num_cases": 4, "steps": 2,
       "initial_clicks": 4, "clicks_per_step": 2, "hint_kernel": 4, "hint_channels": 2}
CONFIGS = [MECCAConfig, MECCAPPOConfig, MECCAAPPOConfig]
REWARD_SETTINGS = dict(
    alpha=0.3, beta=2.0, confidence_form="paper", confidence_gate=False, error_region_lambda=0.5,
    focal_gamma=1.5, voxel_mean_reward=True, confidence_lr=3e-3, normalize_advantages=False,
)


def _config(config_class, **training):
    return config_class().environment("mecca_seg", env_config=dict(ENV)).training(**training)


# ----------------------------------------------------------------------------- configs
@pytest.mark.parametrize("config_class", CONFIGS)
def test_every_config_has_the_core_defaults(config_class):
    config = config_class()
    assert isinstance(config, MECCACoreConfigMixin)
    for name, value in {**CORE_DEFAULTS, **REWARD_DEFAULTS}.items():
        assert getattr(config, name) == value, name
    assert config.reward_weighting_kwargs == {} and config.label_provider is None


@pytest.mark.parametrize("config_class", CONFIGS)
def test_every_config_takes_the_reward_keywords_of_the_core(config_class):
    config = _config(config_class, reward_weighting="error_region",
                     reward_weighting_kwargs={"extra": 1}, lr=1e-3, **REWARD_SETTINGS)
    for name, value in REWARD_SETTINGS.items():
        assert getattr(config, name) == value, name
    assert config.lr == 1e-3  # the algorithm's own keywords pass through
    assert config.weighting is not None and config.weighting.name == "error_region"
    params = config.weighting_params
    assert params["alpha"] == 0.3 and params["confidence_gate"] is False and params["extra"] == 1


@pytest.mark.parametrize("config_class", CONFIGS)
def test_every_config_records_shape_and_hint_settings(config_class):
    model = _config(config_class).model_config
    assert model["shape"] == (8, 16, 16)
    assert model["hint_kernel"] == 4 and model["hint_channels"] == 2


@pytest.mark.parametrize("config_class", CONFIGS)
def test_validation_is_shared(config_class):
    with pytest.raises(ValueError, match="unknown reward_weighting 'nope'"):
        _config(config_class, reward_weighting="nope").validate()
    with pytest.raises(ValueError, match="confidence_form"):
        _config(config_class, reward_weighting="none", confidence_form="odd").validate()
    with pytest.raises(ValueError, match="complete_episodes"):
        _config(config_class, reward_weighting="none").env_runners(
            batch_mode="truncate_episodes").validate()


@pytest.mark.parametrize("config_class", CONFIGS)
def test_a_weighting_registered_after_training_is_resolved_on_the_driver_by_validate(config_class):
    name = f"late_{uuid.uuid4().hex}"
    config = _config(config_class, reward_weighting=name)
    assert config.weighting is None or config.weighting.name != name

    def gain(inputs):
        return inputs.gain

    register_weighting(name, gain)
    config.validate()
    assert config.weighting.name == name and config.weighting.fn is gain


@pytest.mark.parametrize("config_class", CONFIGS)
def test_the_learner_connector_ends_with_the_driver_resolved_weighting(config_class):
    from mecca_rllib.envs import InteractiveSegEnv

    config = _config(config_class, reward_weighting="focal_prob", gamma=0.9)
    env = InteractiveSegEnv(config.env_config)
    pipeline = config.build_learner_connector(env.observation_space, env.action_space)
    piece = pipeline.connectors[-1]
    assert isinstance(piece, AddMECCATrainColumns)
    assert piece.weighting is config.weighting
    assert piece.shaping.gamma == 0.9 and piece.shaping.params == config.weighting_params
    assert "AddOneTsToEpisodesAndTruncate" not in [type(c).__name__ for c in pipeline.connectors]


def test_what_differs_per_algorithm_stays_with_the_algorithm():
    mecca = _config(MECCAConfig, gae_lambda=0.9)
    ppo = _config(MECCAPPOConfig)
    adaptive = _config(MECCAPPOConfig, self_adaptive_reward=True)
    assert mecca._returns_lambda() == 0.9 and ppo._returns_lambda() == 0.95
    assert mecca._module_terms() == "loss" and ppo._module_terms() == "connector"
    assert mecca._resolved_label_provider() is not None  # simulated labels (MECCA.md §5)
    assert ppo._resolved_label_provider() is None
    assert mecca.trains_confidence_net and adaptive.trains_confidence_net
    assert not ppo.trains_confidence_net
    assert mecca._weighting().name == "confidence" and not mecca.normalize_advantages
    assert ppo._weighting().name == "none" and ppo.normalize_advantages
    assert adaptive._weighting().name == "confidence"
    assert mecca.model_config["sample_in_module"] is True  # MECCA: the module samples its actions
    assert ppo.model_config["sample_in_module"] is False


# ----------------------------------------------------------------------------- learners
@pytest.mark.parametrize("learner_class", [MECCATorchLearner, MECCAPPOTorchLearner, MECCAAPPOTorchLearner])
def test_every_learner_uses_the_core_optimizers_and_confidence_loss(learner_class):
    assert issubclass(learner_class, MECCALearnerCoreMixin)
    for name in ("configure_optimizers_for_module", "confidence_terms", "confidence_loss"):
        assert getattr(learner_class, name) is getattr(MECCALearnerCoreMixin, name), name


def _conf_batch(conf_mask: torch.Tensor | None):
    b, n = 2, 8
    logits = torch.randn(b, 1, 2, 2, 2, requires_grad=True)
    flipped = torch.randn(b, 1, 2, 2, 2, requires_grad=True)
    batch = {Columns.OBS: torch.zeros(b, 3, 2, 2, 2), CONF_TARGETS: torch.ones(b, n),
             LOSS_MASK: torch.ones(b, n)}
    if conf_mask is not None:
        batch[CONF_LOSS_MASK] = conf_mask
    return batch, {CONF_LOGITS: logits, CONF_LOGITS_FLIPPED: flipped}


def test_confidence_loss_is_masked_by_conf_loss_mask():
    mask = torch.zeros(2, 8)
    mask[1] = 1.0  # only the second (labeled) row trains the confidence net (MECCA.md §5)
    batch, fwd_out = _conf_batch(mask)
    terms = confidence_terms(batch, fwd_out)
    terms.loss.backward()
    grad = fwd_out[CONF_LOGITS].grad.reshape(2, -1)
    assert torch.all(grad[0] == 0) and torch.all(grad[1] != 0)
    assert torch.equal(terms.mask, mask)
    # A batch without the column falls back to voxel_loss_mask.
    batch, fwd_out = _conf_batch(None)
    confidence_terms(batch, fwd_out).loss.backward()
    assert torch.all(fwd_out[CONF_LOGITS].grad != 0)
