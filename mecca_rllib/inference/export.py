"""Deployable exports: a self-describing folder an interactive session loads without Ray.

``save_export(module, out, format=...)`` writes, atomically (``data.atomic``):

- ``manifest.json``: ``format`` (``"mecca-rllib-export"``), ``format_version``
  (:data:`EXPORT_VERSION`), ``backend_format`` (``torch`` or ``openvino``), the
  ``model_config``, ``training_shape``, ``hint_kernel``, ``hint_channels``, and the size and
  SHA-256 of every other file (a truncated or altered file is refused, naming it);
- ``weights.pt``: a plain ``state_dict`` (``torch.load(weights_only=True)``: no pickle code);
  for a full RLModule also ``mecca_module.json``, so the folder stays an RLModule export
  (``policies.checkpoints.load_rl_module``: training tools can resume from it);
- ``openvino`` format: also ``policy.xml/.bin`` and ``confidence.xml/.bin`` (OpenVINO IR,
  fp32, dynamic ``(D, H, W)``), read by the ``openvino`` backends instead of converting.

:func:`load_export` builds an :class:`~mecca_rllib.inference.net.InferenceNet` (pure torch);
:func:`load_inference_module` takes an export or any checkpoint ``load_rl_module`` reads.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import torch

from mecca_rllib._version import __version__
from mecca_rllib.data.atomic import atomic_folder
from mecca_rllib.data.errors import DataError
from mecca_rllib.inference.net import INFERENCE_PARTS, InferenceNet
from mecca_rllib.policies.checkpoints import (EXPORT_FORMAT, EXPORT_META, training_hint_channels,
                                              training_hint_kernel, training_shape)

__all__ = ["EXPORT_FORMATS", "EXPORT_KIND", "EXPORT_VERSION", "MANIFEST", "WEIGHTS", "is_export",
           "load_export", "load_inference_module", "read_manifest", "save_export"]

MANIFEST = "manifest.json"
WEIGHTS = "weights.pt"
EXPORT_KIND = "mecca-rllib-export"
EXPORT_VERSION = 1
EXPORT_FORMATS = ("torch", "openvino")


def _jsonable(value: Any) -> Any:
    if isinstance(value, (tuple, list)):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    return value if value is None or isinstance(value, (bool, int, float, str)) else str(value)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def is_export(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a folder written by :func:`save_export` (it has a manifest)."""
    return (Path(path) / MANIFEST).is_file()


def save_export(module: Any, out: str | os.PathLike, *, format: str = "torch",
                overwrite: bool = False) -> Path:
    """Export ``module`` (a ``MECCATorchRLModule`` or an :class:`InferenceNet`) to ``out``.

    ``format``: ``"torch"`` or ``"openvino"`` (needs the ``openvino`` extra). Returns ``out``.
    """
    if format not in EXPORT_FORMATS:
        raise ValueError(f"unknown export format {format!r}; choose one of {', '.join(EXPORT_FORMATS)}")
    if format == "openvino":
        from mecca_rllib.inference.backends import resolve_backend

        resolve_backend("openvino")  # a clear error naming the extra when it is missing
    net = module if isinstance(module, InferenceNet) else InferenceNet.from_module(module)
    shape, kernel, channels = training_shape(module), training_hint_kernel(module), training_hint_channels(module)
    config = _jsonable({**net.model_config, "shape": shape, "hint_kernel": kernel, "hint_channels": channels})
    full = not isinstance(module, InferenceNet) and hasattr(module, "value_head")

    def fill(tmp: Path) -> None:
        state = module.state_dict() if full else net.state_dict()
        torch.save({k: v.detach().cpu().contiguous() for k, v in state.items()}, tmp / WEIGHTS)
        if full:  # also an RLModule export (policies.checkpoints format 1)
            meta = {"format": EXPORT_FORMAT, "model_config": config}
            (tmp / EXPORT_META).write_text(json.dumps(meta, indent=2) + "\n")
        extra: dict[str, Any] = {}
        if format == "openvino":
            import openvino

            from mecca_rllib.inference.backends import export_openvino

            extra["openvino"] = {**export_openvino(net, tmp), "version": openvino.__version__}
        files = {p.name: {"bytes": p.stat().st_size, "sha256": _sha256(p)}
                 for p in sorted(tmp.iterdir()) if p.is_file()}
        manifest = {"format": EXPORT_KIND, "format_version": EXPORT_VERSION, "backend_format": format,
                    "mecca_rllib_version": __version__, "model_config": config,
                    "training_shape": list(shape), "hint_kernel": kernel, "hint_channels": channels,
                    "weights": WEIGHTS, "files": files, **extra}
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")

    return atomic_folder(out, fill, replace_if=lambda p: overwrite)


