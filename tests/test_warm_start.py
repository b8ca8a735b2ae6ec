"""Warm start: a supervised P-Net's weights become MECCA's policy (policies/warm_start.py),
and the confidence gate of the self-adaptive reward (reward_shaping.confidence_skill)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from mecca_rllib.baselines import PNet
from mecca_rllib.data import DataError
from mecca_rllib.envs import ACTION_VALUES
from mecca_rllib.policies.reward_shaping import (
    ShapingInputs,
    confidence_auc_skill,
    confidence_brier_skill,
    confidence_skill,
    confidence_weight,
    get_weighting,
)
from mecca_rllib.policies.warm_start import load_warm_start, save_warm_start, warm_start_state

from conftest import TINY_NET

PLUS, MINUS = int(np.argmax(ACTION_VALUES)), int(np.argmin(ACTION_VALUES))


def _pnet(channels: tuple[int, ...]) -> PNet:
    torch.manual_seed(1)
    net = PNet(len(channels), TINY_NET["width"], TINY_NET["dilations"])
    with torch.no_grad():
        net.out.bias.fill_(0.05)  # something the mapping must carry over
    return net


def _warm(make_tiny_module, tmp_path, channels=(0, 1, 2), scale=1.0):
    net = _pnet(channels)
    path = save_warm_start(tmp_path / "pnet.pt", net.state_dict(), channels=channels,
                           width=TINY_NET["width"], dilations=TINY_NET["dilations"])
    module = make_tiny_module()
    state = warm_start_state(module.state_dict(), load_warm_start(path), width=TINY_NET["width"],
                             dilations=TINY_NET["dilations"], action_scale=scale, source=path)
    module.load_state_dict({k: torch.as_tensor(v) for k, v in state.items()})
    return net, module.eval()


@pytest.mark.parametrize("channels", [(0, 1, 2), (0, 2)])
def test_warm_policy_moves_p_the_way_the_pnet_segments(make_tiny_module, tmp_path, channels):
    net, module = _warm(make_tiny_module, tmp_path, channels)
    obs = torch.randn(2, 3, 8, 16, 16, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        z = net(obs[:, list(channels)])
        actions = module.policy_logits(obs).argmax(1)
    expected = torch.where(z > 0, PLUS, MINUS)
    assert torch.equal(actions, expected)  # +0.4 where the P-Net says foreground, else -0.4
    if channels == (0, 2):  # the P-Net never read p: the warm policy ignores it too
        moved = obs.clone()
        moved[:, 1] = torch.rand_like(moved[:, 1])
        with torch.no_grad():
            assert torch.equal(module.policy_logits(moved).argmax(1), actions)


def test_a_smaller_action_scale_starts_the_same_policy_less_sure(make_tiny_module, tmp_path):
    obs = torch.randn(2, 3, 8, 16, 16, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        sure = _warm(make_tiny_module, tmp_path)[1].policy_logits(obs)
        soft = _warm(make_tiny_module, tmp_path, scale=0.5)[1].policy_logits(obs)
    torch.testing.assert_close(soft, 0.5 * sure)  # the same argmax, half the logit gaps
    entropy = [torch.distributions.Categorical(logits=x.movedim(1, -1)).entropy().mean() for x in (sure, soft)]
    assert entropy[1] > entropy[0]
    from mecca_rllib import MECCAConfig

    with pytest.raises(ValueError, match="init_from_scale must be > 0"):
        MECCAConfig().training(init_from_scale=0.0).validate()


def test_warm_start_keeps_the_confidence_net(make_tiny_module, tmp_path):
    _, module = _warm(make_tiny_module, tmp_path)
    fresh = make_tiny_module().state_dict()
    for key, value in module.state_dict().items():
        if key.startswith("confidence_net."):
            assert torch.equal(value, fresh[key]), key
        if key.startswith("value_head.blocks."):
            assert torch.equal(value, module.state_dict()["policy_head" + key[len("value_head"):]])


def test_bad_warm_start_files_are_refused_by_name(make_tiny_module, tmp_path):
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(b"not a torch file")
    with pytest.raises(DataError, match="corrupt.pt: not a readable warm-start file"):
        load_warm_start(corrupt)
    other = tmp_path / "other.pt"
    torch.save({"format": "something-else"}, other)
    with pytest.raises(DataError, match="other.pt: not a MECCA warm-start file"):
        load_warm_start(other)
    with pytest.raises(DataError, match="missing.pt: warm-start file not found"):
        load_warm_start(tmp_path / "missing.pt")
    path = save_warm_start(tmp_path / "wide.pt", PNet(3, 8, TINY_NET["dilations"]).state_dict(),
                           channels=(0, 1, 2), width=8, dilations=TINY_NET["dilations"])
    with pytest.raises(DataError, match="wide.pt: P-Net width 8.*policy's width 4"):
        warm_start_state(make_tiny_module().state_dict(), load_warm_start(path), width=4,
                         dilations=TINY_NET["dilations"], source=path)


def test_confidence_skill_is_zero_for_guessing_and_one_for_knowing():
    gen = torch.Generator().manual_seed(0)
    gain = torch.where(torch.rand(3, 500, generator=gen) < 0.8, 1.0, -1.0)
    always_sure = torch.full_like(gain, 0.9)  # calls every action good: the majority rate
    assert torch.allclose(confidence_skill(always_sure, gain), torch.zeros(3, 1))
    knows = torch.where(gain > 0, 0.9, 0.1)
    assert torch.allclose(confidence_skill(knows, gain), torch.ones(3, 1))
    coin = torch.rand(3, 500, generator=gen)
    assert float(confidence_skill(coin, gain).max()) < 0.1


def test_brier_skill_credits_a_confidence_that_approves_every_action_but_ranks_them():
    """The accuracy skill is 0 for a confidence that calls every action good (C > 0.5
    everywhere) even when it is lower exactly where actions fail; the Brier skill is not."""
    gen = torch.Generator().manual_seed(0)
    gain = torch.where(torch.rand(3, 2000, generator=gen) < 0.9, 1.0, -1.0)  # 90 % helped
    ranks = torch.where(gain > 0, 0.97, 0.6)  # approves all, less sure of the failures
    assert torch.allclose(confidence_skill(ranks, gain), torch.zeros(3, 1))
    assert float(confidence_brier_skill(ranks, gain).min()) > 0.3
    rate = (gain > 0).float().mean(1, keepdim=True)
    constant = rate.expand_as(gain)  # the base rate everywhere: no skill, by definition
    assert torch.allclose(confidence_brier_skill(constant, gain), torch.zeros(3, 1), atol=1e-5)
    assert torch.allclose(confidence_brier_skill(torch.where(gain > 0, 1.0, 0.0), gain), torch.ones(3, 1))
    unmoved = torch.zeros_like(gain)  # no voxel moved: no evidence, no skill
    assert torch.allclose(confidence_brier_skill(ranks, unmoved), torch.zeros(3, 1))


def test_auc_skill_is_how_well_confidence_ranks_the_moves_that_help_above_those_that_fail():
    gen = torch.Generator().manual_seed(0)
    gain = torch.where(torch.rand(3, 2000, generator=gen) < 0.9, 1.0, -1.0)  # 90 % helped
    gain[:, ::10] = 0.0  # unmoved voxels are no evidence either way
    approving = torch.where(gain > 0, 0.97, 0.6)  # C > 0.5 everywhere, lower on the failures
    assert torch.allclose(confidence_skill(approving, gain), torch.zeros(3, 1))
    assert torch.allclose(confidence_auc_skill(approving, gain), torch.ones(3, 1))
    assert torch.allclose(confidence_auc_skill(1.0 - approving, gain), torch.zeros(3, 1))  # reversed: clipped
    noise = torch.rand(3, 2000, generator=gen)
    assert float(confidence_auc_skill(noise, gain).max()) < 0.1  # a guess ranks at chance
    tied = torch.full_like(gain, 0.9)  # every move equally trusted: AUC 1/2 (ties count half)
    assert torch.allclose(confidence_auc_skill(tied, gain), torch.zeros(3, 1))
    odd = torch.arange(2000) % 2 == 1
    partly = torch.where((gain < 0) & odd, 0.5, 0.9)  # some failures ranked below, the rest tied
    below = ((gain < 0) & odd).sum(1, keepdim=True) / (gain < 0).sum(1, keepdim=True)
    torch.testing.assert_close(confidence_auc_skill(partly, gain), below.float())  # 2 AUC - 1
    assert torch.equal(confidence_auc_skill(approving, torch.ones_like(gain)), torch.zeros(3, 1))  # one outcome


def test_init_confidence_starts_the_confidence_net_at_the_pnets_belief(make_tiny_module, tmp_path):
    """``init_confidence``: a signed C starts at sigmoid(sign(a) z), z the P-Net's logit."""
    channels = (0, 2)
    net = _pnet(channels)
    path = save_warm_start(tmp_path / "pnet.pt", net.state_dict(), channels=channels,
                           width=TINY_NET["width"], dilations=TINY_NET["dilations"])
    module = make_tiny_module(conf_signed=True)
    kwargs = dict(width=TINY_NET["width"], dilations=TINY_NET["dilations"], source=path)
    state = warm_start_state(module.state_dict(), load_warm_start(path), confidence=True,
                             conf_dilations=TINY_NET["conf_dilations"], **kwargs)
    module.load_state_dict({k: torch.as_tensor(v) for k, v in state.items()})
    gen = torch.Generator().manual_seed(0)
    obs = torch.randn(2, 3, 8, 16, 16, generator=gen)
    a = torch.tensor(ACTION_VALUES, dtype=torch.float32)[torch.randint(0, 6, (2, 8, 16, 16), generator=gen)]
    with torch.no_grad():
        z = net(obs[:, list(channels)]).squeeze(1)
        torch.testing.assert_close(module.eval().confidence(obs, a), torch.sigmoid(torch.sign(a) * z))
    with pytest.raises(DataError, match=r"pnet.pt: init_confidence needs .* \(set model_config.conf_dilations to \[1, 2, 1, 2, 1, 1\]"):
        warm_start_state(module.state_dict(), load_warm_start(path), confidence=True,
                         conf_dilations=(1, 2, 4, 8, 16, 1), **kwargs)
    from mecca_rllib import MECCAConfig

    with pytest.raises(ValueError, match="init_confidence needs model_config\\['conf_signed'\\] = True"):
        MECCAConfig().training(init_confidence=True, init_from=str(path)).validate()
    with pytest.raises(ValueError, match="init_confidence starts the confidence net from the warm start"):
        MECCAConfig().training(init_confidence=True).validate()


