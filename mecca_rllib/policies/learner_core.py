"""The learner half of the MECCA core, shared by ``MECCATorchLearner`` (A2C) and the
PPO/APPO learners (``policies/ppo``).

:class:`MECCALearnerCoreMixin` owns the two optimizers, ``"segmentation"`` (trunk, policy
and value heads; ``config.lr``) and ``"confidence"`` (the confidence net;
``config.confidence_lr``), and the confidence loss L_C (MECCA.md §3, Eq. 6) masked by its
own ``conf_loss_mask``: labeled episodes only, never simulated targets (MECCA.md §5).
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from ray.rllib.core.columns import Columns

from mecca_rllib.policies.connectors import CONF_LOSS_MASK, CONF_TARGETS, LOSS_MASK
from mecca_rllib.policies.rl_module import CONF_LOGITS, CONF_LOGITS_FLIPPED

CONFIDENCE_LOSS_KEY = "confidence_loss"
CONFIDENCE_ACCURACY_KEY = "confidence_accuracy"


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of ``x`` over entries where ``mask`` > 0 (weighted); 0 (with a graph) if none."""
    return (x * mask).sum() / mask.sum().clamp_min(1.0)


def normalized(x: torch.Tensor, mask: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """``x`` shifted and scaled to zero mean and unit std over the masked entries."""
    mean = masked_mean(x, mask)
    std = masked_mean((x - mean) ** 2, mask).sqrt()
    return (x - mean) / (std + eps)


def symmetric_confidence_loss(
    logits: torch.Tensor, flipped_logits: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor
) -> torch.Tensor:
    """L_C = BCE(C(s, a), c_hat) + BCE(C(s, -a), 1 - c_hat), averaged over masked voxels
    (MECCA.md §3, Eq. 6). All inputs broadcast to ``(B, N)``; logits are pre-sigmoid."""
    pos = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    neg = F.binary_cross_entropy_with_logits(flipped_logits, 1.0 - targets, reduction="none")
    return masked_mean(pos + neg, mask)


@dataclass(frozen=True)
class ConfidenceTerms:
    """The confidence loss of one batch and what its diagnostics need.

    loss: L_C (Eq. 6) over ``mask``; correct: ``(B, N)`` 1.0 where ``C > 0.5`` matches the
    target (no gradient); mask: ``(B, N)`` the ``conf_loss_mask`` used.
    """

    loss: torch.Tensor
    correct: torch.Tensor
    mask: torch.Tensor

    @property
    def accuracy(self) -> torch.Tensor:
        """Share of masked voxels where ``C > 0.5`` matches the target."""
        return masked_mean(self.correct, self.mask)


def confidence_mask(batch: Mapping[str, Any]) -> torch.Tensor:
    """``(B, N)`` voxels that train the confidence net: ``conf_loss_mask`` (labeled episodes
    only, MECCA.md §5); ``voxel_loss_mask`` for a batch without that column."""
    b = batch[Columns.OBS].shape[0]
    return batch[CONF_LOSS_MASK if CONF_LOSS_MASK in batch else LOSS_MASK].reshape(b, -1)


def confidence_terms(batch: Mapping[str, Any], fwd_out: Mapping[str, Any]) -> ConfidenceTerms:
    """Symmetric BCE of C(s, a) and C(s, -a) over :func:`confidence_mask` (MECCA.md §3, Eq. 6)."""
    b = batch[Columns.OBS].shape[0]
    mask = confidence_mask(batch)
    logits = fwd_out[CONF_LOGITS].reshape(b, -1)
    targets = batch[CONF_TARGETS].reshape(b, -1)
    loss = symmetric_confidence_loss(logits, fwd_out[CONF_LOGITS_FLIPPED].reshape(b, -1), targets, mask)
    with torch.no_grad():
        correct = ((logits > 0).float() == targets).float()
    return ConfidenceTerms(loss=loss, correct=correct, mask=mask)


class MECCALearnerCoreMixin:
    """Both optimizers and the confidence loss for a ``TorchLearner`` (MECCA.md §3).

    Put it before the torch learner in the bases. The confidence net trains when
    :meth:`trains_confidence` says so (``config.trains_confidence_net``; always for MECCA,
    ``self_adaptive_reward`` under PPO/APPO); otherwise the learner keeps its own single
    optimizer and :meth:`confidence_loss` is 0.
    """

    def trains_confidence(self, config: Any) -> bool:
        """Whether ``config`` trains the confidence net (a second optimizer and Eq. 6)."""
        return bool(getattr(config, "trains_confidence_net", False))

    def configure_optimizers_for_module(self, module_id: str, config: Any = None) -> None:
        """``"segmentation"`` (``config.lr``) and ``"confidence"`` (``config.confidence_lr``)
        Adam optimizers over disjoint parameters; the base learner's own if inactive."""
        if not self.trains_confidence(config):
            super().configure_optimizers_for_module(module_id, config)
            return
        module = self._module[module_id]
        module = module.unwrapped() if hasattr(module, "unwrapped") else module
        conf_ids = {id(p) for p in module.confidence_net.parameters()}
        seg_params = [p for p in self.get_parameters(module) if id(p) not in conf_ids]
        conf_params = [p for p in self.get_parameters(module) if id(p) in conf_ids]
        for name, params, lr in (("segmentation", seg_params, config.lr),
                                 ("confidence", conf_params, config.confidence_lr)):
            self.register_optimizer(module_id=module_id, optimizer_name=name,
                                    optimizer=torch.optim.Adam(params), params=params,
                                    lr_or_lr_schedule=lr)

    def confidence_terms(self, module_id: str, batch: Mapping[str, Any],
                         fwd_out: Mapping[str, Any]) -> ConfidenceTerms:
        """:func:`confidence_terms`, with its loss and accuracy logged under ``module_id``."""
        terms = confidence_terms(batch, fwd_out)
        self.metrics.log_dict({CONFIDENCE_LOSS_KEY: terms.loss.detach(),
                               CONFIDENCE_ACCURACY_KEY: terms.accuracy.detach()},
                              key=module_id, window=1)
        return terms

    def confidence_loss(self, module_id: str, config: Any, batch: Mapping[str, Any],
                        fwd_out: Mapping[str, Any]) -> torch.Tensor:
        """L_C (Eq. 6) over ``conf_loss_mask``, to add to the algorithm's loss (its
        parameters are disjoint: the ``"confidence"`` optimizer steps them); 0 when inactive."""
        if not self.trains_confidence(config):
            return torch.zeros((), device=batch[Columns.OBS].device)
        return self.confidence_terms(module_id, batch, fwd_out).loss
