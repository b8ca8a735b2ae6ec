"""Inference backends (``mecca_rllib.inference``, issue 16): parity with fp32 torch, errors.

A width-8 module at 8x16x16, trained a few steps toward the oracle actions so its logits
are decisive (not near-ties, as at random initialisation), runs on a fixed phantom volume.
Each installed backend must agree with fp32 torch on >= 99.5 % of the argmax actions, give
confidences within 0.02, and over a small evaluation run mean Dice within 0.3 points.
"""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from mecca_rllib.baselines import ClickSchedule, ModuleSegmenter
from mecca_rllib.bench.protocol import Protocol, evaluate_method
from mecca_rllib.data import make_phantom, open_source
from mecca_rllib.envs.hints import ClickHints
from mecca_rllib.envs.rollout import action_values, choose_actions, probability, step_tenths
from mecca_rllib.inference import (BACKENDS, InferenceNet, available_backends, make_backend,
                                   resolve_backend)
from mecca_rllib.inference import backends as backends_mod
from mecca_rllib.policies.checkpoints import build_module
from mecca_rllib.session import InteractiveSession

SHAPE = (8, 16, 16)
NET = {"shape": SHAPE, "width": 8, "dilations": (1, 2, 4, 2, 1), "conf_dilations": (1, 2, 4, 2, 1, 1)}
OTHERS = ("torch-bf16", "openvino", "openvino-bf16")


def skip_unless_available(name: str) -> None:
    if name not in available_backends():
        why = ("OpenVINO is not installed (pip install mecca-rllib[openvino])" if name.startswith("openvino")
               else "this CPU has no native bf16 (torch.ops.mkldnn)")
        if name == "openvino-bf16" and backends_mod.openvino_installed():
            why = "this CPU has no native bf16 for OpenVINO's bf16 hint"
        pytest.skip(f"backend {name!r} not available here: {why}")


