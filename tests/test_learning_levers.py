"""Learning-quality levers and diagnostics (issue 14): class balance, oracle term, per-step
statistics, collapse warning."""
import logging

import numpy as np
import pytest
import torch

from mecca_rllib.envs import ACTION_VALUES
from mecca_rllib.policies.diagnostics import collapse_reason, step_diagnostics
from mecca_rllib.policies.learner import class_balance_weights


def test_class_balance_gives_target_and_background_equal_weight():
    label = torch.tensor([[1.0, 0, 0, 0, 0, 0, 0, 0], [1, 1, 1, 1, 0, 0, 0, 0]])
    mask = torch.ones_like(label)
    w = class_balance_weights(label, mask)
    for row in range(2):
        fg, bg = w[row][label[row] > 0].sum(), w[row][label[row] == 0].sum()
        torch.testing.assert_close(fg, bg)
        torch.testing.assert_close(w[row].mean(), torch.tensor(1.0))
    # an empty target is clamped, not divided by zero
    assert torch.isfinite(class_balance_weights(torch.zeros(1, 8), torch.ones(1, 8))).all()


def test_partial_class_balance_lies_between_none_and_full():
    label = torch.tensor([[1.0, 0, 0, 0, 0, 0, 0, 0]])  # 1 target voxel of 8
    mask = torch.ones_like(label)
    ratio = [(w[0, 0] / w[0, 1]).item() for w in
             (class_balance_weights(label, mask, p) for p in (0.0, 0.5, 1.0))]
    assert ratio == pytest.approx([1.0, 7 ** 0.5, 7.0])  # target / background weight
    half = class_balance_weights(label, mask, 0.5)
    torch.testing.assert_close(half.mean(), torch.tensor(1.0))  # the loss keeps its scale
    masked = class_balance_weights(label, torch.tensor([[1.0, 1, 1, 1, 0, 0, 0, 0]]), 0.5)
    torch.testing.assert_close(masked[0, :4].mean(), torch.tensor(1.0))  # over masked voxels
    from mecca_rllib import MECCAConfig

    with pytest.raises(ValueError, match="class_balance_power must be >= 0"):
        MECCAConfig().training(class_balance_power=-1.0).validate()


def test_step_diagnostics_match_hand_counts():
    # two rows: steps 0 and 1 of one episode, four voxels (labels 1, 1, 0, 0)
    label = torch.tensor([[1.0, 1, 0, 0]] * 2)
    actions = torch.tensor([[5, 0, 0, 5], [5, 5, 0, 0]])  # +0.4, -0.4, -0.4, +0.4 / ...
    p_prev = torch.tensor([[0.5] * 4, [0.9, 0.1, 0.1, 0.9]])
    p_next = (p_prev + torch.tensor(ACTION_VALUES, dtype=torch.float32)[actions]).clamp(0, 1)
    stats = step_diagnostics(
        step=torch.tensor([0, 1]), actions=actions, p_prev=p_prev, p_next=p_next, label=label,
        mask=torch.ones(2, 4), entropy=torch.full((2, 4), 0.5),
        conf_correct=torch.tensor([[1.0, 0, 1, 1], [1, 1, 1, 1]]), conf_mask=torch.ones(2, 4),
        confidence=torch.tensor([[0.9, 0.2, 0.8, 0.3], [0.6, 0.6, 0.6, 0.6]]),
    )
    assert stats["step0/action_share_+0.4"] == 0.5 and stats["step0/action_share_-0.4"] == 0.5
    assert sum(v for k, v in stats.items() if k.startswith("step1/action_share")) == pytest.approx(1.0)
    assert stats["step0/foreground_share"] == 0.5
    assert stats["step0/misunderstanding"] == 0.5  # voxels 1 (down on fg) and 3 (up on bg)
    assert stats["step0/mean_abs_dp"] == pytest.approx(0.4)
    # step 1: voxel 0 is clipped at 1.0 (not moved, not counted), voxel 1 up, voxel 2 down
    # (to 0), voxel 3 down: all moved voxels moved toward their label
    assert stats["step1/misunderstanding"] == 0.0
    assert stats["step0/confidence_accuracy"] == 0.75 and stats["step1/entropy"] == 0.5
    # the gate's skill: step 0's C > 0.5 exactly where the action helped (voxels 0 and 2);
    # step 1's constant C says nothing (and every moved voxel helped: no failure to rank)
    assert stats["step0/confidence_skill_accuracy"] == 1.0
    assert 0.0 < stats["step0/confidence_skill_brier"] < 1.0
    assert stats["step1/confidence_skill_accuracy"] == 0.0 and stats["step1/confidence_skill_brier"] == 0.0


