"""``MECCATorchRLModule``: shared per-voxel policy, value map and confidence net (MECCA.md §2)."""
from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
import torch
from ray.rllib.core.columns import Columns
from ray.rllib.core.rl_module.apis import InferenceOnlyAPI, ValueFunctionAPI
from ray.rllib.core.rl_module.torch import TorchRLModule

from mecca_rllib.envs import ACTION_VALUES, HINT_CHANNELS
from mecca_rllib.policies.distribution import VoxelCategorical
from mecca_rllib.policies.networks import (
    NUM_ACTIONS,
    ConfidenceNet,
    Head,
    dilated_stack,
    with_keep_side,
    xavier_init,
)

# Extra forward-train outputs (besides ACTION_DIST_INPUTS and VF_PREDS).
CONF_LOGITS = "conf_logits"  # C(s, a) logits, (B, D, H, W)
CONF_LOGITS_FLIPPED = "conf_logits_flipped"  # C(s, -a) logits, (B, D, H, W)

DEFAULT_MODEL_CONFIG: dict[str, Any] = {
    "width": 16,
    "dilations": (1, 2, 4, 8, 16),
    "conf_dilations": (1, 2, 4, 8, 16, 1),
    # The confidence net's logit times the action's direction (networks.ConfidenceNet;
    # README "Thirteenth round"). False: the action map is one more input channel.
    "conf_signed": False,
    "dropout": 0.0,
    "shape": None,
    "sample_in_module": True,
    "hint_kernel": None,  # the env's hint kernel in training (None: unrecorded, 8 assumed)
    "hint_channels": 1,  # the env's hint channels: 1 (paper) or 2 (foreground, background)
    # Keep-side prior (networks.with_keep_side; README "Eighth round"): the action logits
    # get ``keep_side * (a / 0.4) * logit(p)``. 0: off (MECCA.md §2's plain policy head).
    "keep_side": 0.0,
    # Kernels (benchmarks/training_throughput.py, README "Training throughput"):
    # channels-last 3D convolutions, and optional bf16 autocast (fp32 weights) of the
    # action forward (env runners) and of the train forward (learners), CPU only.
    "channels_last": True,
    "act_bf16": False,
    "train_bf16": False,
}