def test_gate_scoring_is_chosen_by_confidence_skill():
    from mecca_rllib import MECCAConfig

    gen = torch.Generator().manual_seed(1)
    label = (torch.rand(2, 400, generator=gen) < 0.3).float()
    p_prev = torch.full_like(label, 0.5)
    step = torch.where(torch.rand(2, 400, generator=gen) < 0.9, 0.2, -0.2)
    p_next = p_prev + torch.where(label > 0, step, -step)
    gain = ShapingInputs(p_prev, p_next, label).gain
    inputs = ShapingInputs(p_prev, p_next, label, torch.where(gain > 0, 0.97, 0.6))
    params = {"alpha": 0.8, "beta": 1.0, "confidence_form": "focal", "confidence_gate": True}
    weighting = get_weighting("confidence")
    neutral = confidence_weight(torch.tensor(0.5), 0.8, 1.0, "focal")
    assert torch.allclose(weighting(inputs, params), neutral * inputs.gain)  # "accuracy": closed
    brier = weighting(inputs, {**params, "confidence_skill": "brier"})
    weight = brier / inputs.gain
    failed = inputs.gain < 0  # the less confident actions weigh more (MECCA.md §3, Eq. 8)
    assert float(weight[failed].min()) > 1.5 * float(weight[~failed].max())  # (closed: equal)
    auc = weighting(inputs, {**params, "confidence_skill": "auc"}) / inputs.gain
    assert torch.allclose(auc, confidence_weight(inputs.confidence, 0.8, 1.0, "focal"))  # ranks perfectly: w(c)
    with pytest.raises(ValueError, match="confidence_skill must be one of"):
        weighting(inputs, {**params, "confidence_skill": "roc"})
    with pytest.raises(ValueError, match="confidence_skill must be one of"):
        MECCAConfig().training(confidence_skill="roc").validate()