def test_collapse_reasons():
    assert "all background" in collapse_reason(0.0, 1.0)
    assert "all foreground" in collapse_reason(1.0, 1.0)
    assert "entropy" in collapse_reason(0.12, 0.01)
    assert collapse_reason(0.12, 0.8) is None


def test_config_validates_schedules():
    from mecca_rllib import MECCAConfig

    with pytest.raises(ValueError, match="oracle_coeff schedule"):
        MECCAConfig().training(oracle_coeff=[[10, 1.0]]).validate()
    with pytest.raises(ValueError, match="multiple of the episode length"):
        MECCAConfig().environment(env_config={"steps": 5}).training(minibatch_size=7).validate()


@pytest.mark.slow
def test_oracle_schedule_class_balance_and_step_metrics_reach_the_results(caplog):
    import ray

    from mecca_rllib import MECCAConfig

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    config = (
        MECCAConfig()
        .environment("mecca_seg", env_config={"dataset": "synthetic", "shape": [8, 16, 16], "num_cases": 8,
                                              "steps": 3, "initial_clicks": 4, "clicks_per_step": 2})
        .rl_module(model_config={"width": 8, "dilations": [1, 2, 1, 2, 1], "conf_dilations": [1, 2, 1, 2, 1, 1]})
        .training(train_batch_size_per_learner=6, lr=3e-3, class_balanced=True,
                  oracle_coeff=[[0, 2.0], [12, 0.0]])
        .env_runners(num_envs_per_env_runner=2)
        .debugging(seed=0)
    )
    algo = config.build_algo()
    try:
        with caplog.at_level(logging.WARNING, logger="mecca_rllib.algorithm"):
            results = [algo.train() for _ in range(3)]
    finally:
        algo.stop()
        ray.shutdown()
    learner = [r["learners"]["default_policy"] for r in results]
    # the schedule is linear in the env steps sampled so far: 2.0 at 0, 0.0 from 12 on
    steps = [r["env_runners"]["num_env_steps_sampled_lifetime"] for r in results]
    expected = [max(0.0, 2.0 - 2.0 * s / 12) for s in steps]
    assert [float(x["oracle_coeff"]) for x in learner] == pytest.approx(expected)
    assert learner[0]["oracle_coeff"] > 0 and learner[-1]["oracle_coeff"] == 0.0
    assert np.isfinite(learner[0]["oracle_loss"])
    for t in range(3):
        shares = [learner[-1][f"step{t}/action_share_{v:+.1f}"] for v in ACTION_VALUES]
        assert sum(shares) == pytest.approx(1.0, abs=1e-5)
        assert 0.0 <= learner[-1][f"step{t}/misunderstanding"] <= 1.0
        assert 0.0 <= learner[-1][f"step{t}/confidence_accuracy"] <= 1.0
        assert 0.0 <= learner[-1][f"step{t}/confidence_skill_brier"] <= 1.0
    assert all(0.0 <= r["mecca"]["confidence_gate_skill"] <= 1.0 for r in results)
    collapsed = [r["mecca"]["collapsed"] for r in results]
    assert set(collapsed) <= {0.0, 1.0}
    warned = [rec for rec in caplog.records if "policy collapse" in rec.getMessage()]
    assert bool(warned) == any(collapsed)