class MECCATorchRLModule(TorchRLModule, ValueFunctionAPI, InferenceOnlyAPI):
    """P-Net-style dilated 3D CNN: 3 shared blocks, policy and value heads (2 blocks each),
    and a separate 6-block confidence network (MECCA.md §2).

    ``model_config``: ``width`` (16), ``dilations`` (5 values: trunk 3 + heads 2),
    ``conf_dilations`` (6 values), ``dropout`` (0.0), ``shape`` (training volume shape
    (D, H, W), recorded for inference), ``hint_kernel`` and ``hint_channels`` (the env's,
    recorded for inference), ``sample_in_module`` (True: exploration/inference
    return uint8 ``Columns.ACTIONS`` only, no logits stored in episodes; False: return
    ``Columns.ACTION_DIST_INPUTS`` for PPO-style algorithms). Observations are
    ``(B, 3, D, H, W)`` (image, p, hint), or ``(B, 4, D, H, W)`` with the env's
    ``hint_channels=2`` (:attr:`hint_channels`); the module is fully convolutional.
    The inference-only copy (env runners) drops the value head and the confidence net.
    """

    def setup(self) -> None:
        cfg = self.resolved_model_config()
        in_channels = 3
        if isinstance(self.observation_space, gym.spaces.Box) and self.observation_space.shape:
            in_channels = self.observation_space.shape[0]
            if in_channels - 2 not in HINT_CHANNELS:
                raise ValueError(
                    "MECCATorchRLModule expects observations (3, D, H, W) or, with "
                    "hint_channels=2, (4, D, H, W); got space shape "
                    f"{self.observation_space.shape}"
                )
        self.hint_channels = in_channels - 2
        if int(cfg["hint_channels"]) != self.hint_channels:
            raise ValueError(
                f"model_config['hint_channels'] = {cfg['hint_channels']} but the observations "
                f"have {self.hint_channels} hint channel(s) (space {self.observation_space.shape})"
            )
        dilations = tuple(int(d) for d in cfg["dilations"])
        if len(dilations) != 5:
            raise ValueError(f"model_config['dilations'] must have 5 values, got {dilations}")
        width, dropout = int(cfg["width"]), float(cfg["dropout"])
        self.trunk = dilated_stack(in_channels, width, dilations[:3], dropout)
        self.policy_head = Head(width, NUM_ACTIONS, dilations[3:], dropout)
        self.value_head = Head(width, 1, dilations[3:], dropout)
        self.confidence_net = ConfidenceNet(in_channels, width, cfg["conf_dilations"], dropout,
                                            bool(cfg["conf_signed"]))
        xavier_init(self)
        self.register_buffer(
            "action_value_table", torch.tensor(np.asarray(ACTION_VALUES), dtype=torch.float32), persistent=False
        )
        self.action_dist_cls = VoxelCategorical
        self.sample_in_module = bool(cfg["sample_in_module"])
        self.memory_format = torch.channels_last_3d if cfg["channels_last"] else torch.contiguous_format
        self.act_bf16 = bool(cfg["act_bf16"])
        self.train_bf16 = bool(cfg["train_bf16"])
        self.keep_side = float(cfg["keep_side"])
        self.to(memory_format=self.memory_format)

    def resolved_model_config(self) -> dict[str, Any]:
        """``DEFAULT_MODEL_CONFIG`` updated with the user's ``model_config``."""
        cfg = dict(DEFAULT_MODEL_CONFIG)
        cfg.update(self.model_config or {})
        return cfg

    def get_non_inference_attributes(self) -> list[str]:
        return ["value_head", "confidence_net"]

    # ------------------------------------------------------------------ public tensor API
    def _in(self, obs: torch.Tensor) -> torch.Tensor:
        """Observations in the module's memory format (``model_config["channels_last"]``)."""
        return obs.contiguous(memory_format=self.memory_format)

    def policy_logits(self, obs: torch.Tensor) -> torch.Tensor:
        """Per-voxel action logits: ``(B, 3, D, H, W) -> (B, 6, D, H, W)``."""
        return self.logits_of(self.trunk(self._in(obs)), obs)

    def logits_of(self, features: torch.Tensor, obs: torch.Tensor, head: torch.nn.Module | None = None) -> torch.Tensor:
        """Action logits ``(B, 6, D, H, W)`` from trunk features and the observation whose p
        channel the keep-side prior reads (``model_config["keep_side"]``); ``head``: the
        policy head (default ``self.policy_head``; APPO passes its target copy)."""
        logits = (self.policy_head if head is None else head)(features)
        return with_keep_side(logits, obs[:, 1], self.keep_side)

    def values(self, obs: torch.Tensor) -> torch.Tensor:
        """Per-voxel state values V_i: ``(B, 3, D, H, W) -> (B, D, H, W)``."""
        return self.value_head(self.trunk(self._in(obs))).squeeze(1)

    def confidence_logits(self, obs: torch.Tensor, action_values: torch.Tensor) -> torch.Tensor:
        """Logits of C(s, a): obs ``(B, 3, D, H, W)``, action values ``(B, D, H, W)`` -> ``(B, D, H, W)``."""
        return self.confidence_net(self._in(obs), action_values)

    def confidence(self, obs: torch.Tensor, action_values: torch.Tensor) -> torch.Tensor:
        """C(s, a) in (0, 1) (MECCA.md §2): obs ``(B, 3, D, H, W)``, action values
        ``(B, D, H, W)`` in probability units (e.g. +0.2) -> ``(B, D, H, W)``."""
        return torch.sigmoid(self.confidence_logits(obs, action_values))

    def action_values_of(self, actions: torch.Tensor) -> torch.Tensor:
        """Action indices (any shape, any integer dtype) -> float probability increments."""
        return self.action_value_table[actions.long()]

    # ------------------------------------------------------------------ RLlib forwards
    def _act(self, batch: dict[str, Any], deterministic: bool) -> dict[str, Any]:
        obs = batch[Columns.OBS]
        bf16 = self.act_bf16 and obs.device.type == "cpu"
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            logits = self.policy_logits(obs).float()
            if not self.sample_in_module:
                return {Columns.ACTION_DIST_INPUTS: logits}
            dist = VoxelCategorical(logits)
            if deterministic:
                dist = dist.to_deterministic()
            return {Columns.ACTIONS: dist.sample()}

    def _forward_inference(self, batch: dict[str, Any], **kwargs) -> dict[str, Any]:
        return self._act(batch, deterministic=True)

    def _forward_exploration(self, batch: dict[str, Any], **kwargs) -> dict[str, Any]:
        return self._act(batch, deterministic=False)

    def _forward_train(self, batch: dict[str, Any], **kwargs) -> dict[str, Any]:
        """Everything the MECCA loss needs, in one pass (DDP needs every parameter used):
        logits ``(B, 6, D, H, W)``, values ``(B, D, H, W)`` and, when the batch holds
        actions, confidence logits of C(s, a) and C(s, -a) ``(B, D, H, W)`` (Eq. 6)."""
        obs = self._in(batch[Columns.OBS])
        bf16 = self.train_bf16 and obs.device.type == "cpu"
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            features = self.trunk(obs)
            out = {
                Columns.ACTION_DIST_INPUTS: self.logits_of(features, obs),
                Columns.VF_PREDS: self.value_head(features).squeeze(1),
            }
            if Columns.ACTIONS in batch:
                a = self.action_values_of(batch[Columns.ACTIONS]).reshape(obs.shape[0], *obs.shape[2:])
                both = self.confidence_net(self._in(torch.cat([obs, obs])), torch.cat([a, -a]))
                out[CONF_LOGITS], out[CONF_LOGITS_FLIPPED] = both.chunk(2)
        return {k: v.float() for k, v in out.items()}  # losses in fp32

    def compute_values(self, batch: dict[str, Any], embeddings: Any = None) -> torch.Tensor:
        """Per-voxel values ``(B, D, H, W)`` of ``batch[Columns.OBS]`` (not ``(B,)``: MECCA is per voxel)."""
        if embeddings is not None:
            return self.value_head(embeddings).squeeze(1)
        return self.values(batch[Columns.OBS])
