"""The segmentation readout of p (mecca_rllib.envs.readout): threshold and hold, and that the
env, the benchmark's Interaction and the protocol's Dice all read p the same way."""
import numpy as np
import pytest

from mecca_rllib.baselines import ClickSchedule, Interaction, Segmenter, StepOutput
from mecca_rllib.bench.protocol import Protocol, evaluate_method
from mecca_rllib.data import VolumeSource
from mecca_rllib.envs import ACTION_VALUES, InteractiveSegEnv
from mecca_rllib.envs.readout import READOUTS, segmentation
from mecca_rllib.metrics import dice

SHAPE = (8, 16, 16)
UP, DOWN = (int(np.flatnonzero(np.isclose(ACTION_VALUES, v))[0]) for v in (0.1, -0.1))


class Ball(VolumeSource):
    """One case: a ball of foreground in the middle of the volume."""

    names = ["ball"]
    shape = SHAPE
    labeled = np.ones(1, bool)

    def __init__(self):
        z, y, x = np.indices(SHAPE)
        self.label = (((z - 4) / 3.0) ** 2 + ((y - 8) / 5.0) ** 2 + ((x - 8) / 5.0) ** 2 <= 1).astype(np.uint8)
        self.image = self.label.astype(np.float32)

    def __len__(self):
        return 1

    def get(self, index, rng):
        return self.image, self.label


def test_hold_keeps_the_previous_side_only_at_exactly_one_half():
    p = np.array([0.4, 0.5, 0.5, 0.6, 0.5], np.float32)
    previous = np.array([True, True, False, False, True])
    assert segmentation(p, previous, "threshold").tolist() == [False, False, False, True, False]
    assert segmentation(p, previous, "hold").tolist() == [False, True, False, True, True]
    assert segmentation(p, None, "hold").tolist() == [False, False, False, True, False]  # the start
    tenths = np.rint(p * 10).astype(np.int8)  # the env's integer tenths read the same way
    assert segmentation(tenths, previous, "hold", half=5).tolist() == [False, True, False, True, True]


def test_unknown_readout_is_rejected_with_the_choices():
    with pytest.raises(ValueError, match="readout must be one of"):
        segmentation(np.zeros(3), None, "median")
    with pytest.raises(ValueError, match="readout must be one of"):
        InteractiveSegEnv(dataset=Ball(), readout="median")
    with pytest.raises(ValueError, match="readout must be one of"):
        Interaction(Ball().image, Ball().label, ClickSchedule(readout="median"), np.random.default_rng(0))


@pytest.mark.parametrize("readout", READOUTS)
def test_env_reads_out_dice_and_clicks_with_its_readout(readout):
    """p goes 0.5 -> 0.6 -> 0.5 everywhere: with "threshold" the segmentation is empty again
    after step 2, with "hold" every voxel stays foreground; Dice and the next clicks follow."""
    source = Ball()
    env = InteractiveSegEnv(dataset=source, readout=readout, steps=3, initial_clicks=4,
                            clicks_per_step=4, hint_kernel=3)
    env.reset(seed=0)
    _, _, _, _, info = env.step(np.full(SHAPE, UP, np.uint8))
    everything = np.ones(SHAPE, bool)
    assert info["dice"] == pytest.approx(dice(everything, source.label))
    before = len(info["clicks"])
    _, _, _, _, info = env.step(np.full(SHAPE, DOWN, np.uint8))
    new = info["clicks"][before:]
    clicked = source.label[tuple(new.T)]
    assert env.segmentation.all() == (readout == "hold") and env.segmentation.any() == (readout == "hold")
    if readout == "hold":  # all foreground: the wrong voxels are background ones
        assert info["dice"] == pytest.approx(dice(everything, source.label))
        assert len(new) and not clicked.any()
    else:  # empty again: the wrong voxels are the target's
        assert info["dice"] == 0.0
        assert len(new) and clicked.all()


@pytest.mark.parametrize("readout", READOUTS)
def test_interaction_and_protocol_read_out_p_like_the_env(readout):
    source = Ball()
    schedule = ClickSchedule(steps=3, initial_clicks=4, clicks_per_step=4, hint_kernel=3, readout=readout)

    class UpDownUp(Segmenter):
        name = "up-down-up"

        def step(self, obs, *, with_confidence=False):
            return StepOutput(np.full(SHAPE, 0.6 if np.all(obs[1] <= 0.5) else 0.5, np.float32))

    episode = Interaction(source.image, source.label, schedule, np.random.default_rng(0))
    assert not episode.mask.any()  # p = 0.5 at the start: background
    for p in (0.6, 0.5):
        info = episode.advance(StepOutput(np.full(SHAPE, p, np.float32)))
        assert np.array_equal(info["segmentation"], episode.mask)
    held = readout == "hold"
    assert episode.mask.all() == held and episode.mask.any() == held

    result = evaluate_method(UpDownUp(), source, Protocol(schedule=schedule, repeats=1, seed=0))
    full = dice(np.ones(SHAPE, bool), source.label)
    step2 = full if held else 0.0
    assert result.dice[0, 0].tolist() == pytest.approx([0.0, full, step2, full])
