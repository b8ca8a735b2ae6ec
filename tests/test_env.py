"""InteractiveSegEnv on small synthetic volumes (8x16x16): the contract the learner relies on."""
import pickle

import gymnasium
import numpy as np
import pytest
from ray.rllib.env.env_context import EnvContext

import mecca_rllib  # noqa: F401  (registers the env ids)
from mecca_rllib.data import DataError, VolumeSource
from mecca_rllib.envs import ACTION_VALUES, InteractiveSegEnv

SMALL = {
    "shape": (8, 16, 16), "num_cases": 3, "initial_clicks": 5, "clicks_per_step": 3, "steps": 4,
}


def make(**overrides):
    return InteractiveSegEnv({**SMALL, **overrides})


def true_boundary(label):
    """Voxels with a face neighbour of the other class (independent of the env's code)."""
    y = label.astype(bool)
    out = np.zeros_like(y)
    for ax in range(3):
        hi = tuple(slice(1, None) if a == ax else slice(None) for a in range(3))
        lo = tuple(slice(None, -1) if a == ax else slice(None) for a in range(3))
        differs = y[hi] != y[lo]
        out[hi] |= differs
        out[lo] |= differs
    return out


def cross_entropy(p, y):
    p = np.clip(p.astype(np.float64), 1e-6, 1 - 1e-6)
    return -(y * np.log(p) + (1 - y) * np.log(1 - p))


def random_actions(env, seed):
    return np.random.default_rng(seed).integers(0, 6, env.shape, dtype=np.uint8)


class ListSource(VolumeSource):
    """In-memory cases, to build volumes the phantom generator would not make."""

    def __init__(self, images, labels, labeled=None):
        self.names = [f"case{i}" for i in range(len(images))]
        self.shape = images[0].shape
        self.labeled = np.ones(len(images), bool) if labeled is None else np.asarray(labeled)
        self._cases = list(zip(images, labels))

    def get(self, index, rng):
        return self._cases[index]


def test_reset_gives_half_probability_clicks_and_peaked_hints():
    env = make()
    obs, info = env.reset()
    assert obs.shape == (3, 8, 16, 16) and obs.dtype == np.float32
    assert env.observation_space.contains(obs)
    assert np.all(obs[1] == 0.5)
    clicks = info["clicks"]
    assert clicks.shape == (5, 3) and np.issubdtype(clicks.dtype, np.integer)
    clicked = np.zeros(env.shape, bool)
    clicked[tuple(clicks.T)] = True
    assert np.all(obs[2][clicked] == 1.0) and obs[2][~clicked].max() < 1.0
    assert info["step"] == 0 and info["unlabeled"] is False and info["dice"] == 0.0
    assert info["label"].dtype == np.uint8 and info["label"].shape == env.shape
    image, _ = env.source.get(env.source.names.index(info["case"]), np.random.default_rng(0))
    np.testing.assert_array_equal(obs[0], image)


def test_known_action_map_gives_expected_probability():
    env = make()
    env.reset()
    action = (np.arange(np.prod(env.shape)) % 6).reshape(env.shape).astype(np.int64)
    obs, *_ = env.step(action)
    np.testing.assert_allclose(obs[1], np.float32(0.5) + ACTION_VALUES[action], atol=1e-6)
    obs, *_ = env.step(np.full(env.shape, 5, np.uint8))  # +0.4 again: clipped at 1
    expected = np.clip(np.float32(0.5) + ACTION_VALUES[action] + np.float32(0.4), 0, 1)
    np.testing.assert_allclose(obs[1], expected, atol=1e-6)
    np.testing.assert_array_equal(env.probability, obs[1])
    obs, *_ = env.step(np.zeros(env.shape, np.int8))  # -0.4
    assert obs[1].min() >= 0.0 and obs[1].max() <= 1.0


