"""Warm start: MECCA's policy initialised from a supervised P-Net (README "Learning quality").

A warm-start file holds a P-Net (``mecca_rllib.baselines.PNet``: ``len(dilations)`` dilated
blocks + a 1x1x1 convolution to one foreground logit ``z``) trained on the same data, and
which observation channels it reads. :func:`warm_start_state` maps it onto the module
(MECCA.md §2 layout):

- the first three blocks -> the shared trunk; the last two -> the policy head's and the
  value head's blocks (the value head keeps its own output layer);
- the logit layer -> the six action logits, ``logit_k = scale * (a_k / 0.4) * z``: where
  the P-Net says foreground (``z > 0``) the argmax action is +0.4, elsewhere -0.4, and the
  sampled policy still tries the smaller moves (pixelRL-style initialisation);
- observation channels the P-Net did not read get zero input weights.

The confidence network is not touched (it learns from the rollouts, MECCA.md §2) unless
``confidence=True`` (``MECCAConfig.training(init_confidence=True)``; README "Fourteenth
round"): then its first five blocks take the P-Net's, its sixth passes its input through
(an identity kernel: the features are non-negative after a ReLU) and its output layer the
P-Net's logit, so a signed confidence net (``model_config.conf_signed``) starts at
``C(s, a) = sigmoid(sign(a) z)``: the P-Net's belief that a step in a's direction is right.

    save_warm_start("pnet.pt", net.state_dict(), channels=(0, 1, 2), width=16, dilations=...)
    config.training(init_from="pnet.pt")  # loaded by MECCA.setup before the first update
"""
from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mecca_rllib.data.atomic import atomic_file
from mecca_rllib.data.errors import DataError
from mecca_rllib.envs.spaces import ACTION_VALUES

__all__ = ["FORMAT", "SCALE", "load_warm_start", "save_warm_start", "warm_start_from_file", "warm_start_state"]

#: Format tag of a warm-start file; a file without it (or with another) is refused.
FORMAT = "mecca-rllib/pnet-warm-start-v1"
_TRUNK_BLOCKS = 3
#: MECCA's default action-logit scale of a warm start (``MECCAConfig.training(init_from_scale=)``;
#: README "Seventh round": 0.5 smoothed the atlas steps but lost 6.8 points on a phantom seed).
SCALE = 1.0


def save_warm_start(path: str | os.PathLike, state_dict: Mapping[str, torch.Tensor], *,
                    channels: Sequence[int], width: int, dilations: Sequence[int],
                    meta: Mapping[str, Any] | None = None) -> Path:
    """Write a P-Net's weights and what they read (atomically); returns the path.

    ``channels``: the observation channels (image 0, p 1, hint 2...) the P-Net's first
    convolution reads, in its input order. ``meta``: free-form provenance (kind, env steps).
    """
    path = Path(path)
    payload = {
        "format": FORMAT,
        "channels": [int(c) for c in channels],
        "width": int(width),
        "dilations": [int(d) for d in dilations],
        "state_dict": {k: v.detach().cpu().clone() for k, v in state_dict.items()},
        "meta": dict(meta or {}),
    }
    with atomic_file(path) as tmp:
        torch.save(payload, tmp)
    return path


def load_warm_start(path: str | os.PathLike) -> dict[str, Any]:
    """Read a file written by :func:`save_warm_start`.

    Raises:
        DataError: missing, unreadable, or not a warm-start file (names the file).
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(path, "warm-start file not found (write one with `mecca pretrain`)")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - torch raises many kinds on corrupt files
        raise DataError(path, f"not a readable warm-start file ({type(err).__name__}: {err})") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        found = payload.get("format") if isinstance(payload, dict) else type(payload).__name__
        raise DataError(path, f"not a MECCA warm-start file: format {found!r}, expected {FORMAT!r}")
    return payload


def _blocks(state: Mapping[str, Any], prefix: str) -> list[tuple[str, str]]:
    """``(suffix, key)`` of the two convolutions per block under ``prefix`` (``"blocks.0.0.weight"``)."""
    return sorted((k[len(prefix):], k) for k in state if k.startswith(prefix))


def _first_conv(pnet_weight: np.ndarray, target: np.ndarray, channels: Sequence[int]) -> np.ndarray:
    """The P-Net's first convolution scattered onto a module's input channels (the rest 0)."""
    full = np.zeros_like(target)
    full[:, list(channels)] = pnet_weight
    return full


def _identity_block(state: dict[str, np.ndarray], prefix: str) -> None:
    """Both convolutions of the block ``prefix`` made identities (centre tap 1, bias 0)."""
    for conv in ("0", "2"):
        weight = np.zeros_like(state[f"{prefix}{conv}.weight"])
        centre = tuple(k // 2 for k in weight.shape[2:])
        for o in range(weight.shape[0]):
            weight[(o, o) + centre] = 1.0
        state[f"{prefix}{conv}.weight"] = weight
        state[f"{prefix}{conv}.bias"] = np.zeros_like(state[f"{prefix}{conv}.bias"])


def _check_conf_dilations(dilations: Sequence[int], conf_dilations: Sequence[int] | None,
                          source: str | os.PathLike) -> None:
    """Refuse a confidence net whose first blocks cannot take the P-Net's (``init_confidence``)."""
    n_blocks = len(dilations)
    if conf_dilations is None or [int(d) for d in conf_dilations[:n_blocks]] != [int(d) for d in dilations]:
        raise DataError(source, f"init_confidence needs the confidence net's first {n_blocks} dilations "
                                f"to be the P-Net's {list(dilations)}, got "
                                f"{None if conf_dilations is None else list(conf_dilations)} (set "
                                f"model_config.conf_dilations to {list(dilations) + [1]})")