def test_a_gate_that_stays_shut_is_reported_once(caplog):
    """The gate's skill is a result every iteration; shut (0) at every step until
    GATE_CHECK_ITERATION, the log says MECCA's reward is IteR-MRL's, scaled."""
    from types import SimpleNamespace

    from mecca_rllib import MECCAConfig
    from mecca_rllib.algorithm import GATE_CHECK_ITERATION, MECCA

    class Metrics:
        def __init__(self, skill):
            self.skill, self.logged = skill, {}

        def peek(self, key, default=None):
            return self.skill if key[-1].endswith("confidence_skill_accuracy") else default

        def log_value(self, key, value, window=None):
            self.logged[key] = value

    def run(skill, iterations, **training):
        fake = SimpleNamespace(config=MECCAConfig().environment(env_config={"steps": 3}).training(**training),
                               metrics=Metrics(skill), _gate_opened=False)  # as MECCA.setup leaves it
        with caplog.at_level(logging.WARNING, logger="mecca_rllib.algorithm"):
            caplog.clear()
            for fake.iteration in range(1, iterations + 1):
                MECCA._check_gate(fake, {"default_policy"})
        return fake.metrics.logged, [r for r in caplog.records if "gate has stayed shut" in r.getMessage()]

    logged, warned = run(0.0, GATE_CHECK_ITERATION + 5)
    assert logged[("mecca", "confidence_gate_skill")] == 0.0 and len(warned) == 1
    logged, warned = run(0.3, GATE_CHECK_ITERATION + 5)
    assert logged[("mecca", "confidence_gate_skill")] == pytest.approx(0.3) and not warned
    logged, warned = run(0.0, GATE_CHECK_ITERATION, confidence_gate=False)  # ungated: nothing to say
    assert not logged and not warned
    logged, warned = run(0.0, GATE_CHECK_ITERATION, reward_weighting="none")  # IteR-MRL: no gate
    assert not logged and not warned


def _benchmark_module(name: str):
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "benchmarks" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_step_flips_counts_fixed_broken_and_oscillating_voxels():
    """benchmarks/step_flips.py: a voxel that leaves its side and comes back is counted."""
    step_flips = _benchmark_module("step_flips")

    label = np.array([[[1, 1, 0, 0]]], np.uint8)  # (1, 1, 4)
    p = np.array([[0.5, 0.5, 0.5, 0.5],   # reset
                  [0.6, 0.4, 0.5, 0.5],   # step 1
                  [0.5, 0.6, 0.5, 0.5],   # step 2: voxel 0 breaks (from 0.6), voxel 1 fixed
                  [0.6, 0.6, 0.6, 0.5]],  # step 3: voxel 0 back (fixed), voxel 2 broken
                 np.float32).reshape(4, 1, 1, 4)
    rows = step_flips.flip_table([p], [label])
    assert [r["transition"] for r in rows] == ["1 -> 2", "2 -> 3"]
    assert rows[0]["fixed"] == 25 and rows[0]["broken"] == 25 and rows[0]["near_0.5"] == 100
    assert rows[0]["broken_fp"] == 0 and rows[1]["broken_fp"] == 100  # voxel 0 lost, voxel 2 gained
    assert rows[1]["fixed"] == 25 and rows[1]["broken"] == 25
    assert rows[1]["back"] == 50  # of voxels 0 and 1 (changed at 1 -> 2), voxel 0 returns
    # predicted / true foreground after steps 1-3: 1 of 2, 1 of 2, 3 of 2 (over-segmented)
    np.testing.assert_allclose(step_flips.foreground_ratio([p], [label]), [0.5, 0.5, 1.5])
    # % of voxels per tenth after steps 1-3: step 2 has two at 0.5 (background) and one at 0.6
    shares = step_flips.tenth_shares([p])
    assert shares.shape == (3, 11)
    np.testing.assert_allclose(shares[:, 4:7], [[25, 50, 25], [0, 75, 25], [0, 25, 75]])
    np.testing.assert_allclose(shares[:, 1::2].sum(1), [50, 75, 25])  # odd tenths: 0.5


# ---------------------------------------------------------------- side-of-0.5 reward terms

def test_side_terms_pay_for_fixes_and_charge_for_breaks_and_switches():
    from mecca_rllib.policies.reward_shaping import ShapingInputs, side_terms

    #            fixed  broken  stays right  stays wrong  right -> right (no side change)
    p_prev = torch.tensor([[0.5, 0.6, 0.9, 0.2, 0.7]])
    p_next = torch.tensor([[0.6, 0.5, 1.0, 0.1, 0.6]])
    label = torch.tensor([[1.0, 1.0, 1.0, 1.0, 1.0]])
    inputs = ShapingInputs(p_prev=p_prev, p_next=p_next, label=label)
    assert torch.equal(side_terms(inputs), torch.zeros(1, 5))  # both off: the paper's reward
    torch.testing.assert_close(side_terms(inputs, side_reward=2.0), torch.tensor([[2.0, -2.0, 0, 0, 0]]))
    torch.testing.assert_close(side_terms(inputs, switch_cost=0.5), torch.tensor([[-0.5, -0.5, 0, 0, 0]]))
    torch.testing.assert_close(side_terms(inputs, side_reward=1.0, switch_cost=0.5),
                               torch.tensor([[0.5, -1.5, 0, 0, 0]]))


