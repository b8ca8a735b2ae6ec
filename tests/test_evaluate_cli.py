"""``mecca evaluate``: the per-step table on a tiny checkpoint, CSV/PNG output, summary maths."""
from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

from mecca_rllib.cli import main
from mecca_rllib.evaluation import EpisodeTrace
from mecca_rllib.bench.report import format_summary, summarize

NET_SHAPE = (8, 16, 16)
FAST = ["--num-cases", "2", "--repeats", "2", "--steps", "2", "--initial-clicks", "6",
        "--clicks-per-step", "2", "--no-progress"]  # fmt: skip


@pytest.fixture(scope="module")
def checkpoint(tiny_checkpoint) -> Path:
    return tiny_checkpoint


def test_evaluate_prints_the_per_step_table_and_writes_csv_and_plot(checkpoint, tmp_path, capsys):
    out = tmp_path / "eval"
    rc = main(["evaluate", "--checkpoint", str(checkpoint), "--data", "synthetic", *FAST, "--out", str(out)])
    assert rc == 0
    text = capsys.readouterr().out
    assert "2 case(s) x 2 repeat(s)" in text
    table = [line.split() for line in text.splitlines() if line[:4].strip().isdigit()]
    assert [row[0] for row in table] == ["0", "1", "2"]  # step 0 (before any action) .. T
    for row in table:
        assert 0.0 <= float(row[1]) <= 100.0 and row[2] == "+/-"
    assert "NoC@85" in text and "NoC@90" in text and "time per interaction: policy" in text

    with open(out / "per_step.csv") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["step"]) for r in rows] == [0, 1, 2]
    assert rows[0]["misunderstanding_mean"] == "nan" and 0 <= float(rows[1]["misunderstanding_mean"]) <= 1
    with open(out / "episodes.csv") as f:
        episodes = list(csv.DictReader(f))
    assert len(episodes) == 4  # 2 cases x 2 repeats
    # The table's step-2 Dice is the mean over the episodes in episodes.csv.
    mean = np.mean([float(e["dice_2"]) for e in episodes])
    assert float(table[2][1]) == pytest.approx(100 * mean, abs=0.006)
    assert (out / "dice_per_step.png").read_bytes()[:4] == b"\x89PNG"


def test_evaluate_guided_reports_guide_time(checkpoint, capsys):
    rc = main(["evaluate", "--checkpoint", str(checkpoint), "--data", "synthetic", *FAST, "--guided"])
    assert rc == 0
    text = capsys.readouterr().out
    assert "guided clicks" in text and ", guide " in text
    rc = main(["evaluate", "--checkpoint", str(checkpoint), "--data", "synthetic", *FAST, "--guided",
               "--advice-mode", "first"])
    assert rc == 0 and "guided clicks (advice first)" in capsys.readouterr().out


def test_evaluate_bad_input(checkpoint, tmp_path, capsys):
    rc = main(["evaluate", "--checkpoint", str(tmp_path), "--data", "synthetic", *FAST])
    assert rc == 2 and "not a MECCA checkpoint" in capsys.readouterr().err
    rc = main(["evaluate", "--checkpoint", str(checkpoint), "--data", str(tmp_path / "nope"), *FAST])
    assert rc == 2 and "nope" in capsys.readouterr().err
    rc = main(["evaluate", "--checkpoint", str(checkpoint), "--data", "synthetic", *FAST, "--repeats", "0"])
    assert rc == 2 and "--repeats" in capsys.readouterr().err


def trace(dice, probabilities, label) -> EpisodeTrace:
    return EpisodeTrace(
        case="c", label=label, probabilities=np.asarray(probabilities, np.float32),
        segmentations=np.asarray(probabilities) > 0.5, dice=np.asarray(dice), clicks=np.zeros((0, 3), int), policy_ms=np.array([10.0, 30.0]),
    )  # fmt: skip


