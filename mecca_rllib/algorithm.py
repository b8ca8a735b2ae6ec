"""``MECCAConfig`` and ``MECCA``: the MECCA algorithm on RLlib's new API stack (MECCA.md §2-3).

    from mecca_rllib import MECCAConfig

    config = (
        MECCAConfig()
        .environment("mecca_seg", env_config={"dataset": "synthetic", "shape": (8, 16, 16)})
        .training(alpha=0.8, beta=1.0, reward_weighting="confidence", lr=1e-4)
    )
    algo = config.build_algo()
    algo.train()
"""
from __future__ import annotations

import logging
from typing import Any

import numpy as np
from ray.rllib.algorithms.algorithm import Algorithm
from ray.rllib.algorithms.algorithm_config import AlgorithmConfig, NotProvided
from ray.rllib.core.learner.learner import ENTROPY_KEY
from ray.rllib.env.single_agent_env_runner import SingleAgentEnvRunner
from ray.rllib.execution.rollout_ops import synchronous_parallel_sample
from ray.rllib.utils.metrics import (
    ALL_MODULES,
    ENV_RUNNER_RESULTS,
    ENV_RUNNER_SAMPLING_TIMER,
    LEARNER_RESULTS,
    LEARNER_UPDATE_TIMER,
    NUM_ENV_STEPS_SAMPLED_LIFETIME,
    NUM_MODULE_STEPS_TRAINED_LIFETIME,
    SYNCH_WORKER_WEIGHTS_TIMER,
    TIMERS,
)

from mecca_rllib.envs.interactive_seg_env import DEFAULT_CONFIG as ENV_DEFAULTS
from mecca_rllib.envs.vector import allow_ragged_infos
from mecca_rllib.policies.config_core import MECCACoreConfigMixin
from mecca_rllib.policies.connectors import LabelProvider
from mecca_rllib.policies.diagnostics import collapse_reason
from mecca_rllib.policies.learner import EPISODES_TRAINED_LIFETIME
from mecca_rllib.policies.reward_shaping import set_provided
from mecca_rllib.policies.simulated_labels import (
    DeltaSchedule,
    SimulatedLabelProvider,
    simulated_label_agreement,
)
from mecca_rllib.policies.warm_start import SCALE as WARM_START_SCALE

logger = logging.getLogger(__name__)

MECCA_RESULTS = "mecca"  # result key of MECCA's own metrics (per-step Dice of sampled episodes)
EPISODES_TRAINED = "episodes_trained_lifetime"  # under MECCA_RESULTS: episodes given to learners
COLLAPSED = "collapsed"  # under MECCA_RESULTS: 1.0 when the policy looks collapsed (diagnostics.py)
COLLAPSE_WARNING_INTERVAL = 50  # iterations between two collapse warnings in the log
GATE_SKILL = "confidence_gate_skill"  # under MECCA_RESULTS: the gate's skill, mean over steps
GATE_CHECK_ITERATION = 100  # a gate still shut at this iteration is reported once in the log


class MECCAEnvRunner(SingleAgentEnvRunner):
    """``SingleAgentEnvRunner`` that applies ``config.seed`` to its envs once only and gives
    each sub-env of ``num_envs_per_env_runner`` its own RNG streams.

    In ``complete_episodes`` mode RLlib resets (and would re-seed) the envs at every
    ``sample()`` call; with a fixed seed every episode would then replay the same case.
    """

    def make_env(self) -> None:
        """Build the (vector) env and make sub-env i slot i of ``num_envs``: the sub-envs
        share one case order and take turns along it (``InteractiveSegEnv.set_vector_slot``)."""
        super().make_env()
        subs = getattr(self.env.unwrapped, "envs", None)
        if subs is None:
            raise ValueError("MECCA needs env_runners(gym_env_vectorize_mode='SYNC') (the default)")
        for i, sub in enumerate(subs):
            sub.unwrapped.set_vector_slot(i, self.num_envs)
        allow_ragged_infos(self.env.unwrapped)  # info["clicks"] is (K, 3), K per sub-env

    def _try_env_reset(self, *, seed=None, options=None):
        # One seed for every sub-env (gymnasium would give sub-env i seed + i): the shared
        # case order needs the same seed everywhere; streams differ by the slot.
        if seed is not None and self.num_envs > 1:
            seed = [int(seed)] * self.num_envs
        return super()._try_env_reset(seed=seed, options=options)

    def _reset_envs(self, episodes, shared_data, explore):
        super()._reset_envs(episodes, shared_data, explore)
        self._seed = None  # later resets continue the env's own seeded case order


