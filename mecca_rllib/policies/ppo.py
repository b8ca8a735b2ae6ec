"""MECCA's env and RLModule under RLlib's PPO and APPO, with per-voxel advantages.

    from mecca_rllib.policies.ppo import MECCAPPOConfig

    config = (
        MECCAPPOConfig()
        .environment("mecca_seg", env_config={"dataset": "synthetic", "shape": (8, 16, 16)})
        .training(self_adaptive_reward=True, alpha=0.8, beta=1.0)  # "PPO + self-adaptive reward"
    )
    algo = config.build_algo()

What changes against stock PPO/APPO:
- the module is ``MECCATorchRLModule`` with ``sample_in_module=False``: it returns logits and
  the env runner's ``VoxelCategorical`` samples, so ``action_dist_inputs`` and ``action_logp``
  ``(N,)`` per step are stored in the episodes (the old policy of the ratio);
- RLlib's 1-D GAE piece (and its extra bootstrap timestep) is replaced by the per-voxel
  ``AddMECCATrainColumns`` (``policies/connectors.py``, built on ``policies/returns.py``):
  advantages and value targets are ``(B, N)`` with ``N = D * H * W``, GAE with PPO's
  ``lambda_`` over the shaped per-voxel rewards (MECCA.md §3);
- the surrogate, clipping, KL and entropy act per voxel and every loss is the mean over the
  voxels of ``voxel_loss_mask`` (:func:`voxel_ppo_loss`);
- ``self_adaptive_reward=True`` sets ``reward_weighting="confidence"`` (Eq. 8) and mixes the
  confidence network's loss (Eq. 6) and optimizer into the learner
  (:class:`ConfidenceLossMixin`); other weightings (``none``, ``focal_prob``,
  ``error_region``) are chosen with ``reward_weighting``.
APPO keeps its target ("old") policy network, IS-ratio clipping, circular buffer and
asynchronous learner; v-trace is NOT used: advantages come from the per-voxel connector on
complete episodes (at most ``circular_buffer_iterations_per_batch`` updates stale).
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from ray.rllib.algorithms.algorithm_config import AlgorithmConfig, NotProvided
from ray.rllib.algorithms.appo import APPO, APPOConfig
from ray.rllib.algorithms.appo.torch.appo_torch_learner import APPOTorchLearner
from ray.rllib.algorithms.ppo import PPO, PPOConfig
from ray.rllib.algorithms.ppo.ppo_learner import LEARNER_RESULTS_KL_KEY
from ray.rllib.algorithms.ppo.torch.ppo_torch_learner import PPOTorchLearner
from ray.rllib.core.columns import Columns
from ray.rllib.core.learner.learner import ENTROPY_KEY, POLICY_LOSS_KEY, VF_LOSS_KEY
from ray.rllib.core.learner.utils import make_target_network
from ray.rllib.core.rl_module.apis import TargetNetworkAPI
from ray.rllib.core.rl_module.apis.target_network_api import TARGET_NETWORK_ACTION_DIST_INPUTS
from ray.rllib.core.rl_module.rl_module import RLModuleSpec

from mecca_rllib.envs.interactive_seg_env import DEFAULT_CONFIG as ENV_DEFAULTS
from mecca_rllib.policies.connectors import (
    ADVANTAGES,
    CONF_LOSS_MASK,
    CONF_TARGETS,
    LOSS_MASK,
    VALUE_TARGETS,
    AddMECCATrainColumns,
    LabelProvider,
)
from mecca_rllib.policies.distribution import VoxelCategorical
from mecca_rllib.policies.learner import (
    CONFIDENCE_ACCURACY_KEY,
    CONFIDENCE_LOSS_KEY,
    MECCATorchLearner,
    masked_mean,
    normalized,
    symmetric_confidence_loss,
)
from mecca_rllib.policies.reward_shaping import (
    REWARD_DEFAULTS,
    Weighting,
    get_weighting,
    registered_weightings,
    set_provided,
    weighting_params,
)
from mecca_rllib.policies.rl_module import (
    CONF_LOGITS,
    CONF_LOGITS_FLIPPED,
    DEFAULT_MODEL_CONFIG,
    MECCATorchRLModule,
)


# ----------------------------------------------------------------------------- loss
def voxel_ppo_loss(
    *,
    logits: torch.Tensor,
    old_logits: torch.Tensor,
    actions: torch.Tensor,
    behaviour_logp: torch.Tensor,
    advantages: torch.Tensor,
    values: torch.Tensor,
    value_targets: torch.Tensor,
    mask: torch.Tensor,
    clip_param: float,
    vf_clip_param: float,
    vf_loss_coeff: float,
    entropy_coeff: float,
    normalize_advantages: bool = True,
    is_ratio_clip: float | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """PPO's clipped surrogate per voxel (no KL term; returned as a stat for the caller).

    Shapes: ``logits, old_logits (B, 6, D, H, W)``; ``actions (B, D, H, W)``;
    ``behaviour_logp, advantages, values, value_targets, mask (B, N)``.
    ``is_ratio_clip=None`` (PPO): ratio pi/pi_behaviour. A float (APPO): ratio
    ``clamp(pi_old/pi_behaviour, 0, is_ratio_clip) * pi/pi_old`` with pi_old the target net.
    Returns ``(loss, stats)``; every term is a mean over masked voxels (MECCA.md §3).
    """
    curr = VoxelCategorical(logits)
    old = VoxelCategorical(old_logits)
    logp = curr.logp(actions)  # (B, N)
    if is_ratio_clip is None:
        ratio = torch.exp(logp - behaviour_logp)
    else:
        old_logp = old.logp(actions)
        is_ratio = torch.clamp(torch.exp(old_logp - behaviour_logp), 0.0, is_ratio_clip)
        ratio = is_ratio * torch.exp(logp - old_logp)
    adv = advantages.detach()
    if normalize_advantages:
        adv = normalized(adv, mask, eps=1e-4)
    surrogate = torch.min(adv * ratio, adv * torch.clamp(ratio, 1.0 - clip_param, 1.0 + clip_param))
    vf_loss = (values - value_targets) ** 2
    vf_clipped = torch.clamp(vf_loss, 0.0, vf_clip_param)
    entropy = curr.entropy()  # (B, N)
    kl = old.kl(curr)  # (B, N)
    loss = masked_mean(-surrogate + vf_loss_coeff * vf_clipped - entropy_coeff * entropy, mask)
    stats = {
        POLICY_LOSS_KEY: masked_mean(-surrogate, mask),
        VF_LOSS_KEY: masked_mean(vf_clipped, mask),
        ENTROPY_KEY: masked_mean(entropy, mask),
        LEARNER_RESULTS_KL_KEY: masked_mean(kl, mask),
        "clip_fraction": masked_mean(((ratio - 1.0).abs() > clip_param).float(), mask),
    }
    return loss, stats


# ----------------------------------------------------------------------------- learners
class ConfidenceLossMixin:
    """Trains the confidence network next to any torch learner (MECCA.md §3, Eq. 6).

    Active when ``config.self_adaptive_reward``: a second optimizer ``"confidence"``
    (``config.confidence_lr``) over the confidence net, the rest on ``"segmentation"``
    (``config.lr``), exactly as ``MECCATorchLearner``; :meth:`confidence_loss` is added to
    the algorithm's loss. Inactive: the algorithm's own single optimizer and no extra loss.
    """

    def configure_optimizers_for_module(self, module_id: str, config: Any = None) -> None:
        if getattr(config, "self_adaptive_reward", False):
            MECCATorchLearner.configure_optimizers_for_module(self, module_id, config)
        else:
            super().configure_optimizers_for_module(module_id, config)

    def confidence_loss(self, module_id: str, config: Any, batch: Mapping[str, Any],
                        fwd_out: Mapping[str, Any]) -> torch.Tensor:
        """Symmetric BCE of C(s, a) and C(s, -a) over the voxels of ``conf_loss_mask``
        (labeled episodes only, MECCA.md §5; ``voxel_loss_mask`` if the batch has no such
        column); 0 when inactive."""
        if not getattr(config, "self_adaptive_reward", False):
            return torch.zeros((), device=batch[Columns.OBS].device)
        b = batch[Columns.OBS].shape[0]
        mask = batch[CONF_LOSS_MASK if CONF_LOSS_MASK in batch else LOSS_MASK].reshape(b, -1)
        logits = fwd_out[CONF_LOGITS].reshape(b, -1)
        targets = batch[CONF_TARGETS].reshape(b, -1)
        loss = symmetric_confidence_loss(logits, fwd_out[CONF_LOGITS_FLIPPED].reshape(b, -1), targets, mask)
        with torch.no_grad():
            accuracy = masked_mean(((logits > 0).float() == targets).float(), mask)
        self.metrics.log_dict({CONFIDENCE_LOSS_KEY: loss.detach(), CONFIDENCE_ACCURACY_KEY: accuracy},
                              key=module_id, window=1)
        return loss


def _voxel_columns(batch: Mapping[str, Any], fwd_out: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    b = batch[Columns.OBS].shape[0]
    return dict(
        logits=fwd_out[Columns.ACTION_DIST_INPUTS],
        actions=batch[Columns.ACTIONS],
        behaviour_logp=batch[Columns.ACTION_LOGP].reshape(b, -1),
        advantages=batch[ADVANTAGES].reshape(b, -1),
        values=fwd_out[Columns.VF_PREDS].reshape(b, -1),
        value_targets=batch[VALUE_TARGETS].reshape(b, -1),
        mask=batch[LOSS_MASK].reshape(b, -1),
    )


class MECCAPPOTorchLearner(ConfidenceLossMixin, PPOTorchLearner):
    """PPO learner with per-voxel advantages (``AddMECCATrainColumns``) and loss."""

    def build(self) -> None:
        super().build()
        # PPOLearner.build adds RLlib's 1-D GAE and its bootstrap timestep: the per-voxel
        # columns come from AddMECCATrainColumns (appended by the config) instead.
        if self._learner_connector is not None:
            self._learner_connector.remove("AddOneTsToEpisodesAndTruncate")
            self._learner_connector.remove("GeneralAdvantageEstimation")

    def compute_loss_for_module(self, *, module_id: str, config: Any, batch: dict[str, Any],
                                fwd_out: dict[str, Any]) -> torch.Tensor:
        columns = _voxel_columns(batch, fwd_out)
        loss, stats = voxel_ppo_loss(
            old_logits=batch[Columns.ACTION_DIST_INPUTS], **columns,
            clip_param=config.clip_param, vf_clip_param=config.vf_clip_param,
            vf_loss_coeff=config.vf_loss_coeff,
            entropy_coeff=self.entropy_coeff_schedulers_per_module[module_id].get_current_value(),
            normalize_advantages=config.normalize_advantages,
        )
        if config.use_kl_loss:
            loss = loss + self.curr_kl_coeffs_per_module[module_id] * stats[LEARNER_RESULTS_KL_KEY]
        self.metrics.log_dict({k: v.detach() for k, v in stats.items()}, key=module_id, window=1)
        return loss + self.confidence_loss(module_id, config, batch, fwd_out)


class MECCAAPPOTorchLearner(ConfidenceLossMixin, APPOTorchLearner):
    """APPO learner: target-network ratio with IS clipping, per voxel, no v-trace."""

    def compute_loss_for_module(self, *, module_id: str, config: Any, batch: dict[str, Any],
                                fwd_out: dict[str, Any]) -> torch.Tensor:
        module = self.module[module_id].unwrapped()
        old_logits = module.forward_target(batch)[TARGET_NETWORK_ACTION_DIST_INPUTS].detach()
        loss, stats = voxel_ppo_loss(
            old_logits=old_logits, **_voxel_columns(batch, fwd_out),
            clip_param=config.clip_param, vf_clip_param=float("inf"),
            vf_loss_coeff=config.vf_loss_coeff,
            entropy_coeff=self.entropy_coeff_schedulers_per_module[module_id].get_current_value(),
            normalize_advantages=config.normalize_advantages,
            is_ratio_clip=2.0,  # APPO's clamp of pi_old / pi_behaviour
        )
        if config.use_kl_loss:
            loss = loss + self.curr_kl_coeffs_per_module[module_id] * stats[LEARNER_RESULTS_KL_KEY]
        self.metrics.log_dict({k: v.detach() for k, v in stats.items()}, key=module_id, window=1)
        return loss + self.confidence_loss(module_id, config, batch, fwd_out)


# ----------------------------------------------------------------------------- module
class MECCATargetRLModule(MECCATorchRLModule, TargetNetworkAPI):
    """``MECCATorchRLModule`` plus APPO's target ("old") policy: trunk + policy head copies."""

    def make_target_networks(self) -> None:
        self._target_trunk = make_target_network(self.trunk)
        self._target_policy_head = make_target_network(self.policy_head)

    def get_target_network_pairs(self):
        return [(self.trunk, self._target_trunk), (self.policy_head, self._target_policy_head)]

    def forward_target(self, batch: dict[str, Any], **kwargs) -> dict[str, Any]:
        """Target-policy logits ``(B, 6, D, H, W)``."""
        logits = self._target_policy_head(self._target_trunk(batch[Columns.OBS]))
        return {TARGET_NETWORK_ACTION_DIST_INPUTS: logits}

    def get_non_inference_attributes(self) -> list[str]:
        return super().get_non_inference_attributes() + ["_target_trunk", "_target_policy_head"]