def test_reward_shaping_adds_the_side_terms_before_the_returns():
    from mecca_rllib.policies.connectors import RewardShaping
    from mecca_rllib.policies.returns import discounted_returns
    from mecca_rllib.policies.reward_shaping import ShapingInputs, get_weighting, side_terms

    g = torch.Generator().manual_seed(0)
    t, n = 3, 40
    tenths = torch.randint(0, 11, (t + 1, n), generator=g)
    p = tenths / 10
    label = (torch.rand(n, generator=g) > 0.6).float().expand(t, n)
    common = dict(p_prev=p[:-1], p_next=p[1:], label=label, values=torch.zeros(t, n), confidence=None,
                  episode_id=torch.zeros(t, dtype=torch.long), mask=torch.ones(t, n))
    plain = RewardShaping(gamma=0.9, gae_lambda=None, weighting=get_weighting("none"), params={})
    shaped = RewardShaping(gamma=0.9, gae_lambda=None, weighting=get_weighting("none"), params={},
                           side_reward=1.0, switch_cost=0.25)
    _, base, _ = plain.targets(**common)
    _, targets, _ = shaped.targets(**common)
    extra = side_terms(ShapingInputs(p_prev=p[:-1], p_next=p[1:], label=label), 1.0, 0.25)
    assert extra.abs().sum() > 0  # the random states do cross 0.5
    torch.testing.assert_close(targets - base, discounted_returns(extra, 0.9))


def test_oracle_term_is_class_balanced_only_when_asked_and_the_dice_term_adds_its_loss():
    from ray.rllib.core.columns import Columns

    from mecca_rllib import MECCAConfig
    from mecca_rllib.envs import InteractiveSegEnv
    from mecca_rllib.policies.connectors import ADVANTAGES, LOSS_MASK, REWARD_LABELS, VALUE_TARGETS
    from mecca_rllib.policies.distribution import VoxelCategorical
    from mecca_rllib.policies.learner import (
        ORACLE_DOWN,
        ORACLE_UP,
        masked_mean,
        next_foreground_prob,
        soft_dice_loss,
    )

    shape, b = (2, 3, 4), 2
    n = int(np.prod(shape))
    torch.manual_seed(0)
    env = InteractiveSegEnv({"shape": shape, "num_cases": 2, "steps": 1, "initial_clicks": 0,
                             "clicks_per_step": 0, "hint_kernel": 1})
    config = (MECCAConfig().environment("mecca_seg", env_config={"shape": shape, "num_cases": 2, "steps": 1})
              .rl_module(model_config={"width": 4, "dilations": [1, 1, 1, 1, 1], "conf_dilations": [1] * 6})
              .training(class_balanced=True, oracle_coeff=1.0, oracle_target="max", entropy_coeff=0.0,
                        vf_loss_coeff=0.0))
    learner = config.build_learner(env=env)
    module = learner.module["default_policy"].unwrapped()
    g = torch.Generator().manual_seed(1)
    label = torch.zeros(b, n)
    label[:, :3] = 1.0  # 3 of 24 voxels are target: balance weighs them 4x the background
    batch = {Columns.OBS: torch.randn(b, 3, *shape, generator=g),
             Columns.ACTIONS: torch.randint(0, 6, (b, *shape), generator=g, dtype=torch.uint8),
             ADVANTAGES: torch.zeros(b, n), VALUE_TARGETS: torch.zeros(b, n), REWARD_LABELS: label,
             LOSS_MASK: torch.ones(b, n), "conf_targets": torch.zeros(b, n), "conf_loss_mask": torch.zeros(b, n)}
    with torch.no_grad():
        fwd = module.forward_train(batch)
        ce = -VoxelCategorical(fwd[Columns.ACTION_DIST_INPUTS]).logp(
            torch.where(label > 0.5, ORACLE_UP, ORACLE_DOWN))
        losses = {}
        for balanced in (True, False):
            cfg = config.copy(copy_frozen=False).training(oracle_balanced=balanced)
            losses[balanced] = learner.compute_loss_for_module(module_id="default_policy", config=cfg,
                                                               batch=batch, fwd_out=fwd)
        cfg = config.copy(copy_frozen=False).training(oracle_balanced=False, oracle_dice=2.0)
        with_dice = learner.compute_loss_for_module(module_id="default_policy", config=cfg,
                                                    batch=batch, fwd_out=fwd)
    weights = torch.where(label > 0, 0.5 / 0.125, 0.5 / 0.875)
    mask = torch.ones(b, n)
    torch.testing.assert_close(losses[True] - losses[False],
                               masked_mean(ce * weights, mask) - masked_mean(ce, mask))
    assert not torch.isclose(losses[True], losses[False])
    foreground = next_foreground_prob(fwd[Columns.ACTION_DIST_INPUTS], batch[Columns.OBS][:, 1].reshape(b, -1))
    torch.testing.assert_close(with_dice - losses[False], 2.0 * soft_dice_loss(foreground, label, mask))


