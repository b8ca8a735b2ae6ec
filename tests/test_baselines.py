"""Supervised baselines, the shared interaction state and the Segmenter adapters."""
import numpy as np
import pytest
import torch

from mecca_rllib.baselines import (
    KINDS,
    ClickSchedule,
    Interaction,
    ModuleSegmenter,
    PNet,
    SupervisedSegmenter,
    SupervisedSettings,
    segmentation_loss,
    train_supervised,
)
from mecca_rllib.budget import Budget
from mecca_rllib.data import open_source
from mecca_rllib.envs import ACTION_VALUES, InteractiveSegEnv, boundary_map

SHAPE = (8, 16, 16)
SCHEDULE = ClickSchedule(steps=3, initial_clicks=4, clicks_per_step=2, hint_kernel=3)
SETTINGS = SupervisedSettings(width=16, dilations=(1, 2, 1, 2, 1), lr=2e-3, schedule=SCHEDULE)


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny convolutions run several times faster on one thread than on two busy cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def source():
    return open_source("synthetic", SHAPE, num_cases=2, split="train", seed=3)


def test_interaction_clicks_on_the_label_edge_where_wrong_and_reproducibly(source):
    image, label = source.get(0, np.random.default_rng(0))
    a = Interaction(image, label, SCHEDULE, np.random.default_rng(7))
    b = Interaction(image, label, SCHEDULE, np.random.default_rng(7))
    np.testing.assert_array_equal(a.clicks, b.clicks)  # same stream -> same first clicks
    assert len(a.clicks) == SCHEDULE.initial_clicks
    edge = boundary_map(label)
    assert edge[tuple(a.clicks.T)].all()
    assert label[tuple(a.clicks.T)].all()  # p = 0.5 is background: only foreground is wrong
    np.testing.assert_allclose(a.obs[2][tuple(a.clicks.T)], 1.0)  # hint peaks at clicks
    np.testing.assert_array_equal(a.obs[1], 0.5)
    # After a perfect prediction nothing is wrong: no more clicks.
    a.set_p(label.astype(np.float32))
    assert len(a.click()) == 0
    # Advice restricts where the user clicks.
    b.set_p(np.zeros(SHAPE, np.float32))
    allowed = np.zeros(SHAPE, bool)
    allowed[: SHAPE[0] // 2] = True
    new = b.click(advice=allowed)
    assert len(new) > 0 and allowed[tuple(new.T)].all()


def test_interaction_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="shape"):
        Interaction(np.zeros(SHAPE, np.float32), np.zeros((8, 16, 15), np.uint8), SCHEDULE,
                    np.random.default_rng(0))


class _FixedActions(torch.nn.Module):
    """A stand-in MECCA module whose argmax action is a given index map."""

    def __init__(self, actions: np.ndarray):
        super().__init__()
        self.actions = torch.as_tensor(actions, dtype=torch.long)
        self.table = torch.tensor(np.array(ACTION_VALUES))
        self.weight = torch.nn.Parameter(torch.zeros(1))

    def policy_logits(self, obs):
        return torch.nn.functional.one_hot(self.actions, 6).permute(3, 0, 1, 2)[None].float()

    def action_values_of(self, actions):
        return self.table[actions.long()]

    def confidence(self, obs, values):
        return torch.sigmoid(values * 10)


def test_module_segmenter_moves_p_exactly_like_the_env(source):
    env = InteractiveSegEnv(dataset=source, shape=SHAPE, **SCHEDULE.env_config())
    obs, _ = env.reset(seed=0)
    rng = np.random.default_rng(1)
    for _ in range(SCHEDULE.steps):
        actions = rng.integers(0, 6, SHAPE).astype(np.uint8)
        out = ModuleSegmenter(_FixedActions(actions)).step(obs, with_confidence=True)
        obs, *_ = env.step(actions)
        np.testing.assert_array_equal(out.p, obs[1])  # same 0.1 grid, same clipping
        assert out.confidence.shape == SHAPE
        np.testing.assert_array_equal(out.confidence > 0.5, ACTION_VALUES[actions] > 0)
    assert ModuleSegmenter(_FixedActions(actions)).step(obs).confidence is None


def test_module_segmenter_runs_a_real_mecca_module():
    from mecca_rllib.policies.checkpoints import build_module

    torch.manual_seed(0)
    module = build_module({"width": 16, "dilations": [1, 2, 1, 2, 1],
                           "conf_dilations": [1, 2, 1, 2, 1, 1]}, SHAPE)
    obs = np.zeros((3, *SHAPE), np.float32)
    obs[1] = 0.5
    out = ModuleSegmenter(module).step(obs, with_confidence=True)
    moves = np.round(out.p - 0.5, 6)
    assert set(np.unique(moves)) <= set(np.round(ACTION_VALUES, 6))
    assert ((out.confidence > 0) & (out.confidence < 1)).all()


def test_segmentation_loss_is_small_for_right_and_large_for_wrong_logits():
    label = torch.zeros(1, *SHAPE)
    label[:, 2:6, 4:12, 4:12] = 1
    right = segmentation_loss((label * 2 - 1) * 20, label)
    wrong = segmentation_loss((1 - label * 2) * 20, label)
    assert float(right) < 0.01 < 1.0 < float(wrong)


def test_each_baseline_reads_only_its_own_channels():
    torch.manual_seed(0)
    obs = np.random.default_rng(0).random((3, *SHAPE), dtype=np.float32)
    for kind, (channels, name) in KINDS.items():
        seg = SupervisedSegmenter(PNet(len(channels), 16, (1, 2, 1, 2, 1)), channels, name)
        base = seg.step(obs).p
        assert base.shape == SHAPE and base.dtype == np.float32
        assert ((base > 0) & (base < 1)).all()
        for channel in (1, 2):  # p (InterCNN only) and hint (DeepIGeoS, InterCNN)
            changed = obs.copy()
            changed[channel] = 1.0 - changed[channel]
            moved = not np.allclose(seg.step(changed).p, base)
            assert moved == (channel in channels), (kind, channel)


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_training_spends_the_budget_and_lowers_the_loss(kind):
    one_case = open_source("synthetic", SHAPE, num_cases=1, split="train", seed=3)
    steps = 12
    result = train_supervised(kind, one_case, Budget("env_steps", steps), SETTINGS)
    spent = result.spent
    per_volume = SCHEDULE.steps if kind == "intercnn" else 1
    # Stops at the first volume boundary at or past the budget.
    assert steps <= spent["env_steps"] < steps + per_volume
    assert spent["updates"] == len(result.losses) == spent["env_steps"]
    assert np.mean(result.losses[-3:]) < np.mean(result.losses[:3])
    assert result.segmenter.name == KINDS[kind][1]


def test_training_is_seeded(source):
    a = train_supervised("deepigeos", source, Budget("env_steps", 3), SETTINGS)
    b = train_supervised("deepigeos", source, Budget("env_steps", 3), SETTINGS)
    assert a.losses == b.losses


def test_unknown_kind_and_empty_budget_are_rejected(source):
    with pytest.raises(ValueError, match="kind"):
        train_supervised("unet", source, Budget("env_steps", 1), SETTINGS)
    with pytest.raises(ValueError, match="positive"):
        Budget("env_steps", 0)
