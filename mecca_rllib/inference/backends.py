"""Inference backends: what runs the policy and the confidence net of one interaction step.

A :class:`Backend` takes an observation ``(1, 2 + C, D, H, W)`` float32 tensor (image, p,
hints) and returns the policy's logits ``(1, 6, D, H, W)`` (or its argmax actions) and the
confidence ``C(s, a)`` ``(1, D, H, W)`` of given action values (MECCA.md §2), all float32.
It is duck-typed like a MECCA module (``policy_logits``, ``confidence``, ``eval``), so the
rollout core (``envs.rollout.policy_step``, ``ModuleSegmenter``) runs it as well.

- ``torch``: the module itself, fp32 (channels-last 3D on CPU: 8-15x faster than contiguous);
- ``torch-bf16``: the same under bf16 autocast (fp32 weights), where the CPU has bf16
  (oneDNN, ``torch.ops.mkldnn._is_mkldnn_bf16_supported``) or on a bf16-capable GPU;
- ``openvino`` / ``openvino-bf16``: the nets converted with ``openvino.convert_model`` (or
  read from an OpenVINO export), compiled once per volume shape and cached; fp32, or the
  bf16 inference precision hint (the optional extra ``pip install mecca-rllib[openvino]``);
- ``auto``: on CPU the fastest available one, timed on the model's own shape the first time
  on a machine and cached (``inference.autoselect``: which one wins depends on the CPU); on
  a GPU ``torch-bf16`` where supported, else ``torch``.
"""
from __future__ import annotations

import importlib.util
import weakref
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import nn

from mecca_rllib.envs.rollout import choose_actions, module_device
from mecca_rllib.inference.net import InferenceNet

__all__ = ["BACKENDS", "CLI_BACKENDS", "Backend", "OpenVINOBackend", "TorchBackend", "available_backends",
           "bf16_supported", "make_backend", "openvino_installed", "resolve_backend"]

#: Names ``make_backend`` accepts; ``CLI_BACKENDS`` are the ``--backend`` choices.
BACKENDS = ("auto", "torch", "torch-bf16", "openvino", "openvino-bf16")
CLI_BACKENDS = BACKENDS
OPENVINO_EXTRA = "pip install mecca-rllib[openvino]"


_SHARED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # module -> {name: OpenVINOBackend}
_CONVERTED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # module -> (policy, confidence)


class Backend(Protocol):
    """Runs a MECCA module's policy and confidence net on one observation."""

    name: str

    def policy_logits(self, obs: torch.Tensor) -> torch.Tensor:
        """``(1, 2 + C, D, H, W)`` -> float32 logits ``(1, 6, D, H, W)``."""

    def actions(self, obs: torch.Tensor, *, explore: bool = False,
                generator: torch.Generator | None = None) -> torch.Tensor:
        """int64 action indices ``(1, D, H, W)``: the argmax (or a sample) of the logits."""

    def confidence(self, obs: torch.Tensor, action_values: torch.Tensor) -> torch.Tensor:
        """float32 C(s, a) in (0, 1) ``(1, D, H, W)`` of action values ``(1, D, H, W)``."""

    def eval(self) -> Backend: ...


def openvino_installed() -> bool:
    return importlib.util.find_spec("openvino") is not None