def fixed_obs(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A phantom's observation ``(3, S)`` (image, p = 0.5, hints of 12 clicks) and its label."""
    rng = np.random.default_rng(seed)
    image, label = make_phantom(SHAPE, rng)
    hints = ClickHints(SHAPE, 3, 1)
    inside = np.argwhere(label > 0)
    hints.add(inside[rng.choice(len(inside), 12)].astype(np.int32))
    obs = np.concatenate([image[None], np.full((1, *SHAPE), 0.5, np.float32), hints.values]).astype(np.float32)
    return obs, label


@pytest.fixture(scope="module")
def trained() -> torch.nn.Module:
    """A seeded module trained 30 steps toward the oracle actions (+0.4 on the object, -0.4
    elsewhere) and its confidence toward 1, so logits are decisive."""
    torch.manual_seed(0)
    module = build_module(NET)
    opt = torch.optim.Adam(module.parameters(), lr=3e-3)
    for step in range(30):
        obs, label = fixed_obs(step % 4)
        x = torch.from_numpy(obs)[None]
        target = torch.from_numpy(np.where(label > 0, 5, 0)).long()[None]
        loss = torch.nn.functional.cross_entropy(module.policy_logits(x), target)
        conf = module.confidence_logits(x, action_values(target))
        loss = loss + torch.nn.functional.binary_cross_entropy_with_logits(conf, torch.ones_like(conf))
        opt.zero_grad()
        loss.backward()
        opt.step()
    return module.eval()


def run_steps(backend, obs: np.ndarray, steps: int = 3):
    """Actions ``(S)`` and confidence ``(S)`` of each of ``steps`` argmax steps of ``backend``,
    every step from the same states (those of fp32 torch are passed in via ``obs``)."""
    x = torch.from_numpy(obs)[None]
    with torch.inference_mode():
        actions = choose_actions(backend.policy_logits(x))
        confidence = backend.confidence(x, action_values(actions))
    return actions[0], confidence[0]


def states(reference, steps: int = 3) -> list[np.ndarray]:
    """The observations fp32 torch visits in ``steps`` steps from the fixed one."""
    obs, _ = fixed_obs(7)
    out = [obs]
    for _ in range(steps - 1):
        actions, _ = run_steps(reference, out[-1])
        tenths = step_tenths(torch.round(torch.from_numpy(out[-1][1]) * 10).to(torch.int8), actions)
        nxt = out[-1].copy()
        nxt[1] = probability(tenths).numpy()
        out.append(nxt)
    return out


@pytest.mark.parametrize("name", OTHERS)
def test_backend_agrees_with_fp32_torch(trained, name):
    skip_unless_available(name)
    reference = make_backend("torch", trained)
    backend = make_backend(name, trained)
    assert backend.name == name
    for obs in states(reference):
        ref_actions, ref_conf = run_steps(reference, obs)
        x = torch.from_numpy(obs)[None]
        with torch.inference_mode():
            logits = backend.policy_logits(x)
            actions = choose_actions(logits)[0]
            conf = backend.confidence(x, action_values(ref_actions[None]))[0]  # same actions
        assert logits.dtype == torch.float32 and logits.shape == (1, 6, *SHAPE)
        assert conf.dtype == torch.float32 and conf.shape == SHAPE
        agreement = (actions == ref_actions).float().mean().item()
        assert agreement >= 0.995, f"{name}: argmax agrees on {agreement:.2%} of voxels"
        assert (conf - ref_conf).abs().max().item() <= 0.02


def test_the_trained_module_is_not_all_ties(trained):
    x = torch.from_numpy(fixed_obs(7)[0])[None]
    with torch.inference_mode():
        top2 = trained.policy_logits(x).topk(2, dim=1).values
    assert (top2[:, 0] - top2[:, 1]).median() > 0.05  # a real margin for the parity checks


@pytest.mark.parametrize("name", OTHERS)
def test_evaluate_dice_within_0_3_points_of_fp32(trained, name):
    skip_unless_available(name)
    source = open_source("synthetic", SHAPE, split="test", num_cases=3, seed=0)
    protocol = Protocol(ClickSchedule(steps=3, initial_clicks=8, clicks_per_step=3, hint_kernel=3),
                        repeats=2, seed=1)
    dice = {b: evaluate_method(ModuleSegmenter(make_backend(b, trained)), source, protocol).dice
            for b in ("torch", name)}
    gap = 100 * np.abs(dice[name].mean(axis=(0, 1)) - dice["torch"].mean(axis=(0, 1)))
    assert gap.max() <= 0.3, f"{name}: mean Dice per step differs by {gap.round(3)} points"


@pytest.mark.parametrize("name", ("auto", *OTHERS))
def test_session_runs_on_each_backend(trained, name):
    if name != "auto":
        skip_unless_available(name)
    scan = np.random.default_rng(0).normal(size=(12, 20, 18)).astype(np.float32)
    results = {}
    for b in ("torch", name):
        session = InteractiveSession(trained, backend=b)
        session.start(scan, roi=[[1, 11], [2, 18], [1, 17]])
        session.click([[5, 9, 8], [6, 10, 9]])
        results[b] = session.step()
        if b != "auto":
            assert session.backend.name == resolve_backend(b)
        assert session.backend.name in available_backends()
    agree = np.mean(results[name].segmentation == results["torch"].segmentation)
    assert agree >= 0.99
    assert np.abs(results[name].roi_confidence - results["torch"].roi_confidence).max() <= 0.02


def test_default_backend_is_the_module_itself(trained):
    session = InteractiveSession(trained)
    assert session.backend.name == "torch" and session.backend.module is session.module


def test_auto_picks_an_available_backend():
    assert resolve_backend("auto") in available_backends()
    if backends_mod.openvino_installed():
        assert resolve_backend("auto") == "openvino"  # the guess without a model to time


def test_auto_times_the_backends_on_the_model_and_caches_the_choice(trained, tmp_path, monkeypatch):
    from mecca_rllib.inference import autoselect

    monkeypatch.setenv(autoselect.CACHE_ENV, str(tmp_path))
    fake = {"torch": 0.09, "torch-bf16": 0.04, "openvino": 0.09, "openvino-bf16": 0.05}
    timed: list[str] = []

    def timer(backend, obs, repeats):
        assert tuple(obs.shape) == (1, 3, *SHAPE)  # the model's own training shape
        timed.append(backend.name)
        return fake[backend.name]

    build = lambda name: make_backend(name, trained)  # noqa: E731
    names = ("torch", "torch-bf16", "openvino", "openvino-bf16")
    best, seconds = autoselect.fastest_backend(trained, names, build, timer=timer)
    assert best == "torch-bf16" and set(seconds) == set(names) and timed == list(names)
    again, seconds = autoselect.fastest_backend(trained, names, build, timer=timer)
    assert again == "torch-bf16" and seconds == {} and len(timed) == 4  # from the cache
    assert "torch-bf16" in (tmp_path / "backend_choice.json").read_text()
    # a cached choice that is not available here is measured again among what is
    assert autoselect.fastest_backend(trained, ("torch", "openvino"), build, timer=timer)[0] == "torch"
    (tmp_path / "backend_choice.json").write_text("{not json")  # corrupt: measured again
    assert autoselect.fastest_backend(trained, names, build, timer=timer)[0] == "torch-bf16"
    assert len(timed) == 10


def test_auto_session_gets_a_measured_available_backend(trained, tmp_path, monkeypatch):
    from mecca_rllib.inference import autoselect

    monkeypatch.setenv(autoselect.CACHE_ENV, str(tmp_path))
    session = InteractiveSession(trained, backend="auto")
    assert session.backend.name in available_backends()
    if len(available_backends()) > 1:
        cached = list(json.loads((tmp_path / "backend_choice.json").read_text()).values())
        assert cached == [session.backend.name]


def test_unknown_or_missing_backend_names_the_extra(trained, monkeypatch):
    with pytest.raises(ValueError, match="unknown inference backend 'tensorrt'.*pip install mecca-rllib\\[openvino\\]"):
        make_backend("tensorrt", trained)
    monkeypatch.setattr(backends_mod, "openvino_installed", lambda: False)
    with pytest.raises(ValueError, match=r"needs OpenVINO, which is not installed: pip install mecca-rllib\[openvino\]"):
        InteractiveSession(trained, backend="openvino")
    assert resolve_backend("auto") == "torch"  # the guess without OpenVINO
    monkeypatch.setattr(backends_mod, "bf16_supported", lambda device="cpu": False)
    with pytest.raises(ValueError, match="no native bf16 support"):
        make_backend("torch-bf16", trained)
    assert resolve_backend("auto") == "torch"
    assert set(BACKENDS) >= {"auto", "torch", "torch-bf16", "openvino"}


def test_evaluate_cli_takes_a_backend(tiny_checkpoint, capsys):
    from mecca_rllib.cli import main

    fast = ["--num-cases", "2", "--repeats", "1", "--steps", "2", "--initial-clicks", "6",
            "--clicks-per-step", "2", "--no-progress"]
    assert main(["evaluate", "--checkpoint", str(tiny_checkpoint), "--data", "synthetic", *fast,
                 "--backend", "auto"]) == 0
    assert "NoC@85" in capsys.readouterr().out
    with pytest.raises(SystemExit):  # argparse: not one of the choices
        main(["evaluate", "--checkpoint", str(tiny_checkpoint), "--data", "synthetic", "--backend", "nope"])


def test_inference_net_has_the_module_weights(trained):
    net = InferenceNet.from_module(trained)
    x = torch.from_numpy(fixed_obs(3)[0])[None]
    with torch.inference_mode():
        assert torch.equal(net.policy_logits(x), trained.policy_logits(x))
        a = action_values(choose_actions(net.policy_logits(x)))
        assert torch.equal(net.confidence(x, a), trained.confidence(x, a))
    assert net.hint_channels == trained.hint_channels and tuple(net.model_config["shape"]) == SHAPE