def test_direction_oracle_scores_the_summed_probability_of_the_right_sign():
    from mecca_rllib import MECCAConfig
    from mecca_rllib.policies.learner import direction_logp

    logits = torch.randn(2, 6, 1, 2, 3, generator=torch.Generator().manual_seed(0))
    probs = torch.softmax(logits, dim=1).flatten(2)  # (B, 6, N)
    up = torch.tensor([[True, False, True, False, True, False]] * 2)
    positive = torch.from_numpy(ACTION_VALUES > 0)
    expected = torch.where(up, probs[:, positive].sum(1), probs[:, ~positive].sum(1)).log()
    torch.testing.assert_close(direction_logp(logits, up), expected)
    with pytest.raises(ValueError, match="oracle_target must be 'max' or 'direction'"):
        MECCAConfig().training(oracle_target="nearest").validate()


def test_side_terms_must_be_non_negative():
    from mecca_rllib import MECCAConfig

    for name in ("side_reward", "switch_cost"):
        with pytest.raises(ValueError, match=f"{name} must be a number >= 0"):
            MECCAConfig().training(**{name: -1.0}).validate()


def test_next_foreground_prob_sums_the_actions_that_end_above_one_half():
    from mecca_rllib.policies.learner import next_foreground_prob

    logits = torch.randn(1, 6, 1, 1, 4, generator=torch.Generator().manual_seed(0))
    probs = torch.softmax(logits, dim=1).flatten(2)[0]  # (6, N)
    p_prev = torch.tensor([[0.5, 0.4, 0.9, 1.0]])
    got = next_foreground_prob(logits, p_prev)[0]
    # 0.5: the three positive steps; 0.4: +0.2, +0.4 (0.4 + 0.1 = 0.5 is background);
    # 0.9: all but -0.4; 1.0: every action (1.0 - 0.4 = 0.6).
    expected = torch.stack([probs[3:, 0].sum(), probs[4:, 1].sum(), probs[1:, 2].sum(), probs[:, 3].sum()])
    torch.testing.assert_close(got, expected)


def test_soft_dice_loss_is_zero_for_the_label_and_skips_rows_without_voxels():
    from mecca_rllib import MECCAConfig
    from mecca_rllib.policies.learner import soft_dice_loss

    label = torch.tensor([[1.0, 1.0, 0.0, 0.0], [1.0, 0.0, 0.0, 0.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0, 1.0], [0.0, 0.0, 0.0, 0.0]])
    assert soft_dice_loss(label.clone(), label, mask, eps=0.0).item() == pytest.approx(0.0)
    wrong = torch.tensor([[0.0, 0.0, 1.0, 1.0], [1.0, 0.0, 0.0, 0.0]])
    assert soft_dice_loss(wrong, label, mask, eps=0.0).item() == pytest.approx(1.0)  # row 2 ignored
    half = torch.full((2, 4), 0.5)
    # Row 1: 2 * (0.5 + 0.5) / (2 + 2) = 0.5.
    assert soft_dice_loss(half, label, mask, eps=0.0).item() == pytest.approx(0.5)
    with pytest.raises(ValueError, match="oracle_dice must be >= 0"):
        MECCAConfig().training(oracle_dice=-0.1).validate()