class MECCAConfig(MECCACoreConfigMixin, AlgorithmConfig):
    """Configuration of :class:`MECCA`; defaults follow MECCA.md §2-3 and §6.

    lr 1e-4, gamma 0.95, complete episodes, env ``"mecca_seg"``, new API stack only (the
    core defaults, reward settings, weighting and learner connector:
    :class:`~mecca_rllib.policies.config_core.MECCACoreConfigMixin`).
    """

    def __init__(self, algo_class: type | None = None) -> None:
        super().__init__(algo_class=algo_class or MECCA)
        self.env_runner_cls = MECCAEnvRunner
        # MECCA-specific (see `training()`).
        self.entropy_coeff: float | list = 0.0
        self.vf_loss_coeff = 0.5
        self.class_balanced = False
        self.class_balance_power = 1.0
        self.oracle_balanced = False
        self.oracle_confidence: bool | float = False
        self.oracle_confidence_from_step = 0
        self.oracle_target = "direction"
        self.oracle_coeff: float | list = 0.0
        self.oracle_dice = 0.0
        self.init_from: str | None = None
        self.init_from_scale = WARM_START_SCALE
        self.init_confidence = False
        self.one_forward = True
        self.gae_lambda: float | None = None
        # Simulated labels for unlabeled volumes (MECCA.md §5).
        self.simulated_labels = True
        self.delta_start = 0.85
        self.delta_growth = 0.00025
        self.delta_max = 0.99
        self.episodes_per_epoch: int | None = None
        self.agreement_episodes = 0
        self.agreement_interval = 10

    def training(
        self,
        *,
        entropy_coeff: float | list = NotProvided,
        vf_loss_coeff: float = NotProvided,
        class_balanced: bool = NotProvided,
        class_balance_power: float = NotProvided,
        oracle_balanced: bool = NotProvided,
        oracle_confidence: bool | float = NotProvided,
        oracle_confidence_from_step: int = NotProvided,
        oracle_target: str = NotProvided,
        oracle_coeff: float | list = NotProvided,
        oracle_dice: float = NotProvided,
        init_from: str | None = NotProvided,
        init_from_scale: float = NotProvided,
        init_confidence: bool = NotProvided,
        one_forward: bool = NotProvided,
        gae_lambda: float | None = NotProvided,
        simulated_labels: bool = NotProvided,
        delta_start: float = NotProvided,
        delta_growth: float = NotProvided,
        delta_max: float = NotProvided,
        episodes_per_epoch: int | None = NotProvided,
        agreement_episodes: int = NotProvided,
        agreement_interval: int = NotProvided,
        **kwargs,
    ) -> "MECCAConfig":
        """MECCA settings (MECCA.md §3); the reward settings (``alpha``, ``beta``,
        ``reward_weighting``, ``confidence_form``, ``confidence_gate``, ``confidence_skill``,
        ``error_region_lambda``, ``focal_gamma``, ``reward_weighting_kwargs``,
        ``voxel_mean_reward``, ``confidence_lr``, ``normalize_advantages``,
        ``label_provider``) are those of ``MECCACoreConfigMixin.training``; other keyword
        arguments go to ``AlgorithmConfig.training``.

        Args:
            entropy_coeff: weight of the per-voxel entropy bonus; a float or a schedule
                ``[[env_steps, value], ...]`` (linear in between).
            vf_loss_coeff: weight of the per-voxel value loss (V - R)^2.
            class_balanced: weigh each volume's target and background voxels equally in
                the policy (and oracle) loss; the weights come from the labels the rewards
                use (simulated ones for unlabeled volumes).
            class_balance_power: with ``class_balanced``, how far to balance: the weights
                ``0.5 / f`` and ``0.5 / (1 - f)`` raised to this power and rescaled to mean
                1 (1, default: equal totals; 0.5: part of the way; README "Seventh round").
            oracle_balanced: with ``class_balanced``, weigh the oracle term the same way
                (True); False (default, README "Learning quality"): the oracle term stays a
                plain per-voxel cross-entropy, whose argmax is not pushed toward the rarer
                class (class balance then weighs the policy-gradient term only).
            oracle_confidence: with a confidence-based ``reward_weighting`` (MECCA's), weigh
                each voxel's oracle term by the same gated w(c) its reward gets (Eq. 8,
                :func:`~mecca_rllib.policies.reward_shaping.gated_confidence_weight`), rescaled
                to mean 1 per volume and step: the supervised signal, like the reward,
                concentrates where the confidence doubts the action. No effect on IteR-MRL
                (no confidence). A number m in [0, 1] goes part of the way: ``(1 - m) + m w``
                (True is 1). False (default; README "Eleventh round", "Fourteenth round").
            oracle_confidence_from_step: interaction step (0 = the first action) from which
                ``oracle_confidence`` applies; earlier steps keep the uniform weight. 0
                (default): every step (README "Fifteenth round").
            oracle_target: what the oracle term rewards: ``"direction"`` (default) any step
                toward the label (the summed probability of the three actions of the right
                sign, as Eq. 7 scores a direction), leaving the step size to the RL reward;
                ``"max"`` the largest step, +0.4 / -0.4 (the earlier default: it saturates
                p, so a later click needs two steps to flip a voxel).
            oracle_coeff: weight of an auxiliary cross-entropy pulling the policy toward the
                oracle (``oracle_target``: a step toward the label) on the states it
                visits (a DAgger-style warm start); a float or a schedule like
                ``entropy_coeff``, e.g. ``[[0, 1.0], [20000, 0.0]]``. 0 (default): the
                paper's A2C only.
            oracle_dice: weight of a soft Dice loss, per volume, of the policy's
                probability that each voxel is foreground after its step
                (:func:`~mecca_rllib.policies.learner.next_foreground_prob`) against the
                label: the Dice term of the supervised baselines' loss, on the states the
                policy visits. 0 (default): off.
            init_from: a warm-start file (``mecca pretrain``; ``policies/warm_start.py``):
                the policy trunk and heads start from a supervised P-Net trained on the
                same data, loaded on the driver before the first update. None (default):
                Xavier initialisation (MECCA.md §2).
            init_from_scale: the warm start's action-logit scale, ``logit_k = scale *
                (a_k / 0.4) * z`` (``policies/warm_start.py``): below 1 the policy starts
                less sure than its P-Net. 1 (default; README "Seventh round": 0.5 gave the
                same final Dice on the atlas task, smoother steps, and lost one phantom seed).
            init_confidence: with ``init_from``, start the confidence net from the P-Net
                too, at ``C(s, a) = sigmoid(sign(a) z)`` (``policies/warm_start.py``; needs
                ``model_config["conf_signed"]`` and ``conf_dilations`` beginning with the
                policy's ``dilations``). False (default): Xavier (MECCA.md §2; README
                "Fourteenth round").
            one_forward: True (default): rewards, returns and advantages come from the
                learner's train forward (values and confidence detached); False: from a
                separate no-grad forward in the learner connector (slower, the same numbers).
            gae_lambda: None for plain returns with A = R - V; else GAE lambda.
            simulated_labels: train the segmentation network on unlabeled episodes against
                simulated labels (MECCA.md §5), unless ``label_provider`` is given. False:
                unlabeled episodes are ignored.
            delta_start, delta_growth, delta_max: gradient-mask threshold
                ``delta = min(delta_start + delta_growth * epoch, delta_max)`` (0.85,
                0.00025, 0.99; MECCA.md §5). One *epoch* is a pass over the training set:
                ``episodes_per_epoch`` episodes given to the learners (summed over all
                learners and env runners).
            episodes_per_epoch: episodes per epoch; None = ``env_config["num_cases"]`` (64
                by default): the training-set size of synthetic data. Set it to the number
                of training cases for folder or cache datasets.
            agreement_episodes: every ``agreement_interval`` iterations, play this many
                episodes on unlabeled training cases on the (first) learner and report how
                often simulated labels match the hidden truth (``mecca/sim_label_*``;
                monitoring only, never trained on). 0 turns it off.
        """
        super().training(**kwargs)
        set_provided(self, dict(
            entropy_coeff=entropy_coeff, vf_loss_coeff=vf_loss_coeff, class_balanced=class_balanced,
            class_balance_power=class_balance_power,
            oracle_balanced=oracle_balanced, oracle_confidence=oracle_confidence,
            oracle_confidence_from_step=oracle_confidence_from_step, oracle_target=oracle_target, oracle_coeff=oracle_coeff,
            oracle_dice=oracle_dice, init_from=init_from, init_from_scale=init_from_scale,
            init_confidence=init_confidence, one_forward=one_forward,
            gae_lambda=gae_lambda, simulated_labels=simulated_labels, delta_start=delta_start,
            delta_growth=delta_growth, delta_max=delta_max, episodes_per_epoch=episodes_per_epoch,
            agreement_episodes=agreement_episodes, agreement_interval=agreement_interval,
        ), NotProvided)
        return self

    def delta_schedule(self) -> DeltaSchedule:
        """The gradient-mask threshold schedule (MECCA.md §5) from ``delta_*`` and the epoch size."""
        per_epoch = self.episodes_per_epoch
        if per_epoch is None:
            per_epoch = int((self.env_config or {}).get("num_cases", 64))
        return DeltaSchedule(self.delta_start, self.delta_growth, self.delta_max, per_epoch)

    def _resolved_label_provider(self) -> LabelProvider | None:
        """``label_provider``, else simulated labels (MECCA.md §5) or the env's labels only."""
        if self.label_provider is not None:
            return self.label_provider
        return SimulatedLabelProvider(self.delta_start) if self.simulated_labels else None

    def _returns_lambda(self) -> float | None:
        return self.gae_lambda

    def _module_terms(self) -> str:
        return "loss" if self.one_forward else "connector"

    def validate(self) -> None:
        super().validate()
        if not self.enable_rl_module_and_learner or not self.enable_env_runner_and_connector_v2:
            self._value_error("MECCA runs on RLlib's new API stack only")
        if self.gae_lambda is not None and not 0.0 <= self.gae_lambda <= 1.0:
            self._value_error(f"gae_lambda must be None or in [0, 1], got {self.gae_lambda}")
        if self.oracle_target not in ("max", "direction"):
            self._value_error(f"oracle_target must be 'max' or 'direction', got {self.oracle_target!r}")
        if float(self.oracle_dice) < 0:
            self._value_error(f"oracle_dice must be >= 0, got {self.oracle_dice}")
        if not 0.0 <= float(self.oracle_confidence) <= 1.0:
            self._value_error(f"oracle_confidence must be a bool or a share in [0, 1], got {self.oracle_confidence}")
        if int(self.oracle_confidence_from_step) != self.oracle_confidence_from_step or self.oracle_confidence_from_step < 0:
            self._value_error(f"oracle_confidence_from_step must be an int >= 0, got {self.oracle_confidence_from_step}")
        if not float(self.class_balance_power) >= 0:
            self._value_error(f"class_balance_power must be >= 0, got {self.class_balance_power}")
        if not float(self.init_from_scale) > 0:
            self._value_error(f"init_from_scale must be > 0, got {self.init_from_scale}")
        if self.init_confidence and not self.init_from:
            self._value_error("init_confidence starts the confidence net from the warm start: set "
                              "init_from (a `mecca pretrain` file) too")
        if self.init_confidence and not (self.model_config or {}).get("conf_signed", False):
            self._value_error("init_confidence needs model_config['conf_signed'] = True: an unsigned "
                              "confidence net cannot start as sigmoid(sign(a) z)")
        if not 0.0 <= self.gamma <= 1.0:
            self._value_error(f"gamma must be in [0, 1], got {self.gamma}")
        try:
            self.delta_schedule()
        except ValueError as err:
            self._value_error(str(err))
        for name in ("entropy_coeff", "oracle_coeff"):
            value = getattr(self, name)
            if isinstance(value, (list, tuple)):
                if not value or any(len(v) != 2 for v in value) or value[0][0] != 0:
                    self._value_error(f"{name} schedule must be [[0, v0], [t1, v1], ...], got {value!r}")
            elif float(value) < 0:
                self._value_error(f"{name} must be >= 0, got {value}")
        if self.minibatch_size and int(self.minibatch_size) % int((self.env_config or {}).get(
                "steps", ENV_DEFAULTS["steps"])):
            self._value_error("MECCA's minibatch_size must be a multiple of the episode length "
                              f"(env_config['steps']): returns need whole episodes, got {self.minibatch_size}")
        if self.minibatch_size and self.shuffle_batch_per_epoch:
            self._value_error("MECCA's minibatches must keep episodes whole: set "
                              "shuffle_batch_per_epoch=False with minibatch_size")
        if int(self.agreement_episodes) < 0 or int(self.agreement_interval) < 1:
            self._value_error("agreement_episodes must be >= 0 and agreement_interval >= 1, got "
                              f"{self.agreement_episodes}, {self.agreement_interval}")

    def get_default_learner_class(self):
        from mecca_rllib.policies.learner import MECCATorchLearner

        return MECCATorchLearner


