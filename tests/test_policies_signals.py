"""Per-voxel learning signals (MECCA.md §3) and the reward-weighting registry, no Ray."""
import math

import numpy as np
import pytest
import torch

from mecca_rllib.policies import reward_shaping as rs
from mecca_rllib.policies.returns import (
    advantages_and_targets,
    confidence_targets,
    cross_entropy,
    discounted_returns,
    generalized_advantages,
    relative_gain,
)


def _loop_returns(r, gamma):
    t_len, n = r.shape
    out = np.zeros((t_len, n))
    for i in range(n):
        for t in range(t_len):
            out[t, i] = sum(gamma ** k * r[t + k, i] for k in range(t_len - t))
    return out


def _loop_gae(r, v, gamma, lam):
    t_len, n = r.shape
    out = np.zeros((t_len, n))
    for i in range(n):
        for t in range(t_len):
            total = 0.0
            for k in range(t_len - t):
                nxt = v[t + k + 1, i] if t + k + 1 < t_len else 0.0
                delta = r[t + k, i] + gamma * nxt - v[t + k, i]
                total += (gamma * lam) ** k * delta
            out[t, i] = total
    return out


@pytest.fixture
def rv():
    g = torch.Generator().manual_seed(0)
    return torch.randn(5, 7, generator=g, dtype=torch.float64), torch.randn(5, 7, generator=g, dtype=torch.float64)


def test_discounted_returns_match_loop_voxel_by_voxel(rv):
    rewards, _ = rv
    got = discounted_returns(rewards, 0.95)
    np.testing.assert_allclose(got.numpy(), _loop_returns(rewards.numpy(), 0.95), rtol=1e-12)
    # no bootstrap past the last step: the final return is the final reward
    assert torch.equal(got[-1], rewards[-1])


@pytest.mark.parametrize("lam", [0.0, 0.7, 1.0])
def test_gae_matches_loop_voxel_by_voxel(rv, lam):
    rewards, values = rv
    got = generalized_advantages(rewards, values, 0.95, lam)
    np.testing.assert_allclose(got.numpy(), _loop_gae(rewards.numpy(), values.numpy(), 0.95, lam), rtol=1e-10)


def test_advantages_and_targets_a2c_and_gae_lambda_one_agree(rv):
    rewards, values = rv
    adv, tgt = advantages_and_targets(rewards, values, 0.95, None)
    np.testing.assert_allclose(tgt.numpy(), _loop_returns(rewards.numpy(), 0.95), rtol=1e-12)
    torch.testing.assert_close(adv, tgt - values)
    adv1, tgt1 = advantages_and_targets(rewards, values, 0.95, 1.0)
    torch.testing.assert_close(adv1, adv)
    torch.testing.assert_close(tgt1, tgt)


def test_gae_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="differ"):
        generalized_advantages(torch.zeros(5, 3), torch.zeros(5, 4), 0.9, 0.9)


def test_cross_entropy_and_gain_on_hand_made_voxels():
    p_prev = torch.tensor([0.5, 0.5, 0.9, 0.0])
    p_next = torch.tensor([0.9, 0.1, 0.5, 0.4])
    y = torch.tensor([1, 1, 0, 0])
    chi = cross_entropy(p_prev, y)
    assert chi[0].item() == pytest.approx(math.log(2))
    assert chi[2].item() == pytest.approx(-math.log(0.1), rel=1e-5)
    assert torch.isfinite(chi).all() and chi[3].item() == pytest.approx(0.0, abs=1e-5)  # eps clamp
    gain = relative_gain(p_prev, p_next, y)
    assert gain[0] > 0 > gain[1]  # toward y=1 is good, away is bad
    assert gain[2] > 0 > gain[3]  # toward y=0 is good, away is bad
    assert gain[0].item() == pytest.approx(math.log(2) + math.log(0.9), rel=1e-5)


def test_confidence_targets_eq7():
    a = torch.tensor([0.4, 0.1, -0.2, -0.4])
    y = torch.tensor([1, 0, 0, 1])
    assert confidence_targets(a, y).tolist() == [1.0, 0.0, 1.0, 0.0]
    # flipping the action flips the target (the symmetric sample of Eq. 6)
    assert confidence_targets(-a, y).tolist() == [0.0, 1.0, 0.0, 1.0]