def test_confidence_check_scores_the_judge_against_the_policy_and_vetoes():
    """benchmarks/confidence_check.py: C's accuracy as a judge of the chosen direction, the
    policy's own direction accuracy, and the veto that flips the distrusted actions."""
    check = _benchmark_module("confidence_check")
    label = np.array([1, 1, 0, 0])
    values = np.array([0.1, -0.2, -0.4, 0.1])           # toward, away, toward, away
    confidence = np.array([0.9, 0.8, 0.7, 0.2])         # judged good, good, good, bad
    conf_acc, policy_acc = check.direction_agreement(values, label, confidence)
    assert policy_acc == 0.5 and conf_acc == 0.75       # wrong only on voxel 1
    where = np.array([False, True, False, True])
    assert check.direction_agreement(values, label, confidence, where) == (0.5, 0.0)
    assert all(np.isnan(check.direction_agreement(values, label, confidence, np.zeros(4, bool))))
    actions = torch.tensor([0, 1, 2, 3, 4, 5])
    flipped = check.veto(actions, torch.tensor([0.1, 0.9, 0.4, 0.6, 0.0, 1.0]))
    assert flipped.tolist() == [5, 1, 3, 3, 1, 5]
    np.testing.assert_allclose(ACTION_VALUES[flipped.numpy()][[0, 2, 4]], -ACTION_VALUES[[0, 2, 4]])
    undecided = torch.tensor([False, True, True, True, True, False])  # veto undecided: only there
    confidence = torch.tensor([0.1, 0.9, 0.4, 0.6, 0.0, 1.0])
    assert check.veto(actions, confidence, undecided).tolist() == [0, 1, 3, 3, 1, 5]


def test_bench_validation_scripts_train_as_the_bench_with_their_seed_and_overrides():
    """benchmarks/_bench_validation.py: step_flips and confidence_check read mecca bench's
    --seed/--override/--env-steps and build the --small preset's settings from them."""
    import argparse
    import dataclasses

    from mecca_rllib.bench.run import SMALL

    helper = _benchmark_module("_bench_validation")
    parser = argparse.ArgumentParser()
    helper.add_bench_arguments(parser)
    args = parser.parse_args(["--seed", "3", "--override", "training.lr=0.001", "--env-steps", "200"])
    assert (args.seed, args.override, args.env_steps) == (3, ["training.lr=0.001"], 200)
    assert parser.parse_args([]).env_steps is None  # the bench's own budget
    settings = helper.bench_settings(args.seed, args.override)
    assert dataclasses.replace(settings, rl_lr=SMALL.settings.rl_lr) == dataclasses.replace(
        SMALL.settings, seed=3, device="cpu")
    assert settings.rl_lr == 0.001 != SMALL.settings.rl_lr  # the RL policy's lr (training.lr)
    with pytest.raises(ValueError, match="--override"):
        helper.bench_settings(0, ["protocol.repeats=2"])


def test_bench_validation_scripts_load_a_saved_module_in_eval_mode(tmp_path):
    """--load of confidence_check.py and guide_check.py: the state dict --save wrote, rebuilt
    for the --small preset, ready to play (eval mode), with no training."""
    from types import SimpleNamespace

    from mecca_rllib.bench.run import SMALL
    from mecca_rllib.policies.checkpoints import build_module

    helper = _benchmark_module("_bench_validation")
    settings = helper.bench_settings(0, [])
    torch.manual_seed(0)
    saved = build_module(settings.model_config(), SMALL.shape)
    torch.save(saved.state_dict(), tmp_path / "m.pt")
    data = SimpleNamespace(train=SimpleNamespace(shape=SMALL.shape))
    loaded = helper.load_or_train("confidence", data, settings, load=str(tmp_path / "m.pt"))
    assert not loaded.training
    for (name, a), b in zip(saved.state_dict().items(), loaded.state_dict().values()):
        assert torch.equal(a, b), name


