"""The evaluation protocol (MECCA.md §6): one function, same clicks for every method."""
import json

import numpy as np
import pytest

from mecca_rllib.baselines import ClickSchedule, Segmenter, StepOutput
from mecca_rllib.bench.protocol import MethodResult, Protocol, evaluate_method, mean_std
from mecca_rllib.data import open_source

SHAPE = (8, 16, 16)
SCHEDULE = ClickSchedule(steps=3, initial_clicks=4, clicks_per_step=2, hint_kernel=3)
PROTOCOL = Protocol(schedule=SCHEDULE, repeats=2, seed=5)


@pytest.fixture(scope="module")
def test_source():
    return open_source("synthetic", SHAPE, num_cases=3, split="test", seed=1)


class Oracle(Segmenter):
    """Predicts the label (or its complement) of the case it is shown; records its inputs."""

    def __init__(self, source, invert=False, with_conf=False):
        self.name = "oracle"
        self.source, self.invert, self.has_confidence = source, invert, with_conf
        self.seen: list[np.ndarray] = []

    def step(self, obs, *, with_confidence=False):
        self.seen.append(obs.copy())
        for i in range(len(self.source)):
            image, label = self.source.get(i, np.random.default_rng(0))
            if np.array_equal(image, obs[0]):
                p = (1 - label if self.invert else label).astype(np.float32)
                conf = np.full(label.shape, 0.5, np.float32) if with_confidence else None
                return StepOutput(p, conf)
        raise AssertionError("unknown volume")


class Constant(Segmenter):
    name = "constant"

    def __init__(self, value):
        self.value = value

    def step(self, obs, *, with_confidence=False):
        return StepOutput(np.full(obs.shape[1:], self.value, np.float32))


def test_perfect_and_inverted_predictions_score_the_extremes(test_source):
    right = evaluate_method(Oracle(test_source), test_source, PROTOCOL)
    R, C, T = PROTOCOL.repeats, len(test_source), SCHEDULE.steps
    assert right.dice.shape == (R, C, T + 1) and right.assd.shape == (R, C, T)
    np.testing.assert_array_equal(right.dice[..., 0], 0.0)  # p = 0.5: empty segmentation
    np.testing.assert_array_equal(right.dice[..., 1:], 1.0)
    np.testing.assert_array_equal(right.assd, 0.0)
    np.testing.assert_array_equal(right.misunderstanding, 0.0)  # every voxel moved toward its label
    np.testing.assert_array_equal(right.noc(0.9), 1)
    assert right.cases == test_source.names and not right.guided

    wrong = evaluate_method(Oracle(test_source, invert=True), test_source, PROTOCOL, name="inv")
    assert wrong.name == "inv"
    np.testing.assert_array_equal(wrong.dice[..., 1:], 0.0)
    np.testing.assert_array_equal(wrong.misunderstanding[..., 0], 1.0)  # all moved away
    np.testing.assert_array_equal(wrong.misunderstanding[..., 1:], 0.0)  # then stayed
    np.testing.assert_array_equal(wrong.noc(0.85), T + 1)
    assert (wrong.inference_ms > 0).all() and (wrong.interaction_ms > 0).all()


def test_every_method_gets_the_same_first_clicks_and_repeats_differ(test_source):
    a, b = Oracle(test_source), Oracle(test_source, invert=True)
    evaluate_method(a, test_source, PROTOCOL)
    evaluate_method(b, test_source, PROTOCOL)
    steps = SCHEDULE.steps
    first_a = [obs[2] for obs in a.seen[::steps]]  # the hint each episode starts with
    first_b = [obs[2] for obs in b.seen[::steps]]
    for ha, hb in zip(first_a, first_b):
        np.testing.assert_array_equal(ha, hb)
    n_case = len(test_source)
    assert not np.array_equal(first_a[0], first_a[n_case])  # repeat 1 of case 0: other seed
    # Later clicks follow each method's own errors: the inverted method gets more hints.
    assert b.seen[1][2].sum() > a.seen[1][2].sum()


def test_guided_mode_restricts_clicks_to_the_advice(test_source):
    seg = Oracle(test_source, invert=True, with_conf=True)
    calls = []

    def nowhere(obs, confidence, step):
        calls.append((confidence.shape, step))
        return np.zeros(SHAPE, bool)

    result = evaluate_method(seg, test_source, Protocol(schedule=SCHEDULE, repeats=1),
                             advice_fn=nowhere)
    assert result.guided
    assert calls[: SCHEDULE.steps - 1] == [(SHAPE, t) for t in range(SCHEDULE.steps - 1)]
    for t in range(1, SCHEDULE.steps):  # no click allowed: the hint never changes
        np.testing.assert_array_equal(seg.seen[t][2], seg.seen[0][2])


def test_guided_mode_needs_a_confidence_map(test_source):
    with pytest.raises(ValueError, match="confidence"):
        evaluate_method(Constant(0.9), test_source, PROTOCOL, advice_fn=lambda o, c, t: None)


def test_empty_predictions_have_infinite_assd_which_summaries_count_apart(test_source):
    result = evaluate_method(Constant(0.0), test_source, Protocol(schedule=SCHEDULE, repeats=1))
    assert np.isinf(result.assd).all()
    mean, std, n_inf = mean_std(result.assd)
    assert np.isnan(mean) and n_inf == result.assd.size
    mean, std, n_inf = mean_std(np.array([[1.0, np.inf], [3.0, 5.0]]), axis=1)
    np.testing.assert_allclose(mean, [1.0, 4.0])
    np.testing.assert_allclose(std, [0.0, 1.0])
    np.testing.assert_array_equal(n_inf, [1, 0])


def test_result_survives_a_json_round_trip(test_source):
    result = evaluate_method(Constant(0.0), test_source, Protocol(schedule=SCHEDULE, repeats=1))
    result.training = {"env_steps": 3}
    back = MethodResult.from_dict(json.loads(json.dumps(result.to_dict())))
    np.testing.assert_array_equal(back.assd, result.assd)  # inf preserved
    np.testing.assert_array_equal(back.dice, result.dice)
    assert back.training == {"env_steps": 3} and back.steps == SCHEDULE.steps


def test_protocol_defaults_follow_the_paper():
    p = Protocol()
    assert (p.repeats, p.schedule.steps, p.schedule.initial_clicks, p.schedule.clicks_per_step,
            p.schedule.click_mode, p.schedule.hint_kernel) == (5, 5, 25, 5, "edge", 8)
    with pytest.raises(ValueError, match="repeats"):
        Protocol(repeats=0)


def test_draw_gives_every_caller_the_same_episode(test_source):
    """Protocol.draw is how the bench and the validation scripts get an episode: one
    (repeat, case) always yields the same volume, label and click stream."""
    protocol = Protocol(schedule=SCHEDULE, repeats=2)
    (image, label, clicks), (image2, label2, clicks2) = (protocol.draw(test_source, 1, 0) for _ in range(2))
    np.testing.assert_array_equal(image, image2)
    np.testing.assert_array_equal(label, label2)
    assert image.shape == label.shape == SHAPE
    assert clicks.integers(1 << 30, size=4).tolist() == clicks2.integers(1 << 30, size=4).tolist()
    first = [protocol.draw(test_source, r, 0)[2].integers(1 << 30, size=4).tolist() for r in (0, 1)]
    assert first[0] != first[1]  # another repeat: another click stream