def warm_start_state(module_state: Mapping[str, Any], warm: Mapping[str, Any], *,
                     width: int, dilations: Sequence[int], action_scale: float = 1.0,
                     confidence: bool = False, conf_dilations: Sequence[int] | None = None,
                     source: str | os.PathLike = "warm start") -> dict[str, np.ndarray]:
    """The module's state dict with trunk and heads taken from a P-Net (module docstring).

    ``module_state``: the MECCA module's weights (numpy or torch, as RLlib's
    ``get_weights`` returns them); ``warm``: a :func:`load_warm_start` payload;
    ``width``/``dilations``: the module's. ``confidence``: also start the confidence net
    from the P-Net (its ``conf_dilations`` must begin with ``dilations``; meant for a signed
    confidence net). Returns numpy arrays, every key of ``module_state``.

    Raises:
        DataError: the P-Net's width, dilations or channels do not fit the module.
    """
    if int(warm["width"]) != int(width) or [int(d) for d in warm["dilations"]] != [int(d) for d in dilations]:
        raise DataError(source, f"P-Net width {warm['width']}, dilations {list(warm['dilations'])} do "
                                f"not match the policy's width {width}, dilations {list(dilations)}")
    out = {k: np.array(v, dtype=np.float32, copy=True) for k, v in module_state.items()}
    pnet = {k: np.asarray(v, dtype=np.float32) for k, v in warm["state_dict"].items()}
    in_channels = out["trunk.0.0.weight"].shape[1]
    channels = [int(c) for c in warm["channels"]]
    if not channels or max(channels) >= in_channels or len(set(channels)) != len(channels):
        raise DataError(source, f"P-Net reads observation channels {channels}, the policy has "
                                f"{in_channels} (image, p, hint...)")
    if confidence:
        _check_conf_dilations(dilations, conf_dilations, source)
    n_blocks = len(dilations)
    for i in range(n_blocks):
        prefixes = ([f"trunk.{i}."] if i < _TRUNK_BLOCKS else
                    [f"{head}.blocks.{i - _TRUNK_BLOCKS}." for head in ("policy_head", "value_head")])
        if confidence:
            prefixes.append(f"confidence_net.blocks.{i}.")
        for suffix, key in _blocks(pnet, f"blocks.{i}."):
            for name in (prefix + suffix for prefix in prefixes):
                value = pnet[key]
                if i == 0 and suffix == "0.weight" and name in out:  # scatter onto the module's channels
                    value = _first_conv(value, out[name], channels)
                if name not in out or out[name].shape != value.shape:
                    raise DataError(source, f"P-Net tensor {key} {value.shape} does not fit the "
                                            f"policy's {name} {out.get(name, np.empty(0)).shape}")
                out[name] = value.copy()
    # Eq. of the module docstring: logit_k = scale * (a_k / max|a|) * z.
    gains = action_scale * np.asarray(ACTION_VALUES, np.float32) / max(abs(a) for a in ACTION_VALUES)
    out["policy_head.out.weight"] = gains[:, None, None, None, None] * pnet["out.weight"]
    out["policy_head.out.bias"] = gains * pnet["out.bias"]
    if confidence:  # the blocks past the P-Net's pass their input through; the output is z
        for i in range(n_blocks, len(conf_dilations)):
            _identity_block(out, f"confidence_net.blocks.{i}.")
        out["confidence_net.out.weight"] = pnet["out.weight"].copy()
        out["confidence_net.out.bias"] = pnet["out.bias"].copy()
    return out


def warm_start_from_file(module_state: Mapping[str, Any], path: str | os.PathLike,
                         model_config: Mapping[str, Any] | None = None, *,
                         action_scale: float = SCALE, confidence: bool = False) -> dict[str, np.ndarray]:
    """:func:`warm_start_state` of the warm-start file ``path`` for a module built with
    ``model_config`` (merged over the module defaults: its width and dilations)."""
    from mecca_rllib.policies.rl_module import DEFAULT_MODEL_CONFIG

    model = {**DEFAULT_MODEL_CONFIG, **(model_config or {})}
    return warm_start_state(module_state, load_warm_start(path), width=int(model["width"]),
                            dilations=model["dilations"], action_scale=action_scale,
                            confidence=confidence, conf_dilations=model["conf_dilations"], source=path)