# ---------------------------------------------------------------- reward weightings
@pytest.fixture
def inputs():
    # voxel 0: y=1, p 0.3 -> 0.7 (error fixed), voxel 1: y=0, p 0.3 -> 0.1 (already right)
    return rs.ShapingInputs(
        p_prev=torch.tensor([[0.3, 0.3]], dtype=torch.float64),
        p_next=torch.tensor([[0.7, 0.1]], dtype=torch.float64),
        label=torch.tensor([1, 0]),
        confidence=torch.tensor([[0.9, 0.2]], dtype=torch.float64),
    )


def _gain(p0, p1, y):
    ce = lambda p: -math.log(p) if y else -math.log(1 - p)  # noqa: E731
    return ce(p0) - ce(p1)


def test_none_is_the_plain_gain(inputs):
    out = rs.get_weighting("none")(inputs, {"alpha": 0.8})
    assert out[0, 0].item() == pytest.approx(_gain(0.3, 0.7, 1))
    assert out[0, 1].item() == pytest.approx(_gain(0.3, 0.1, 0))


def test_error_region_boosts_only_previously_wrong_voxels(inputs):
    out = rs.get_weighting("error_region")(inputs, {"error_region_lambda": 2.0})
    assert out[0, 0].item() == pytest.approx(3.0 * _gain(0.3, 0.7, 1))  # p=0.3 < 0.5 but y=1
    assert out[0, 1].item() == pytest.approx(_gain(0.3, 0.1, 0))  # was already right


def test_focal_prob_is_gain_of_focal_cross_entropy(inputs):
    out = rs.get_weighting("focal_prob")(inputs, {"focal_gamma": 2.0})
    fl = lambda pt: -((1 - pt) ** 2) * math.log(pt)  # noqa: E731  (pt = prob of true class)
    assert out[0, 0].item() == pytest.approx(fl(0.3) - fl(0.7))
    assert out[0, 1].item() == pytest.approx(fl(0.7) - fl(0.9))
    # gamma = 0 reduces to the plain gain
    torch.testing.assert_close(rs.get_weighting("focal_prob")(inputs, {"focal_gamma": 0.0}), inputs.gain)


def test_confidence_focal_and_paper_forms(inputs):
    w = rs.get_weighting("confidence")
    focal = w(inputs, {"alpha": 0.8, "beta": 1.0, "confidence_form": "focal", "confidence_gate": False})
    assert focal[0, 0].item() == pytest.approx(0.8 * 0.1 * _gain(0.3, 0.7, 1))
    assert focal[0, 1].item() == pytest.approx(0.8 * 0.8 * _gain(0.3, 0.1, 0))
    paper = w(inputs, {"alpha": 0.8, "beta": 1.0, "confidence_form": "paper", "confidence_gate": False})
    # as printed, (alpha - c) < 0 for c = 0.9 > alpha: a good confident action is punished
    assert paper[0, 0].item() == pytest.approx(-0.1 * _gain(0.3, 0.7, 1))
    assert paper[0, 0] < 0
    assert paper[0, 1].item() == pytest.approx(0.6 * _gain(0.3, 0.1, 0))
    squared = w(inputs, {"alpha": 0.8, "beta": 2.0, "confidence_form": "focal", "confidence_gate": False})
    assert squared[0, 1].item() == pytest.approx(0.8 * 0.64 * _gain(0.3, 0.1, 0))


def test_confidence_weighting_needs_confidence_and_a_known_form(inputs):
    no_conf = rs.ShapingInputs(inputs.p_prev, inputs.p_next, inputs.label)
    with pytest.raises(ValueError, match="needs the action confidence"):
        rs.get_weighting("confidence")(no_conf, {})
    with pytest.raises(ValueError, match="confidence_form"):
        rs.get_weighting("confidence")(inputs, {"confidence_form": "cubic"})


def test_user_registers_a_weighting_by_name(inputs):
    def doubled(inp, factor=2.0):
        return inp.gain * factor

    rs.register_weighting("test_doubled", doubled, overwrite=True)
    assert "test_doubled" in rs.registered_weightings()
    out = rs.get_weighting("test_doubled")(inputs, {"factor": 5.0, "alpha": 0.8})  # alpha filtered out
    torch.testing.assert_close(out, 5.0 * inputs.gain)
    with pytest.raises(ValueError, match="already registered"):
        rs.register_weighting("test_doubled", doubled)


def test_unknown_weighting_names_the_known_ones():
    with pytest.raises(ValueError, match="unknown reward_weighting 'nope'.*confidence"):
        rs.get_weighting("nope")