def test_summary_statistics_by_hand():
    label = np.zeros((4, 4, 4), np.uint8)
    label[1:3, 1:3, 1:3] = 1
    up, down = np.where(label, 0.9, 0.1), np.where(label, 0.1, 0.9)  # right / all wrong
    half = np.full(label.shape, 0.5)
    traces = [
        trace([0.2, 0.8, 0.9], [half, half, up], label),  # step 1: p unchanged, step 2: all right
        trace([0.2, 0.86, 0.95], [half, down, up], label),  # step 1: every voxel moved wrongly
    ]
    summary = summarize(traces, guide_ms=[1.0, 3.0])
    assert summary.episodes == 2
    s1, s2 = summary.steps[1], summary.steps[2]
    assert s1.dice_mean == pytest.approx(0.83) and s1.dice_std == pytest.approx(0.03)
    assert s2.dice_mean == pytest.approx(0.925)
    # Misunderstanding: trace 1 step 1 none, trace 2 step 1 all; step 2: none / all move right.
    assert s1.misunderstanding_mean == pytest.approx(0.5)
    assert s2.misunderstanding_mean == pytest.approx(0.0)
    # ASSD: p = 0.5 is not > 0.5, an empty prediction has no surface -> left out and counted.
    assert summary.steps[0].assd_undefined == 2 and np.isnan(summary.steps[0].assd_mean)
    assert s2.assd_mean == 0.0 and s2.assd_undefined == 0
    # NoC: trace 1 reaches 0.85 at step 2, trace 2 at step 1; 0.90 at step 2 / step 2.
    assert summary.noc85 == pytest.approx((1.5, 0.5))
    assert summary.noc90 == pytest.approx((2.0, 0.0))
    assert summary.policy_ms == pytest.approx((20.0, 10.0))
    assert summary.guide_ms == pytest.approx((2.0, 1.0))
    text = format_summary(summary)
    assert "83.00 +/-  3.00" in text and "(2 empty)" in text and "guide 2.0" in text


def test_evaluate_on_a_folder_and_a_cache_of_another_shape(checkpoint, tmp_path, capsys):
    from mecca_rllib.data.cache import build_cache
    from mecca_rllib.data.phantoms import write_phantom_folder

    folder = write_phantom_folder(tmp_path / "phantoms", 3, shape=(10, 18, 18), seed=1)
    rc = main(["evaluate", "--checkpoint", str(checkpoint), "--data", str(folder), "--split", "all", *FAST])
    assert rc == 0 and "3 case(s) x 2 repeat(s), shape (8, 16, 16)" in capsys.readouterr().out
    cache = build_cache(folder, tmp_path / "cache", shape=(6, 12, 12), variants=1)
    rc = main(["evaluate", "--checkpoint", str(checkpoint), "--data", str(cache), *FAST])
    err = capsys.readouterr().err
    assert rc == 2 and "(6, 12, 12)" in err and "(8, 16, 16)" in err


def test_evaluate_and_the_benchmark_protocol_give_identical_dice(checkpoint, tmp_path, capsys):
    """``mecca evaluate`` is the benchmark's protocol: same checkpoint and seed, same Dice."""
    from mecca_rllib.baselines import ClickSchedule, ModuleSegmenter
    from mecca_rllib.bench.protocol import Protocol, evaluate_method
    from mecca_rllib.data import open_source
    from mecca_rllib.policies.checkpoints import load_rl_module, training_hint_kernel

    out = tmp_path / "eval"
    args = ["evaluate", "--checkpoint", str(checkpoint), "--data", "synthetic", *FAST, "--seed", "7"]
    assert main([*args, "--out", str(out)]) == 0
    with open(out / "per_step.csv") as f:
        cli_means = [float(r["dice_mean"]) for r in csv.DictReader(f)]
    with open(out / "episodes.csv") as f:
        episodes = list(csv.DictReader(f))
    cli_dice = np.array([[float(e[f"dice_{t}"]) for t in range(3)] for e in episodes])

    module = load_rl_module(checkpoint)
    source = open_source("synthetic", NET_SHAPE, split="test", num_cases=2, seed=0)
    schedule = ClickSchedule(steps=2, initial_clicks=6, clicks_per_step=2,
                             hint_kernel=training_hint_kernel(module))
    result = evaluate_method(ModuleSegmenter(module), source, Protocol(schedule, repeats=2, seed=7))
    bench_dice = result.dice.reshape(-1, 3)  # (repeat, case) order, as episodes.csv
    assert cli_means == [float(m) for m in bench_dice.mean(axis=0)]  # per-step Dice, exactly
    np.testing.assert_allclose(cli_dice, bench_dice, rtol=0, atol=5e-7)  # per episode (6 digits)
    assert [e["case"] for e in episodes] == [*result.cases, *result.cases]
    # Another seed gives other clicks: the seed is the protocol's.
    other = evaluate_method(ModuleSegmenter(module), source, Protocol(schedule, repeats=2, seed=8))
    assert not np.array_equal(other.dice, result.dice)