class MECCA(Algorithm):
    """Samples complete episodes, updates the learner group, syncs weights (MECCA.md §2-3)."""

    @classmethod
    def get_default_config(cls) -> MECCAConfig:
        return MECCAConfig()

    def setup(self, config: MECCAConfig) -> None:
        super().setup(config)
        self._gate_opened = False  # has the confidence gate's skill been > 0 yet (_check_gate)
        if self.config.init_from:
            self.warm_start(self.config.init_from)

    def warm_start(self, path: str) -> None:
        """Load a P-Net warm-start file into the policy trunk and heads of every learner
        and env runner (``policies/warm_start.py``); the confidence net too with
        ``init_confidence``."""
        from ray.rllib.core import DEFAULT_MODULE_ID

        from mecca_rllib.policies.warm_start import warm_start_from_file

        state = self.learner_group.get_weights([DEFAULT_MODULE_ID])[DEFAULT_MODULE_ID]
        state = warm_start_from_file(state, path, self.config.model_config,
                                     action_scale=self.config.init_from_scale,
                                     confidence=self.config.init_confidence)
        self.learner_group.set_weights({DEFAULT_MODULE_ID: state})
        self.env_runner_group.sync_weights(from_worker_or_learner_group=self.learner_group,
                                           inference_only=True)
        logger.info("MECCA: policy trunk and heads%s initialised from %s",
                    " and the confidence net" if self.config.init_confidence else "", path)

    def training_step(self) -> None:
        with self.metrics.log_time((TIMERS, ENV_RUNNER_SAMPLING_TIMER)):
            episodes, env_runner_results = synchronous_parallel_sample(
                worker_set=self.env_runner_group,
                max_env_steps=self.config.total_train_batch_size,
                sample_timeout_s=self.config.sample_timeout_s,
                _uses_new_env_runners=True,
                _return_metrics=True,
            )
        self.metrics.aggregate(env_runner_results, key=ENV_RUNNER_RESULTS)
        episodes = [e for e in episodes if e.is_done]
        # Whole episodes per learner: RLlib's sharder slices episodes unless every shard
        # gets the same number of (equal-length) episodes.
        n_learners = max(self.config.num_learners, 1)
        episodes = episodes[: len(episodes) - len(episodes) % n_learners]
        if not episodes:
            return
        self._log_dice(episodes)
        trained_before = int(self.metrics.peek((MECCA_RESULTS, EPISODES_TRAINED), default=0))

        kwargs: dict[str, Any] = {
            "num_epochs": self.config.num_epochs,
            "shuffle_batch_per_epoch": self.config.shuffle_batch_per_epoch,
        }
        if self.config.minibatch_size:  # never pass None: crashes with num_learners > 1
            kwargs["minibatch_size"] = self.config.minibatch_size
        with self.metrics.log_time((TIMERS, LEARNER_UPDATE_TIMER)):
            learner_results = self.learner_group.update(
                episodes=episodes,
                timesteps={
                    NUM_ENV_STEPS_SAMPLED_LIFETIME: self.metrics.peek(
                        (ENV_RUNNER_RESULTS, NUM_ENV_STEPS_SAMPLED_LIFETIME), default=0
                    ),
                    NUM_MODULE_STEPS_TRAINED_LIFETIME: self.metrics.peek(
                        (LEARNER_RESULTS, ALL_MODULES, NUM_MODULE_STEPS_TRAINED_LIFETIME),
                        default=0,
                    ),
                    EPISODES_TRAINED_LIFETIME: trained_before,
                },
                **kwargs,
            )
        self.metrics.aggregate(learner_results, key=LEARNER_RESULTS)
        self._check_collapse(set(learner_results[0].keys()) - {ALL_MODULES})
        self._check_gate(set(learner_results[0].keys()) - {ALL_MODULES})
        self._log_label_stats(episodes, trained_before)
        with self.metrics.log_time((TIMERS, SYNCH_WORKER_WEIGHTS_TIMER)):
            self.env_runner_group.sync_weights(
                from_worker_or_learner_group=self.learner_group,
                policies=set(learner_results[0].keys()) - {ALL_MODULES},
                inference_only=True,
            )

    def _check_collapse(self, module_ids: set[str]) -> None:
        """``mecca/collapsed`` (0/1) and a log warning when the policy ends (almost) all
        background or all foreground, or its entropy is near zero (issue 14's "see it")."""
        last = int((self.config.env_config or {}).get("steps", ENV_DEFAULTS["steps"])) - 1
        reasons = []
        for module_id in sorted(module_ids):
            share = self.metrics.peek((LEARNER_RESULTS, module_id, f"step{last}/foreground_share"), default=None)
            entropy = self.metrics.peek((LEARNER_RESULTS, module_id, ENTROPY_KEY), default=None)
            if share is not None and entropy is not None:
                reason = collapse_reason(float(share), float(entropy))
                if reason:
                    reasons.append(f"{module_id}: {reason}")
        self.metrics.log_value((MECCA_RESULTS, COLLAPSED), float(bool(reasons)), window=1)
        last_warned = getattr(self, "_collapse_warned_at", None)
        if reasons and (last_warned is None or self.iteration - last_warned >= COLLAPSE_WARNING_INTERVAL):
            self._collapse_warned_at = self.iteration
            logger.warning("MECCA policy collapse at iteration %d (%s); try a larger entropy_coeff, "
                           "oracle_coeff > 0 or a lower lr (README: learning quality)",
                           self.iteration, "; ".join(reasons))

    def _check_gate(self, module_ids: set[str]) -> None:
        """``mecca/confidence_gate_skill``: the gated self-adaptive reward's skill (MECCA.md §3,
        Eq. 8; ``reward_shaping.CONFIDENCE_SKILLS``), mean over the steps and modules of this
        update. A gate that has stayed shut (skill 0) up to :data:`GATE_CHECK_ITERATION` is
        reported once: until it opens, MECCA's reward is IteR-MRL's times w(0.5)."""
        config = self.config
        if not (getattr(config, "confidence_gate", False) and config._weighting().needs_confidence):
            return
        steps = int((config.env_config or {}).get("steps", ENV_DEFAULTS["steps"]))
        skills = [self.metrics.peek((LEARNER_RESULTS, m, f"step{t}/confidence_skill_{config.confidence_skill}"),
                                    default=None) for m in sorted(module_ids) for t in range(steps)]
        skills = [float(s) for s in skills if s is not None]
        if not skills:
            return
        skill = float(np.mean(skills))
        self.metrics.log_value((MECCA_RESULTS, GATE_SKILL), skill, window=1)
        self._gate_opened = self._gate_opened or skill > 0
        if self.iteration == GATE_CHECK_ITERATION and not self._gate_opened:
            logger.warning("MECCA's confidence gate has stayed shut for %d iterations (the confidence "
                           "net's %s skill is 0 at every step): the self-adaptive reward is IteR-MRL's "
                           "times w(0.5) (README: learning quality, thirteenth round)",
                           self.iteration, config.confidence_skill)

    def _log_label_stats(self, episodes: list, trained_before: int) -> None:
        """Labeled/unlabeled episode counts, epoch and delta of this update (MECCA.md §5);
        every ``agreement_interval`` iterations the env-side agreement of simulated labels."""
        schedule = self.config.delta_schedule()
        unlabeled = sum(bool(e.get_infos(0).get("unlabeled", False)) for e in episodes)
        self.metrics.log_value((MECCA_RESULTS, EPISODES_TRAINED), len(episodes), reduce="lifetime_sum")
        self.metrics.log_dict(
            {
                "labeled_episodes": len(episodes) - unlabeled,
                "unlabeled_episodes": unlabeled,
                "epoch": schedule.epoch(trained_before),
                "delta": schedule(trained_before),
            },
            key=MECCA_RESULTS,
            window=1,
        )
        n = int(self.config.agreement_episodes)
        if n > 0 and self.config.simulated_labels and self.iteration % self.config.agreement_interval == 0:
            stats = self._agreement(n, schedule(trained_before))
            if stats:
                self.metrics.log_dict({f"sim_label_{k}": v for k, v in stats.items()},
                                      key=MECCA_RESULTS, window=1)

    def _agreement(self, episodes: int, delta: float) -> dict[str, float]:
        """``simulated_label_agreement`` on the first learner's module (it has the confidence net)."""
        env_config, seed = dict(self.config.env_config or {}), int(self.iteration)

        def run(learner) -> dict[str, float]:
            from mecca_rllib.envs import InteractiveSegEnv

            env = getattr(learner, "_mecca_agreement_env", None)
            if env is None:
                env = learner._mecca_agreement_env = InteractiveSegEnv(env_config)
            module = learner.module[next(iter(learner.module.keys()))]
            module = module.unwrapped() if hasattr(module, "unwrapped") else module
            return simulated_label_agreement(module, env, delta=delta, episodes=episodes, seed=seed)

        first = next(iter(self.learner_group.foreach_learner(run)))
        return first.get() if hasattr(first, "get") else first

    def _log_dice(self, episodes: list) -> None:
        """Mean Dice after reset and after every step of the sampled episodes (from infos)."""
        per_episode = [
            [float(info.get("dice", np.nan)) for info in e.get_infos()] for e in episodes
        ]
        steps = min(len(d) for d in per_episode)
        dice = np.nanmean(np.array([d[:steps] for d in per_episode]), axis=0)
        stats = {f"dice_step_{t}": float(v) for t, v in enumerate(dice)}
        stats["dice_final"] = float(dice[-1])
        stats["episodes"] = len(episodes)
        self.metrics.log_dict(stats, key=MECCA_RESULTS, window=1)
