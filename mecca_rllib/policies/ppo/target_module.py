"""``MECCATargetRLModule``: the MECCA module with APPO's target ("old") policy network."""
from __future__ import annotations

from typing import Any

from ray.rllib.core.columns import Columns
from ray.rllib.core.learner.utils import make_target_network
from ray.rllib.core.rl_module.apis import TargetNetworkAPI
from ray.rllib.core.rl_module.apis.target_network_api import TARGET_NETWORK_ACTION_DIST_INPUTS

from mecca_rllib.policies.rl_module import MECCATorchRLModule


class MECCATargetRLModule(MECCATorchRLModule, TargetNetworkAPI):
    """``MECCATorchRLModule`` plus APPO's target ("old") policy: trunk + policy head copies."""

    def make_target_networks(self) -> None:
        self._target_trunk = make_target_network(self.trunk)
        self._target_policy_head = make_target_network(self.policy_head)

    def get_target_network_pairs(self):
        return [(self.trunk, self._target_trunk), (self.policy_head, self._target_policy_head)]

    def forward_target(self, batch: dict[str, Any], **kwargs) -> dict[str, Any]:
        """Target-policy logits ``(B, 6, D, H, W)``."""
        obs = batch[Columns.OBS]
        logits = self.logits_of(self._target_trunk(obs), obs, head=self._target_policy_head)
        return {TARGET_NETWORK_ACTION_DIST_INPUTS: logits}

    def get_non_inference_attributes(self) -> list[str]:
        return super().get_non_inference_attributes() + ["_target_trunk", "_target_policy_head"]