def bf16_supported(device: str | torch.device = "cpu") -> bool:
    """Whether bf16 autocast runs native bf16 kernels on ``device`` (CPU: oneDNN with
    AVX512-BF16/AMX-class support, as ``torch.ops.mkldnn`` reports it)."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    if device.type != "cpu" or not torch.backends.mkldnn.is_available():
        return False
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def available_backends(device: str | torch.device = "cpu") -> tuple[str, ...]:
    """The concrete backends that run on this machine (``auto`` left out)."""
    names = ["torch"]
    if bf16_supported(device):
        names.append("torch-bf16")
    if torch.device(device).type == "cpu" and openvino_installed():
        names += ["openvino", "openvino-bf16"] if bf16_supported("cpu") else ["openvino"]
    return tuple(names)


def resolve_backend(name: str, device: str | torch.device = "cpu") -> str:
    """The concrete backend ``name`` stands for; ``ValueError`` (naming what to install or
    use instead) when it is unknown, not installed or not supported here."""
    name = str(name).lower()
    device = torch.device(device)
    if name not in BACKENDS:
        raise ValueError(f"unknown inference backend {name!r}; choose one of {', '.join(BACKENDS)} "
                         f"(openvino needs the extra: {OPENVINO_EXTRA})")
    if name == "auto":  # without a model to time (make_backend times them on CPU): a guess
        if device.type == "cpu":
            return "openvino" if openvino_installed() else "torch"
        return "torch-bf16" if bf16_supported(device) else "torch"
    if name.startswith("openvino"):
        if not openvino_installed():
            raise ValueError(f"backend {name!r} needs OpenVINO, which is not installed: {OPENVINO_EXTRA}")
        if device.type != "cpu":
            raise ValueError(f"backend {name!r} runs on the CPU only, not on {device}; use torch there")
    if name.endswith("bf16") and not bf16_supported("cpu" if name.startswith("openvino") else device):
        raise ValueError(f"backend {name!r}: this {device.type.upper()} has no native bf16 support "
                         f"(torch.backends.mkldnn / CPU capability {torch.backends.cpu.get_cpu_capability()}); "
                         f"use --backend torch or openvino ({OPENVINO_EXTRA})")
    return name


class TorchBackend:
    """The module itself: fp32, or under bf16 autocast (fp32 weights, fp32 outputs)."""

    def __init__(self, module: Any, *, bf16: bool = False) -> None:
        self.module = module
        self.bf16 = bool(bf16)
        self.name = "torch-bf16" if bf16 else "torch"
        self._device_type = module_device(module).type

    def _autocast(self) -> Any:
        return torch.autocast(self._device_type, dtype=torch.bfloat16, enabled=self.bf16)

    def policy_logits(self, obs: torch.Tensor) -> torch.Tensor:
        if not self.bf16:
            return self.module.policy_logits(obs)
        with self._autocast():
            return self.module.policy_logits(obs).float()

    def actions(self, obs: torch.Tensor, *, explore: bool = False,
                generator: torch.Generator | None = None) -> torch.Tensor:
        return choose_actions(self.policy_logits(obs), explore=explore, generator=generator)

    def confidence(self, obs: torch.Tensor, action_values: torch.Tensor) -> torch.Tensor:
        if not self.bf16:
            return self.module.confidence(obs, action_values)
        with self._autocast():
            return self.module.confidence(obs, action_values).float()

    def eval(self) -> TorchBackend:
        self.module.eval()
        return self

    def parameters(self) -> Any:
        return self.module.parameters()


class _PolicyGraph(nn.Module):
    def __init__(self, net: InferenceNet) -> None:
        super().__init__()
        self.net = net

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.net.policy_logits(obs)


class _ConfidenceGraph(nn.Module):
    def __init__(self, net: InferenceNet) -> None:
        super().__init__()
        self.net = net

    def forward(self, obs: torch.Tensor, action_values: torch.Tensor) -> torch.Tensor:
        return self.net.confidence(obs, action_values)


def openvino_models(net: InferenceNet) -> tuple[Any, Any]:
    """``(policy, confidence)`` ``openvino.Model`` of ``net`` with dynamic ``(D, H, W)``."""
    import openvino as ov

    c = 2 + int(net.hint_channels)
    shape = tuple(int(s) for s in net.model_config.get("shape") or (8, 16, 16))
    obs = torch.zeros((1, c, *shape))
    av = torch.zeros((1, *shape))
    dyn_obs, dyn_av = ov.PartialShape([1, c, -1, -1, -1]), ov.PartialShape([1, -1, -1, -1])
    with torch.no_grad():  # trace once ourselves: convert_model's own trace also re-checks it
        policy = torch.jit.trace(_PolicyGraph(net).eval(), (obs,), check_trace=False)
        confidence = torch.jit.trace(_ConfidenceGraph(net).eval(), (obs, av), check_trace=False)
        return (ov.convert_model(policy, example_input=(obs,), input=[dyn_obs]),
                ov.convert_model(confidence, example_input=(obs, av), input=[dyn_obs, dyn_av]))


class OpenVINOBackend:
    """Both nets as OpenVINO models on the CPU, compiled once per volume shape (cached).

    The models come from an OpenVINO export (``module.openvino_ir``: the ``.xml`` paths) or
    are converted from the torch module at first use. ``precision``: ``"f32"`` or ``"bf16"``
    (the CPU plugin's inference precision hint). Threads: ``torch.get_num_threads()`` when
    the model for a shape is compiled.
    """

    def __init__(self, module: Any, *, precision: str = "f32") -> None:
        import openvino as ov

        if precision not in ("f32", "bf16"):
            raise ValueError(f"OpenVINO precision must be 'f32' or 'bf16', got {precision!r}")
        self.module = module
        self.precision = precision
        self.name = "openvino-bf16" if precision == "bf16" else "openvino"
        self._core = ov.Core()
        self._models: tuple[Any, Any] | None = None
        self._compiled: dict[tuple[str, tuple[int, ...]], Any] = {}

    def _model(self, which: int) -> Any:
        if self._models is None:
            ir = getattr(self.module, "openvino_ir", None)
            if ir:
                self._models = (self._core.read_model(str(ir["policy"])), self._core.read_model(str(ir["confidence"])))
            else:
                if self.module not in _CONVERTED:  # one conversion per module, any precision
                    net = self.module if isinstance(self.module, InferenceNet) else InferenceNet.from_module(self.module)
                    _CONVERTED[self.module] = openvino_models(net)
                self._models = _CONVERTED[self.module]
        return self._models[which]

    def compiled(self, kind: str, shape: tuple[int, ...]) -> Any:
        """The compiled ``kind`` (``"policy"`` or ``"confidence"``) model for observations of ``shape``."""
        key = (kind, tuple(int(s) for s in shape))
        if key not in self._compiled:
            model = self._model(0 if kind == "policy" else 1).clone()
            inputs = [list(shape)] + ([[shape[0], *shape[2:]]] if kind == "confidence" else [])
            model.reshape({i: s for i, s in enumerate(inputs)})
            config = {"INFERENCE_PRECISION_HINT": self.precision, "PERFORMANCE_HINT": "LATENCY",
                      "INFERENCE_NUM_THREADS": int(torch.get_num_threads())}
            self._compiled[key] = self._core.compile_model(model, "CPU", config)
        return self._compiled[key]

    @staticmethod
    def _run(compiled: Any, *inputs: torch.Tensor) -> torch.Tensor:
        arrays = [t.detach().float().contiguous().cpu().numpy() for t in inputs]
        return torch.from_numpy(compiled(arrays)[0].copy())

    def policy_logits(self, obs: torch.Tensor) -> torch.Tensor:
        return self._run(self.compiled("policy", tuple(obs.shape)), obs)

    def actions(self, obs: torch.Tensor, *, explore: bool = False,
                generator: torch.Generator | None = None) -> torch.Tensor:
        return choose_actions(self.policy_logits(obs), explore=explore, generator=generator)

    def confidence(self, obs: torch.Tensor, action_values: torch.Tensor) -> torch.Tensor:
        return self._run(self.compiled("confidence", tuple(obs.shape)), obs, action_values)

    def eval(self) -> OpenVINOBackend:
        return self





def make_backend(name: str, module: Any, *, device: str | torch.device | None = None) -> Backend:
    """The backend ``name`` (:data:`BACKENDS`) for ``module`` (a MECCA module or
    :class:`InferenceNet`, already on ``device`` and in eval mode). OpenVINO backends are
    shared per module, so every session of one model reuses the compiled models."""
    device = torch.device(module_device(module) if device is None else device)
    concrete = resolve_backend(name, device)
    if str(name).lower() == "auto" and device.type == "cpu":  # measured on this machine, cached
        from mecca_rllib.inference.autoselect import fastest_backend

        concrete = fastest_backend(module, available_backends(device),
                                   lambda b: make_backend(b, module, device=device))[0]
    if concrete.startswith("torch"):
        return TorchBackend(module, bf16=concrete == "torch-bf16")
    shared = _SHARED.setdefault(module, {})
    if concrete not in shared:
        shared[concrete] = OpenVINOBackend(module, precision="bf16" if concrete.endswith("bf16") else "f32")
    return shared[concrete]


def export_openvino(net: InferenceNet, folder: Path) -> dict[str, str]:
    """Write ``policy.xml/.bin`` and ``confidence.xml/.bin`` (fp32, dynamic shapes) of ``net``
    into ``folder``; returns ``{"policy": "policy.xml", "confidence": "confidence.xml"}``."""
    import openvino as ov

    names = {"policy": "policy.xml", "confidence": "confidence.xml"}
    for model, (kind, file) in zip(openvino_models(net), names.items()):
        ov.save_model(model, str(folder / file), compress_to_fp16=False)
    return names