def test_oracle_confidence_weighs_the_oracle_term_by_mecca_confidence_weight_only_for_mecca():
    from ray.rllib.core.columns import Columns

    from mecca_rllib import MECCAConfig
    from mecca_rllib.envs import InteractiveSegEnv
    from mecca_rllib.policies.connectors import (ADVANTAGES, EPISODE_STEP, LOSS_MASK, P_NEXT, REWARD_LABELS,
                                                 VALUE_TARGETS)
    from mecca_rllib.policies.learner import direction_logp, masked_mean
    from mecca_rllib.policies.rl_module import CONF_LOGITS

    shape, b = (2, 3, 4), 2
    n = int(np.prod(shape))
    env = InteractiveSegEnv({"shape": shape, "num_cases": 2, "steps": 1, "initial_clicks": 0,
                             "clicks_per_step": 0, "hint_kernel": 1})
    config = (MECCAConfig().environment("mecca_seg", env_config={"shape": shape, "num_cases": 2, "steps": 1})
              .rl_module(model_config={"width": 4, "dilations": [1, 1, 1, 1, 1], "conf_dilations": [1] * 6})
              .training(oracle_coeff=1.0, entropy_coeff=0.0, vf_loss_coeff=0.0, confidence_gate=False,
                        alpha=0.8, beta=2.0))
    torch.manual_seed(0)
    learner = config.build_learner(env=env)
    module = learner.module["default_policy"].unwrapped()
    g = torch.Generator().manual_seed(2)
    label = (torch.rand(b, n, generator=g) < 0.3).float()
    batch = {Columns.OBS: torch.randn(b, 3, *shape, generator=g),
             Columns.ACTIONS: torch.randint(0, 6, (b, *shape), generator=g, dtype=torch.uint8),
             P_NEXT: torch.rand(b, n, generator=g), ADVANTAGES: torch.zeros(b, n),
             VALUE_TARGETS: torch.zeros(b, n), REWARD_LABELS: label, LOSS_MASK: torch.ones(b, n),
             "conf_targets": torch.zeros(b, n), "conf_loss_mask": torch.zeros(b, n)}
    losses = {}
    with torch.no_grad():
        fwd = module.forward_train(batch)
        # An untrained confidence net says ~0.5 everywhere: give it opinions to weigh by.
        fwd[CONF_LOGITS] = 2.0 * torch.randn(fwd[CONF_LOGITS].shape, generator=g)
        for weighting in ("confidence", "none"):
            for on in (False, True, 0.25):
                cfg = config.copy(copy_frozen=False).training(reward_weighting=weighting, oracle_confidence=on)
                losses[weighting, on] = learner.compute_loss_for_module(
                    module_id="default_policy", config=cfg, batch=batch, fwd_out=fwd)
    ce = -direction_logp(fwd[Columns.ACTION_DIST_INPUTS], label > 0.5)
    c = torch.sigmoid(fwd[CONF_LOGITS].reshape(b, -1))
    w = 0.8 * (1 - c) ** 2  # Eq. 8's focal weight, no gate
    w = w / w.mean(1, keepdim=True)  # mean 1 per volume and step
    mask = torch.ones(b, n)
    torch.testing.assert_close(losses["confidence", True] - losses["confidence", False],
                               masked_mean(ce * w, mask) - masked_mean(ce, mask))
    assert not torch.isclose(losses["confidence", True], losses["confidence", False])
    partly = (1 - 0.25) + 0.25 * w  # a share goes part of the way from the uniform weight to w
    torch.testing.assert_close(losses["confidence", 0.25] - losses["confidence", False],
                               masked_mean(ce * partly, mask) - masked_mean(ce, mask))
    with pytest.raises(ValueError, match="oracle_confidence must be a bool or a share in"):
        config.copy(copy_frozen=False).training(oracle_confidence=1.5).validate()
    torch.testing.assert_close(losses["none", True], losses["none", False])  # IteR-MRL: no confidence
    # From step 1 on: row 0 (the first action) keeps the uniform weight, row 1 gets w.
    with torch.no_grad():
        cfg = config.copy(copy_frozen=False).training(reward_weighting="confidence", oracle_confidence=True,
                                                      oracle_confidence_from_step=1)
        later = learner.compute_loss_for_module(module_id="default_policy", config=cfg, fwd_out=fwd,
                                                batch={**batch, EPISODE_STEP: torch.tensor([0, 1])})
    from_step = torch.stack([torch.ones(n), w[1]])
    torch.testing.assert_close(later - losses["confidence", False],
                               masked_mean(ce * from_step, mask) - masked_mean(ce, mask))
    with pytest.raises(ValueError, match="oracle_confidence_from_step must be an int >= 0"):
        config.copy(copy_frozen=False).training(oracle_confidence_from_step=-1).validate()