# ----------------------------------------------------------------------------- configs
class VoxelRewardConfigMixin:
    """MECCA's reward settings for an RLlib ``AlgorithmConfig`` subclass (MECCA.md §3).

    Put it before the algorithm's config class in the bases; call
    :meth:`_init_voxel_settings` in ``__init__``. Adds ``training()`` keywords, the module
    spec, the per-voxel learner connector and validation.
    """

    module_class: type = MECCATorchRLModule

    def _init_voxel_settings(self) -> None:
        self.env = "mecca_seg"
        self.batch_mode = "complete_episodes"
        self.gamma = 0.95  # MECCA.md §3
        self.lr = 1e-4  # MECCA.md §2
        self.train_batch_size_per_learner = 40
        self.num_env_runners = 0
        self.self_adaptive_reward = False
        self.reward_weighting: str | None = None  # None: "confidence" if self-adaptive else "none"
        set_provided(self, REWARD_DEFAULTS, NotProvided)
        self.reward_weighting_kwargs: dict[str, Any] = {}
        self.weighting: Weighting | None = None  # resolved on the driver by `training()`
        self.normalize_advantages = True
        self.label_provider: LabelProvider | None = None

    def training(
        self,
        *,
        self_adaptive_reward: bool = NotProvided,
        reward_weighting: str = NotProvided,
        alpha: float = NotProvided,
        beta: float = NotProvided,
        confidence_form: str = NotProvided,
        error_region_lambda: float = NotProvided,
        focal_gamma: float = NotProvided,
        reward_weighting_kwargs: Mapping[str, Any] = NotProvided,
        voxel_mean_reward: bool = NotProvided,
        confidence_lr: float = NotProvided,
        normalize_advantages: bool = NotProvided,
        label_provider: LabelProvider | None = NotProvided,
        **kwargs,
    ):
        """Voxel-reward settings; other keywords go to the algorithm's ``training()``.

        Args:
            self_adaptive_reward: MECCA's confidence-weighted reward (Eq. 8) and the
                confidence net's loss (Eq. 6); sets ``reward_weighting="confidence"``.
            reward_weighting: a registered weighting; default (None): ``"confidence"`` with
                ``self_adaptive_reward``, else ``"none"`` (plain gain, Eq. 9).
            alpha, beta, confidence_form, error_region_lambda, focal_gamma,
            reward_weighting_kwargs, voxel_mean_reward, confidence_lr, label_provider:
                as in ``MECCAConfig.training``.
            normalize_advantages: standardize the per-voxel advantages over the masked
                voxels of each minibatch.
        """
        super().training(**kwargs)
        set_provided(self, dict(
            self_adaptive_reward=self_adaptive_reward, reward_weighting=reward_weighting,
            alpha=alpha, beta=beta, confidence_form=confidence_form,
            error_region_lambda=error_region_lambda, focal_gamma=focal_gamma,
            voxel_mean_reward=voxel_mean_reward, confidence_lr=confidence_lr,
            normalize_advantages=normalize_advantages, label_provider=label_provider,
        ), NotProvided)
        name = self._weighting_name()
        if name in registered_weightings():
            # Resolve now (driver side) so weightings registered in the user's process reach
            # remote Learner actors with the pickled config (as MECCAConfig does).
            self.weighting = get_weighting(name)
        if reward_weighting_kwargs is not NotProvided:
            self.reward_weighting_kwargs = dict(reward_weighting_kwargs)
        return self

    @property
    def weighting_params(self) -> dict[str, Any]:
        return weighting_params(self)

    def _weighting_name(self) -> str:
        name = self.reward_weighting
        if name is None:
            name = "confidence" if self.self_adaptive_reward else "none"
        return name

    def _weighting(self) -> Weighting:
        """The weighting resolved by ``training()`` (driver side), else looked up by name."""
        name = self._weighting_name()
        weighting = getattr(self, "weighting", None)
        if weighting is not None and weighting.name == name:
            return weighting
        return get_weighting(name)

    def validate(self) -> None:
        super().validate()
        if self.batch_mode != "complete_episodes":
            self._value_error(f"per-voxel returns need batch_mode='complete_episodes', got {self.batch_mode!r}")
        try:
            weighting = self._weighting()
        except ValueError as err:
            self._value_error(str(err))
        if weighting.needs_confidence and not self.self_adaptive_reward:
            self._value_error(f"reward_weighting={weighting.name!r} reads the confidence net, "
                              "which only trains with self_adaptive_reward=True")
        if self.confidence_form not in ("paper", "focal"):
            self._value_error(f"confidence_form must be 'paper' or 'focal', got {self.confidence_form!r}")
        if (self.model_config or {}).get("sample_in_module"):
            self._value_error("PPO/APPO need model_config['sample_in_module']=False (logits in episodes)")

    def get_default_rl_module_spec(self) -> RLModuleSpec:
        return RLModuleSpec(module_class=self.module_class)

    @property
    def _model_config_auto_includes(self) -> dict[str, Any]:
        env_config = self.env_config or {}
        shape = env_config.get("shape")
        return AlgorithmConfig._model_config_auto_includes.fget(self) | DEFAULT_MODEL_CONFIG | {
            "shape": tuple(int(s) for s in shape) if shape is not None else None,
            # The hint kernel the policy saw in training; sessions draw hints the same way.
            "hint_kernel": int(env_config.get("hint_kernel", ENV_DEFAULTS["hint_kernel"])),
            "hint_channels": int(env_config.get("hint_channels", ENV_DEFAULTS["hint_channels"])),
            "sample_in_module": False,
        }

    def build_learner_connector(self, input_observation_space, input_action_space, device=None):
        # AlgorithmConfig's default pipeline (not IMPALA's, which adds a bootstrap timestep),
        # then the per-voxel columns: GAE with ``lambda_`` over shaped rewards, or plain
        # discounted returns with A = R - V for configs without ``lambda_`` (MECCA.md §3).
        pipeline = AlgorithmConfig.build_learner_connector(
            self, input_observation_space, input_action_space, device
        )
        pipeline.append(
            AddMECCATrainColumns(
                gamma=self.gamma,
                gae_lambda=getattr(self, "lambda_", None),
                reward_weighting=self._weighting(),
                weighting_params=self.weighting_params,
                voxel_mean_reward=self.voxel_mean_reward,
                label_provider=self.label_provider,
            )
        )
        return pipeline


class MECCAPPOConfig(VoxelRewardConfigMixin, PPOConfig):
    """PPO on the voxel env; PPO defaults sized for whole-volume steps (4 epochs, minibatch 10)."""

    def __init__(self, algo_class: type | None = None) -> None:
        super().__init__(algo_class=algo_class or MECCAPPO)
        self._init_voxel_settings()
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
        self._init_voxel_settings()
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