def read_manifest(folder: str | os.PathLike, *, verify: bool = True) -> dict[str, Any]:
    """The manifest of an export folder, checked: kind, version, fields and (``verify``) every
    listed file's size and SHA-256. ``DataError`` naming the file that is wrong."""
    folder = Path(folder)
    path = folder / MANIFEST
    try:
        manifest = json.loads(path.read_text())
    except FileNotFoundError:
        raise DataError(path, "no export manifest here (write one with `mecca export`)") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise DataError(path, f"corrupt export manifest, not readable JSON ({err})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != EXPORT_KIND:
        got = manifest.get("format") if isinstance(manifest, dict) else type(manifest).__name__
        raise DataError(path, f"not a mecca-rllib export (format {got!r}, expected {EXPORT_KIND!r})")
    if manifest.get("format_version") != EXPORT_VERSION:
        raise DataError(path, f"export format version {manifest.get('format_version')!r} is not supported "
                        f"(this mecca-rllib {__version__} reads version {EXPORT_VERSION}); export the "
                        "checkpoint again with this version's `mecca export`")
    missing = [k for k in ("backend_format", "model_config", "training_shape", "hint_kernel",
                           "hint_channels", "files") if k not in manifest]
    if missing or manifest["backend_format"] not in EXPORT_FORMATS or WEIGHTS not in manifest["files"]:
        raise DataError(path, f"corrupt export manifest (missing or bad: {missing or 'backend_format/files'})")
    if verify:
        for name, entry in manifest["files"].items():
            file = folder / name
            if Path(name).name != name or not file.is_file():
                raise DataError(file, "missing from the export (listed in manifest.json)")
            if file.stat().st_size != entry.get("bytes") or _sha256(file) != entry.get("sha256"):
                raise DataError(file, "corrupt export file: its size or SHA-256 differs from manifest.json")
    return manifest


def load_export(folder: str | os.PathLike) -> InferenceNet:
    """The :class:`InferenceNet` of an export folder, in eval mode, on the CPU (no Ray).

    An OpenVINO export also sets ``net.openvino_ir`` (the IR paths the ``openvino`` backends
    read). ``DataError`` naming the file for another format version or a corrupt export.
    """
    folder = Path(folder).expanduser().resolve()
    manifest = read_manifest(folder)
    config = {**manifest["model_config"], "shape": manifest["training_shape"],
              "hint_kernel": manifest["hint_kernel"], "hint_channels": manifest["hint_channels"]}
    try:
        net = InferenceNet(config)
    except ValueError as err:
        raise DataError(folder / MANIFEST, f"bad model_config ({err})") from None
    weights = folder / WEIGHTS
    try:
        state = torch.load(weights, map_location="cpu", weights_only=True)
        state = {k: v for k, v in state.items() if k.split(".", 1)[0] in INFERENCE_PARTS}
        net.load_state_dict(state, strict=True)
    except Exception as err:  # torch raises many types for a broken file
        raise DataError(weights, f"cannot load the exported weights ({type(err).__name__}: {err})") from None
    net.export_dir = folder
    if "openvino" in manifest:
        net.openvino_ir = {k: folder / manifest["openvino"][k] for k in ("policy", "confidence")}
    return net.eval()


def load_inference_module(path: str | os.PathLike) -> Any:
    """An export folder -> :func:`load_export` (no Ray); anything else -> the full module of
    ``policies.checkpoints.load_rl_module`` (an Algorithm, RLModule or old module export)."""
    if is_export(Path(path).expanduser()):
        return load_export(path)
    from mecca_rllib.policies.checkpoints import load_rl_module

    return load_rl_module(path)
