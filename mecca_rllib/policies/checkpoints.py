"""Load the MECCA RLModule for inference from any checkpoint, and export it on its own.

Accepted by :func:`load_rl_module`:

- an *exported* module folder (:func:`export_rl_module`): ``mecca_module.json`` (model
  config and format version) + ``weights.pt`` (a plain ``state_dict``, loaded with
  ``torch.load(weights_only=True)``: no pickle is executed);
- an Algorithm checkpoint folder (``Algorithm.save_to_path`` or a Tune checkpoint
  ``checkpoint_00000N``), or an RLlib RLModule checkpoint folder. These are RLlib's own
  format, which stores the module state with ``pickle``: load only checkpoints you trust.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import gymnasium as gym
import numpy as np
import torch

from mecca_rllib.envs import DEFAULT_CONFIG as ENV_DEFAULTS

if TYPE_CHECKING:  # the RLModule imports RLlib: only the functions that build one load it
    from mecca_rllib.policies.rl_module import MECCATorchRLModule

EXPORT_META = "mecca_module.json"
EXPORT_WEIGHTS = "weights.pt"
EXPORT_FORMAT = 1
_MODULE_SUBDIR = Path("learner_group", "learner", "rl_module", "default_policy")
_RLLIB_MODULE_FILES = ("class_and_ctor_args.pkl", "module_state.pkl")


def build_module(model_config: dict[str, Any], shape: tuple[int, int, int] | None = None) -> MECCATorchRLModule:
    """A fresh (untrained, Xavier-initialised) full module for volumes ``shape`` (D, H, W).

    ``shape`` defaults to ``model_config["shape"]``; the module is fully convolutional, so
    the shape only sets the recorded spaces.
    """
    from mecca_rllib.policies.rl_module import DEFAULT_MODEL_CONFIG, MECCATorchRLModule

    cfg = {**DEFAULT_MODEL_CONFIG, **model_config}
    shape = tuple(int(s) for s in (shape or cfg.get("shape") or (30, 55, 55)))
    cfg["shape"] = shape
    return MECCATorchRLModule(
        observation_space=gym.spaces.Box(
            -np.inf, np.inf, (2 + int(cfg["hint_channels"]), *shape), np.float32
        ),
        action_space=gym.spaces.MultiDiscrete(np.full(shape, 6)),
        inference_only=False,
        model_config=cfg,
    )


def training_shape(module: Any, expected: Any = None, *, where: Any = "module") -> tuple[int, int, int]:
    """The network shape ``(D, H, W)`` a MECCA module was trained on (``model_config["shape"]``).

    ``expected`` (optional): the shape the caller needs; another one raises ``ValueError``
    naming both (and ``where``, e.g. the checkpoint path).
    """
    cfg = getattr(module, "model_config", None) or {}
    shape = cfg.get("shape")
    if shape is None or len(tuple(shape)) != 3:
        raise ValueError(
            f"module has no training shape (model_config['shape'] = {shape!r}); "
            "it is not a MECCA module trained by mecca-rllib"
        )
    trained = tuple(int(s) for s in shape)
    if expected is not None and tuple(int(s) for s in expected) != trained:
        wanted = tuple(int(s) for s in expected)
        raise ValueError(f"{where}: checkpoint was trained on shape {trained}, expected {wanted}")
    return trained


def training_hint_kernel(module: Any) -> int:
    """The env's ``hint_kernel`` a MECCA module was trained with (8, the paper's, if unrecorded)."""
    cfg = getattr(module, "model_config", None) or {}
    return int(cfg.get("hint_kernel") or ENV_DEFAULTS["hint_kernel"])


def training_hint_channels(module: Any) -> int:
    """Hint channels of the module's observations: 1 (the paper's) or 2 (foreground/background)."""
    return int(getattr(module, "hint_channels", None) or ENV_DEFAULTS["hint_channels"])


def _module_config(module: MECCATorchRLModule) -> dict[str, Any]:
    from mecca_rllib.policies.rl_module import DEFAULT_MODEL_CONFIG

    cfg = module.resolved_model_config()
    out = {k: cfg[k] for k in DEFAULT_MODEL_CONFIG}
    for key in ("dilations", "conf_dilations", "shape"):  # tuples -> JSON lists
        if out[key] is not None:
            out[key] = [int(v) for v in out[key]]
    return out


def _load_exported(path: Path) -> MECCATorchRLModule:
    try:
        meta = json.loads((path / EXPORT_META).read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise ValueError(f"{path / EXPORT_META}: not a readable MECCA module description ({err})") from None
    if meta.get("format") != EXPORT_FORMAT or "model_config" not in meta:
        raise ValueError(f"{path / EXPORT_META}: unsupported MECCA module format {meta.get('format')!r}")
    module = build_module(meta["model_config"])
    try:
        state = torch.load(path / EXPORT_WEIGHTS, map_location="cpu", weights_only=True)
        module.load_state_dict(state, strict=True)
    except (OSError, RuntimeError, KeyError) as err:
        raise ValueError(f"{path / EXPORT_WEIGHTS}: cannot load MECCA module weights ({err})") from None
    return module


def _load_rllib(path: Path) -> MECCATorchRLModule:
    from ray.rllib.core.rl_module.rl_module import RLModule

    from mecca_rllib.policies.rl_module import MECCATorchRLModule

    try:
        module = RLModule.from_checkpoint(path)
    except Exception as err:  # RLlib raises many types for a broken folder
        raise ValueError(f"{path}: cannot restore the RLModule ({type(err).__name__}: {err})") from None
    if not isinstance(module, MECCATorchRLModule):
        raise ValueError(
            f"{path}: holds a {type(module).__name__}, not a MECCA module (MECCATorchRLModule)"
        )
    if module.inference_only:
        raise ValueError(f"{path}: holds an inference-only module (no confidence net)")
    return module


def load_rl_module(path: str | os.PathLike) -> MECCATorchRLModule:
    """The full MECCA module (policy, value head, confidence net) in eval mode.

    ``path``: an exported module folder, an Algorithm checkpoint folder (``save_to_path``
    or a Tune checkpoint) or an RLlib RLModule folder. ValueError naming the path when it
    is none of these.
    """
    path = Path(path).expanduser().resolve()
    if not path.is_dir():
        raise ValueError(f"{path}: no such checkpoint folder")
    if (path / EXPORT_META).is_file():
        module = _load_exported(path)
    elif (path / _MODULE_SUBDIR).is_dir():
        module = _load_rllib(path / _MODULE_SUBDIR)
    elif all((path / f).is_file() for f in _RLLIB_MODULE_FILES):
        module = _load_rllib(path)
    else:
        raise ValueError(
            f"{path}: not a MECCA checkpoint (expected {EXPORT_META}, an Algorithm checkpoint "
            f"with {_MODULE_SUBDIR.as_posix()}/, or an RLModule folder)"
        )
    module.eval()
    return module


def save_module(module: MECCATorchRLModule, out_dir: str | os.PathLike) -> Path:
    """Write ``module`` in the export format (JSON + ``state_dict``), atomically."""
    out = Path(out_dir).expanduser().resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        meta = {"format": EXPORT_FORMAT, "model_config": _module_config(module)}
        (tmp / EXPORT_META).write_text(json.dumps(meta, indent=2) + "\n")
        state = {k: v.detach().cpu() for k, v in module.state_dict().items()}
        torch.save(state, tmp / EXPORT_WEIGHTS)
        if out.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old.", dir=out.parent))
            os.replace(out, old / out.name)
            os.replace(tmp, out)
            shutil.rmtree(old)
        else:
            os.replace(tmp, out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    return out


def export_rl_module(algorithm_checkpoint: str | os.PathLike, out_dir: str | os.PathLike) -> Path:
    """Export the MECCA module of ``algorithm_checkpoint`` to ``out_dir`` (returned) for inference."""
    return save_module(load_rl_module(algorithm_checkpoint), out_dir)