def test_gated_reward_falls_back_to_the_neutral_weight_where_confidence_guesses():
    gen = torch.Generator().manual_seed(0)
    label = (torch.rand(2, 400, generator=gen) < 0.3).float()
    p_prev = torch.full_like(label, 0.5)
    step = torch.where(torch.rand(2, 400, generator=gen) < 0.7, 0.2, -0.2)
    p_next = p_prev + torch.where(label > 0, step, -step)  # 70 % of actions help
    guessing = torch.full_like(label, 0.8)  # step 0 and 1: no better than the majority
    inputs = ShapingInputs(p_prev, p_next, label, guessing)
    weighting = get_weighting("confidence")
    params = {"alpha": 0.8, "beta": 1.0, "confidence_form": "focal"}
    gated = weighting(inputs, {**params, "confidence_gate": True})
    neutral = confidence_weight(torch.tensor(0.5), **params)
    assert torch.allclose(gated, neutral * inputs.gain)
    ungated = weighting(inputs, {**params, "confidence_gate": False})
    assert torch.allclose(ungated, confidence_weight(guessing, **params) * inputs.gain)
    knowing = torch.where(inputs.gain > 0, 0.9, 0.1)  # a perfect net keeps the paper's w(c)
    perfect = ShapingInputs(p_prev, p_next, label, knowing)
    assert torch.allclose(weighting(perfect, {**params, "confidence_gate": True}),
                          confidence_weight(knowing, **params) * perfect.gain)
    assert np.isfinite(gated.numpy()).all()


def test_the_warm_start_reads_the_cases_as_the_env_augments_them():
    from mecca_rllib.baselines.pretrain import training_source
    from mecca_rllib.data import AugmentedSource

    config = {"dataset": "synthetic", "shape": (8, 16, 16), "num_cases": 2}
    assert not isinstance(training_source(config), AugmentedSource)
    assert isinstance(training_source({**config, "augment": True}), AugmentedSource)
