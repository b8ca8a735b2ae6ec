"""``MECCAPPOConfig`` / ``MECCAAPPOConfig`` and their algorithms: RLlib's PPO and APPO on
the MECCA core (``policies/config_core.py``) plus what is theirs: the
``self_adaptive_reward`` switch, logits in the episodes and their learners."""
from __future__ import annotations

from typing import Any

from ray.rllib.algorithms.algorithm_config import NotProvided
from ray.rllib.algorithms.appo import APPO, APPOConfig
from ray.rllib.algorithms.ppo import PPO, PPOConfig

from mecca_rllib.policies.config_core import MECCACoreConfigMixin
from mecca_rllib.policies.ppo.target_module import MECCATargetRLModule
from mecca_rllib.policies.ppo.torch_learner import MECCAAPPOTorchLearner, MECCAPPOTorchLearner
from mecca_rllib.policies.reward_shaping import set_provided


class VoxelRewardConfigMixin(MECCACoreConfigMixin):
    """The MECCA core for RLlib's PPO/APPO configs (MECCA.md §3); put it before the
    algorithm's config class in the bases.

    Adds ``self_adaptive_reward`` (the confidence-weighted reward, Eq. 8, and the confidence
    net's loss, Eq. 6, with its own optimizer), the default weighting that follows it,
    standardized advantages by default and ``model_config['sample_in_module']=False``.
    """

    def __init__(self, algo_class: type | None = None) -> None:
        super().__init__(algo_class=algo_class)
        self.self_adaptive_reward = False
        self.reward_weighting: str | None = None  # None: "confidence" if self-adaptive else "none"
        self.normalize_advantages = True

    def training(self, *, self_adaptive_reward: bool = NotProvided, **kwargs):
        """Voxel-reward settings; other keywords go to the core's and the algorithm's ``training()``.

        Args:
            self_adaptive_reward: MECCA's confidence-weighted reward (Eq. 8) and the
                confidence net's loss (Eq. 6); sets ``reward_weighting="confidence"``.
            reward_weighting: a registered weighting; default (None): ``"confidence"`` with
                ``self_adaptive_reward``, else ``"none"`` (plain gain, Eq. 9).
            alpha, beta, confidence_form, confidence_gate, confidence_skill, error_region_lambda,
            focal_gamma, reward_weighting_kwargs, voxel_mean_reward, side_reward, switch_cost, confidence_lr,
            label_provider:
                as in ``MECCACoreConfigMixin.training`` (and ``MECCAConfig.training``).
            normalize_advantages: standardize the per-voxel advantages over the masked
                voxels of each minibatch (default True).
        """
        # Before the core's `training()`: the weighting it resolves follows this switch.
        set_provided(self, dict(self_adaptive_reward=self_adaptive_reward), NotProvided)
        return super().training(**kwargs)

    @property
    def trains_confidence_net(self) -> bool:
        return bool(self.self_adaptive_reward)

    def _weighting_name(self) -> str:
        name = self.reward_weighting
        if name is None:
            name = "confidence" if self.self_adaptive_reward else "none"
        return name

    def validate(self) -> None:
        super().validate()
        weighting = self._validated_weighting()
        if weighting is not None and weighting.needs_confidence and not self.self_adaptive_reward:
            self._value_error(f"reward_weighting={weighting.name!r} reads the confidence net, "
                              "which only trains with self_adaptive_reward=True")
        if (self.model_config or {}).get("sample_in_module"):
            self._value_error("PPO/APPO need model_config['sample_in_module']=False (logits in episodes)")

    @property
    def _model_config_auto_includes(self) -> dict[str, Any]:
        # The env runner's VoxelCategorical samples: logits and logp go into the episodes.
        return super()._model_config_auto_includes | {"sample_in_module": False}


class MECCAPPOConfig(VoxelRewardConfigMixin, PPOConfig):
    """PPO on the voxel env; PPO defaults sized for whole-volume steps (4 epochs, minibatch 10)."""

    def __init__(self, algo_class: type | None = None) -> None:
        super().__init__(algo_class=algo_class or MECCAPPO)
        self.lambda_ = 0.95
        self.num_epochs = 4
        self.minibatch_size = 10
        self.entropy_coeff = 0.0

    def get_default_learner_class(self):
        return MECCAPPOTorchLearner


class MECCAAPPOConfig(VoxelRewardConfigMixin, APPOConfig):
    """APPO on the voxel env (``vtrace`` stays True for RLlib's validation; it is unused)."""

    module_class = MECCATargetRLModule

    def __init__(self, algo_class: type | None = None) -> None:
        super().__init__(algo_class=algo_class or MECCAAPPO)
        self.lambda_ = 0.95
        self.num_env_runners = 0
        self.rollout_fragment_length = "auto"
        self.minibatch_size = None

    def get_default_learner_class(self):
        return MECCAAPPOTorchLearner


class MECCAPPO(PPO):
    """RLlib's PPO with :class:`MECCAPPOConfig` defaults."""

    @classmethod
    def get_default_config(cls) -> MECCAPPOConfig:
        return MECCAPPOConfig()


class MECCAAPPO(APPO):
    """RLlib's APPO with :class:`MECCAAPPOConfig` defaults."""

    @classmethod
    def get_default_config(cls) -> MECCAAPPOConfig:
        return MECCAAPPOConfig()