@pytest.mark.parametrize("readout", ["threshold", "hold"])
def test_reward_is_voxel_mean_cross_entropy_gain_and_dice_matches(readout):
    env = make(readout=readout)
    obs, info = env.reset()
    pred = np.zeros(env.shape, bool)  # p = 0.5 at the start: background
    for t in range(env.config["steps"]):
        p_prev = obs[1]
        obs, reward, terminated, truncated, info = env.step(random_actions(env, t))
        y = info["label"]
        expected = np.mean(cross_entropy(p_prev, y) - cross_entropy(obs[1], y))
        assert reward == pytest.approx(expected, rel=1e-5, abs=1e-7)
        tie = np.isclose(obs[1], 0.5)  # "hold": a voxel at exactly 0.5 keeps its side
        pred = (obs[1] > 0.5) & ~tie | (tie & pred if readout == "hold" else False)
        assert info["dice"] == pytest.approx(2 * (pred & (y == 1)).sum() / (pred.sum() + y.sum()))


def test_edge_clicks_lie_on_wrong_boundary_voxels_and_never_repeat():
    # The "threshold" readout (p > 0.5); clicks of the "hold" readout: tests/test_readout.py.
    env = make(initial_clicks=8, clicks_per_step=4, readout="threshold")
    obs, info = env.reset(seed=5)
    boundary = true_boundary(info["label"])
    previous = info["clicks"]
    assert boundary[tuple(previous.T)].all() and info["label"][tuple(previous.T)].all()
    for t in range(env.config["steps"]):
        obs, _, _, truncated, info = env.step(random_actions(env, 10 + t))
        clicks = info["clicks"]
        np.testing.assert_array_equal(clicks[: len(previous)], previous)  # oldest first
        new = clicks[len(previous):]
        assert len(new) == (0 if truncated else 4)
        wrong = (obs[1] > 0.5) != info["label"].astype(bool)
        assert boundary[tuple(new.T)].all() and wrong[tuple(new.T)].all()
        clicked = np.zeros(env.shape, bool)
        clicked[tuple(clicks.T)] = True
        assert np.all(obs[2][clicked] == 1.0)
        previous = clicks
    assert len({tuple(c) for c in previous}) == len(previous) == 8 + 4 * 3


def test_episode_truncates_after_t_steps():
    env = make(steps=3)
    env.reset()
    flags = [env.step(random_actions(env, t))[2:4] for t in range(3)]
    assert flags == [(False, False), (False, False), (False, True)]
    with pytest.raises(RuntimeError, match="reset"):
        env.step(random_actions(env, 0))
    assert env.reset()[1]["step"] == 0


def _rollout(env, episodes=2):
    out = []
    for e in range(episodes):
        obs, info = env.reset()
        out.append((obs, info["case"], info["clicks"]))
        for t in range(env.config["steps"]):
            obs, reward, _, _, info = env.step(random_actions(env, 100 * e + t))
            out.append((obs, reward, info["clicks"]))
    return out


def _same(a, b):
    return all(
        np.array_equal(x, y) if isinstance(x, np.ndarray) else x == y
        for ra, rb in zip(a, b, strict=True)
        for x, y in zip(ra, rb, strict=True)
    )


def test_seeding_reproduces_episodes_and_streams_differ():
    assert _same(_rollout(make(seed=3)), _rollout(make(seed=3)))
    assert not _same(_rollout(make(seed=3)), _rollout(make(seed=4)))
    env = make()
    first = env.reset(seed=7)
    env.step(random_actions(env, 0))
    again = env.reset(seed=7)
    np.testing.assert_array_equal(first[0], again[0])
    np.testing.assert_array_equal(first[1]["clicks"], again[1]["clicks"])
    # RLlib workers / vector slots with one seed get distinct streams.
    worker1 = InteractiveSegEnv(EnvContext(SMALL, worker_index=1, vector_index=0))
    worker2 = InteractiveSegEnv(EnvContext(SMALL, worker_index=2, vector_index=0))
    assert not _same(_rollout(worker1), _rollout(worker2))


