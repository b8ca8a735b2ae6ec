"""``backend="auto"``: the fastest backend *for this machine*, measured once and cached.

Which backend is fastest depends on the CPU more than on anything in this package: on one
2-core machine bf16 autocast was no faster than fp32 and OpenVINO fp32 won (1.36x); on
another, torch bf16 ran a whole step 2.25x faster than fp32 and OpenVINO fp32 was no faster
than torch (README "Fast inference"). So ``auto`` times each available backend on the
model's own training shape (policy forward, argmax, confidence forward: what an
interaction step runs) and keeps the fastest. The choice is cached per machine, package
versions, thread count and network shape in ``$MECCA_CACHE_DIR/backend_choice.json``
(default ``~/.cache/mecca_rllib``), so only the first session on a machine pays the ~1-2 s.
"""
from __future__ import annotations

import json
import os
import platform
import time
from collections.abc import Callable, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mecca_rllib.data.atomic import atomic_file
from mecca_rllib.envs.rollout import action_values
from mecca_rllib.inference.net import network_config
from mecca_rllib.policies.checkpoints import training_shape

__all__ = ["CACHE_ENV", "cache_path", "choice_key", "fastest_backend", "time_backend"]

CACHE_ENV = "MECCA_CACHE_DIR"
CACHE_FILE = "backend_choice.json"


def cache_path() -> Path:
    """Where measured choices are kept: ``$MECCA_CACHE_DIR`` or ``~/.cache/mecca_rllib``."""
    root = os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "mecca_rllib"
    return Path(root) / CACHE_FILE


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "-"


def choice_key(module: Any, shape: Sequence[int]) -> str:
    """What a measured choice depends on: CPU, ISA level, threads, torch/OpenVINO versions,
    network (width, dilations, hint channels) and the volume shape ``(D, H, W)``."""
    cfg = network_config(module)
    net = [cfg.get("width"), list(cfg.get("dilations") or ()), list(cfg.get("conf_dilations") or ()),
           cfg["hint_channels"]]
    return json.dumps([_cpu_model(), torch.backends.cpu.get_cpu_capability(), os.cpu_count(),
                       torch.get_num_threads(), torch.__version__, _version("openvino"),
                       net, [int(s) for s in shape]])


def time_backend(backend: Any, obs: torch.Tensor, *, repeats: int = 3) -> float:
    """Median wall seconds of one step's network work on ``obs`` ``(1, C, D, H, W)``: argmax
    actions, then the confidence of their values (after one untimed warm-up, which is where
    OpenVINO compiles for the shape)."""
    def step() -> None:
        with torch.inference_mode():
            actions = backend.actions(obs)
            backend.confidence(obs, action_values(actions))

    step()
    times = []
    for _ in range(max(1, int(repeats))):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def _read_cache(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):  # missing or corrupt: measure again, rewrite it
        return {}


def fastest_backend(
    module: Any, candidates: Sequence[str], build: Callable[[str], Any], *, repeats: int = 3,
    cache: bool = True, timer: Callable[..., float] = time_backend,
) -> tuple[str, dict[str, float]]:
    """The fastest of ``candidates`` for ``module`` on its training shape, and the measured
    seconds per backend (empty when the choice came from the cache). ``build(name)`` makes
    the backend. With ``cache``, a choice measured before for the same :func:`choice_key`
    is reused, and a new one is written atomically."""
    if len(candidates) == 1:
        return candidates[0], {}
    shape = training_shape(module)
    key = choice_key(module, shape)
    path = cache_path()
    stored = _read_cache(path) if cache else {}
    if stored.get(key) in candidates:
        return stored[key], {}
    channels = 2 + network_config(module)["hint_channels"]
    generator = torch.Generator().manual_seed(0)
    obs = torch.rand((1, channels, *shape), generator=generator)
    seconds = {name: timer(build(name), obs, repeats=repeats) for name in candidates}
    best = min(seconds, key=seconds.get)
    if cache:
        try:
            with atomic_file(path) as tmp:
                tmp.write_text(json.dumps(stored | {key: best}, indent=1))
        except OSError:  # a read-only home: the choice still holds for this process
            pass
    return best, seconds
