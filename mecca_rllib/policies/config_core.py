"""The config half of the MECCA core, shared by ``MECCAConfig`` (``algorithm.py``) and the
PPO/APPO configs (``policies/ppo``).

:class:`MECCACoreConfigMixin` owns the defaults (MECCA.md §2-3), the reward settings and
their ``training()`` keywords (MECCA.md §3), their validation, the model-config keys the
module records (shape, hint kernel and channels), the driver-side resolution of the reward
weighting and the per-voxel learner connector (``AddMECCATrainColumns``).
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ray.rllib.algorithms.algorithm_config import AlgorithmConfig, NotProvided
from ray.rllib.core.rl_module.rl_module import RLModuleSpec

from mecca_rllib.envs.interactive_seg_env import DEFAULT_CONFIG as ENV_DEFAULTS
from mecca_rllib.policies.connectors import AddMECCATrainColumns, LabelProvider
from mecca_rllib.policies.reward_shaping import (
    CONFIDENCE_SKILLS,
    REWARD_DEFAULTS,
    Weighting,
    get_weighting,
    registered_weightings,
    set_provided,
    weighting_params,
)
from mecca_rllib.policies.rl_module import DEFAULT_MODEL_CONFIG, MECCATorchRLModule

#: MECCA's defaults for RLlib settings (MECCA.md §2: lr 1e-4; §3: gamma 0.95; complete
#: episodes, 40 env steps per learner, sampling on the local env runner).
CORE_DEFAULTS: dict[str, Any] = {
    "env": "mecca_seg",
    "lr": 1e-4,
    "gamma": 0.95,
    "batch_mode": "complete_episodes",
    "train_batch_size_per_learner": 40,
    "num_env_runners": 0,
}


class MECCACoreConfigMixin:
    """MECCA's core settings for an RLlib ``AlgorithmConfig`` subclass (MECCA.md §2-3).

    Put it before the algorithm's config class in the bases. Hooks for what differs per
    algorithm: :meth:`_weighting_name`, :meth:`_resolved_label_provider`,
    :meth:`_returns_lambda`, :meth:`_module_terms`, :attr:`trains_confidence_net` and
    :attr:`module_class`.
    """

    module_class: type = MECCATorchRLModule

    def __init__(self, algo_class: type | None = None) -> None:
        super().__init__(algo_class=algo_class)
        for name, value in CORE_DEFAULTS.items():
            setattr(self, name, value)
        set_provided(self, REWARD_DEFAULTS, NotProvided)
        self.reward_weighting: str | None = "confidence"
        self.reward_weighting_kwargs: dict[str, Any] = {}
        self.weighting: Weighting | None = None  # `reward_weighting`, resolved on the driver
        self.normalize_advantages = False
        self.label_provider: LabelProvider | None = None

    def training(
        self,
        *,
        alpha: float = NotProvided,
        beta: float = NotProvided,
        reward_weighting: str | None = NotProvided,
        confidence_form: str = NotProvided,
        confidence_gate: bool = NotProvided,
        confidence_skill: str = NotProvided,
        error_region_lambda: float = NotProvided,
        focal_gamma: float = NotProvided,
        reward_weighting_kwargs: Mapping[str, Any] = NotProvided,
        voxel_mean_reward: bool = NotProvided,
        side_reward: float = NotProvided,
        switch_cost: float = NotProvided,
        confidence_lr: float = NotProvided,
        normalize_advantages: bool = NotProvided,
        label_provider: LabelProvider | None = NotProvided,
        **kwargs,
    ):
        """Reward settings (MECCA.md §3); other keywords go to the algorithm's ``training()``.

        Args:
            alpha, beta: hyper-parameters of the confidence weighting w(c) (Eq. 8).
            reward_weighting: a name registered in ``policies.reward_shaping``
                (``none``, ``focal_prob``, ``error_region``, ``confidence``, or your own);
                resolved here, on the driver, so a weighting registered in the user's
                process reaches remote Learner actors with the pickled config.
            confidence_form: ``"focal"`` (alpha (1 - c)^beta, default) or ``"paper"``
                ((alpha - c)^beta, negative for c > alpha).
            confidence_gate: True (default): the confidence re-weights rewards only as far
                as it beats chance at that step (``reward_shaping.confidence_skill``);
                False: the paper's w(c) always.
            confidence_skill: how the gate scores the confidence: ``"accuracy"`` (default:
                of ``C > 0.5`` against the majority outcome), ``"brier"`` (the Brier skill
                score, threshold-free) or ``"auc"`` (2 AUC - 1: how well C ranks the moves
                that help above those that fail; ``reward_shaping.CONFIDENCE_SKILLS``).
            error_region_lambda: lambda of ``error_region`` (Eq. 14).
            focal_gamma: exponent of ``focal_prob`` (Eqs. 12-13).
            reward_weighting_kwargs: extra keyword parameters for the weighting.
            voxel_mean_reward: replace each voxel's reward by the volume mean (paper option).
            side_reward: added reward per voxel fixed (moved to the right side of 0.5), and
                charge per voxel broken (``reward_shaping.side_terms``; 0: off, the paper).
            switch_cost: charge per voxel whose side of 0.5 changes (a hysteresis; 0: off).
            confidence_lr: learning rate of the confidence network's own optimizer.
            normalize_advantages: scale the per-voxel advantages of each update (PPO/APPO:
                each minibatch) to zero mean and unit std over its masked voxels.
            label_provider: per-episode targets hook (``policies.connectors.LabelProvider``;
                default: the env's ``info["label"]``, and for MECCA simulated labels).
        """
        super().training(**kwargs)
        set_provided(self, dict(
            alpha=alpha, beta=beta, reward_weighting=reward_weighting,
            confidence_form=confidence_form, confidence_gate=confidence_gate,
            confidence_skill=confidence_skill, error_region_lambda=error_region_lambda,
            focal_gamma=focal_gamma,
            voxel_mean_reward=voxel_mean_reward, side_reward=side_reward, switch_cost=switch_cost,
            confidence_lr=confidence_lr, normalize_advantages=normalize_advantages,
            label_provider=label_provider,
        ), NotProvided)
        if reward_weighting_kwargs is not NotProvided:
            self.reward_weighting_kwargs = dict(reward_weighting_kwargs)
        self._resolve_weighting()
        return self

    # ------------------------------------------------------------------ reward weighting
    @property
    def weighting_params(self) -> dict[str, Any]:
        """Keyword parameters offered to the reward weighting (it takes those it declares)."""
        return weighting_params(self)

    def _weighting_name(self) -> str:
        """The registered name of the reward weighting in use."""
        return self.reward_weighting

    def _resolve_weighting(self) -> None:
        """Store the registered weighting in ``self.weighting`` (driver side): the pickled
        config carries it, with its function, to every remote Learner and env runner."""
        name = self._weighting_name()
        if name in registered_weightings():
            self.weighting = get_weighting(name)

    def _weighting(self) -> Weighting:
        """The weighting resolved on the driver, else looked up by name (ValueError if unknown)."""
        name = self._weighting_name()
        weighting = getattr(self, "weighting", None)
        if weighting is not None and weighting.name == name:
            return weighting
        return get_weighting(name)

    def _validated_weighting(self) -> Weighting | None:
        """:meth:`_weighting`, or None after reporting an unknown name (``_value_error``)."""
        try:
            return self._weighting()
        except ValueError as err:
            self._value_error(str(err))
            return None

    # ------------------------------------------------------------------ per-algorithm hooks
    @property
    def trains_confidence_net(self) -> bool:
        """Whether the learners train the confidence net (its optimizer and Eq. 6)."""
        return True

    def _resolved_label_provider(self) -> LabelProvider | None:
        """The label provider of the learner connector (None: the env's labels)."""
        return self.label_provider

    def _returns_lambda(self) -> float | None:
        """GAE lambda of the per-voxel returns; None for A = R - V (MECCA.md §3)."""
        return getattr(self, "lambda_", None)

    def _module_terms(self) -> str:
        """``AddMECCATrainColumns(module_terms=...)``: who computes the module terms."""
        return "connector"

    # ------------------------------------------------------------------ RLlib overrides
    def validate(self) -> None:
        """The shared checks; resolves the weighting on the driver (before the config freezes)."""
        super().validate()
        if self.batch_mode != "complete_episodes":
            self._value_error("MECCA's per-voxel returns need batch_mode='complete_episodes', "
                              f"got {self.batch_mode!r}")
        weighting = self._validated_weighting()
        if weighting is not None and not self._is_frozen:
            self.weighting = weighting
        for name in ("side_reward", "switch_cost"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and 0.0 <= value < float("inf")):
                self._value_error(f"{name} must be a number >= 0, got {value!r}")
        if self.confidence_form not in ("paper", "focal"):
            self._value_error(f"confidence_form must be 'paper' or 'focal', got {self.confidence_form!r}")
        if self.confidence_skill not in CONFIDENCE_SKILLS:
            self._value_error(f"confidence_skill must be one of {sorted(CONFIDENCE_SKILLS)}, "
                              f"got {self.confidence_skill!r}")

    def get_default_rl_module_spec(self) -> RLModuleSpec:
        return RLModuleSpec(module_class=self.module_class)

    @property
    def _model_config_auto_includes(self) -> dict[str, Any]:
        # AlgorithmConfig's own (not PPO's ``vf_share_layers``, which the module ignores),
        # the network defaults, and what the session must reproduce: the volume shape and
        # the hint kernel and channels the policy saw in training.
        env_config = self.env_config or {}
        shape = env_config.get("shape")
        return AlgorithmConfig._model_config_auto_includes.fget(self) | DEFAULT_MODEL_CONFIG | {
            "shape": tuple(int(s) for s in shape) if shape is not None else None,
            "hint_kernel": int(env_config.get("hint_kernel", ENV_DEFAULTS["hint_kernel"])),
            "hint_channels": int(env_config.get("hint_channels", ENV_DEFAULTS["hint_channels"])),
        }

    def build_learner_connector(self, input_observation_space, input_action_space, device=None):
        """AlgorithmConfig's default pipeline (not IMPALA's, which adds a bootstrap timestep)
        plus the per-voxel columns: rewards, returns and advantages (MECCA.md §3)."""
        pipeline = AlgorithmConfig.build_learner_connector(
            self, input_observation_space, input_action_space, device
        )
        pipeline.append(
            AddMECCATrainColumns(
                gamma=self.gamma,
                gae_lambda=self._returns_lambda(),
                reward_weighting=self._weighting(),
                weighting_params=self.weighting_params,
                voxel_mean_reward=self.voxel_mean_reward,
                side_reward=self.side_reward,
                switch_cost=self.switch_cost,
                label_provider=self._resolved_label_provider(),
                module_terms=self._module_terms(),
            )
        )
        return pipeline