def test_an_epoch_is_one_pass_over_the_cases():
    env = make(num_cases=3)
    for _ in range(2):
        cases = [env.reset()[1]["case"] for _ in range(3)]
        assert sorted(cases) == sorted(env.source.names)
    assert env.reset(options={"case": "phantom_train_0001"})[1]["case"] == "phantom_train_0001"
    assert env.reset(options={"case": 2})[1]["case"] == env.source.names[2]


def test_unlabeled_episodes_carry_no_label():
    env = make(labeled_fraction=0.0)
    obs, info = env.reset()
    assert info["unlabeled"] is True and "label" not in info and len(info["clicks"]) == 5
    obs, reward, _, _, info = env.step(random_actions(env, 0))
    assert "label" not in info and reward == 0.0 and info["unlabeled"] is True


def test_empty_label_means_no_clicks_and_the_env_still_works():
    rng = np.random.default_rng(0)
    image = rng.standard_normal((4, 6, 6)).astype(np.float32)
    env = InteractiveSegEnv({"dataset": ListSource([image], [np.zeros((4, 6, 6), np.uint8)])})
    obs, info = env.reset()
    assert info["clicks"].shape == (0, 3) and not obs[2].any() and info["dice"] == 1.0
    rewards = []
    for t in range(env.config["steps"]):
        obs, reward, _, _, info = env.step(np.full(env.shape, 5, np.uint8))  # all false positives
        assert info["clicks"].shape == (0, 3) and not obs[2].any() and info["dice"] == 0.0
        rewards.append(reward)
    assert rewards[1] < rewards[0] < 0 and rewards[2:] == [0.0] * 3  # 0.9, 1.0, then clipped


def test_largest_error_mode_clicks_inside_the_error():
    env = make(click_mode="largest_error", initial_clicks=2, clicks_per_step=1)
    obs, info = env.reset()
    assert len(info["clicks"]) == 2 and info["label"][tuple(info["clicks"].T)].all()
    obs, _, _, _, info = env.step(random_actions(env, 0))
    new = info["clicks"][2:]
    wrong = (obs[1] > 0.5) != info["label"].astype(bool)
    assert len(new) == 1 and wrong[tuple(new.T)].all() and obs[2][tuple(new.T)] == 1.0


def test_advice_restricts_the_next_clicks():
    env = make(clicks_per_step=4)
    env.reset()
    advice = np.zeros(env.shape, bool)
    advice[:, :, :8] = True
    env.set_advice(advice)
    _, _, _, _, info = env.step(np.full(env.shape, 0, np.uint8))  # p = 0.1: misses the object
    new = info["clicks"][5:]
    assert len(new) == 4 and advice[tuple(new.T)].all()
    with pytest.raises(ValueError, match=r"\(8, 16\)"):
        env.set_advice(np.zeros((8, 16), bool))
    env.set_advice(None)


def test_advice_mode_first_fills_the_step_outside_the_advice():
    env = make(clicks_per_step=4, advice_mode="first")
    env.reset()
    env.set_advice(np.zeros(env.shape, bool))  # advice with nothing wrong in it
    _, _, _, _, info = env.step(np.full(env.shape, 0, np.uint8))
    assert len(info["clicks"][5:]) == 4  # "only" would place none
    with pytest.raises(ValueError, match="advice_mode"):
        make(advice_mode="anywhere")


def test_external_clicks_are_validated_and_drawn():
    env = make()
    env.reset()
    env.add_clicks(np.array([[0, 0, 0]]))
    assert env.probability.shape == env.shape and env.clicks[-1].tolist() == [0, 0, 0]
    obs, *_ = env.step(random_actions(env, 0))
    assert obs[2][0, 0, 0] == 1.0
    with pytest.raises(ValueError, match=r"\(8, 0, 0\)"):
        env.add_clicks(np.array([[8, 0, 0]]))


@pytest.mark.parametrize(
    "action, message",
    [
        (np.zeros((8, 16), np.uint8), r"shape \(8, 16\)"),
        (np.zeros((8, 16, 16), np.float32), "dtype.*float32"),
        (np.full((8, 16, 16), 6, np.int64), "value 6"),
        (np.full((8, 16, 16), -1, np.int8), "value -1"),
    ],
)
def test_bad_actions_are_clear_errors(action, message):
    env = make()
    env.reset()
    with pytest.raises(ValueError, match=message):
        env.step(action)


def test_bad_config_is_a_clear_error():
    with pytest.raises(ValueError, match=r"\['stepz'\].*valid keys.*'steps'"):
        make(stepz=3)
    with pytest.raises(ValueError, match="click_mode"):
        make(click_mode="random")
    with pytest.raises(ValueError, match="steps"):
        make(steps=0)


def test_dataset_without_cases_fails_at_construction(tmp_path):
    with pytest.raises(DataError):
        make(dataset=str(tmp_path))


def test_spaces_have_short_reprs_pickle_and_sample():
    env = make()
    assert repr(env.action_space) == "VoxelActions(6, shape=(8, 16, 16))"
    assert len(repr(env.observation_space)) < 80
    for space in (env.action_space, env.observation_space):
        clone = pickle.loads(pickle.dumps(space))
        assert clone == space and repr(clone) == repr(space)
        assert clone.contains(clone.sample())
    assert not env.action_space.contains(np.full(env.shape, 6, np.uint8))


def test_gymnasium_make_and_default_config():
    env = gymnasium.make("mecca_rllib/InteractiveSeg-v0", config=SMALL)
    obs, info = env.reset(seed=0)
    obs, reward, terminated, truncated, info = env.step(env.action_space.sample())
    assert obs.shape == (3, 8, 16, 16) and isinstance(reward, float)
    env = gymnasium.make("mecca_rllib/InteractiveSeg-v0", shape=(8, 16, 16), num_cases=2)
    assert env.unwrapped.config["steps"] == 5
    default = InteractiveSegEnv()
    assert default.observation_space.shape == (3, 30, 55, 55)
    assert default.config["initial_clicks"] == 25 and default.config["dataset"] == "synthetic"


def test_augmentation_transforms_image_and_label_together():
    env = make(augment=True, num_cases=1)
    raw_image, raw_label = env.source.get(0, np.random.default_rng(0))
    changed = 0
    for _ in range(4):
        obs, info = env.reset()
        changed += not np.array_equal(obs[0], raw_image)
        # Same transform on both: the foreground keeps its voxel count and image values.
        assert info["label"].sum() == raw_label.sum()
        np.testing.assert_allclose(np.sort(obs[0][info["label"] == 1]),
                                   np.sort(raw_image[raw_label == 1]), rtol=1e-5)
    assert changed > 0


def test_split_hint_channels_separate_foreground_and_background_clicks():
    """hint_channels=2: channel 2 peaks at foreground clicks, channel 3 at background ones."""
    env = make(hint_channels=2)
    obs, info = env.reset(seed=3)
    assert obs.shape == (4, 8, 16, 16) and env.observation_space.contains(obs)
    assert "hint_fg" in repr(env.observation_space)
    # p = 0.5 everywhere -> everything predicted background -> every first click is foreground
    label = info["label"]
    assert label[tuple(info["clicks"].T)].all()
    assert np.all(obs[2][tuple(info["clicks"].T)] == 1.0) and obs[3].max() == 0.0
    # all +0.4: every background voxel becomes wrong, so later edge clicks mark background
    obs, *_, info = env.step(np.full(env.shape, 5, np.uint8))
    new = info["clicks"][5:]
    assert len(new) == 3 and not label[tuple(new.T)].any()
    assert np.all(obs[3][tuple(new.T)] == 1.0)
    single, _ = make().reset(seed=3)  # the one-channel map is the maximum of the two
    np.testing.assert_array_equal(single[2], env.reset(seed=3)[0][2:].max(axis=0))
    with pytest.raises(ValueError, match="hint_channels"):
        make(hint_channels=3)
