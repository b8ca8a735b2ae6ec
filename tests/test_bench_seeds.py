"""``mecca bench --seed`` / ``--test-dataset`` / ``--combine`` / ``--merge``: runs that differ
in the training seed become one mean ± std report; one run takes rows from another."""
from __future__ import annotations

import json

import numpy as np
import pytest

from mecca_rllib.bench.datasets import open_bench_data, open_test_data
from mecca_rllib.bench.protocol import MethodResult
from mecca_rllib.bench.report import write_report
from mecca_rllib.bench.seeds import combine_seeds, paired_margins, summarize_seeds

from test_bench_run import parse, run_cli

STEPS, CASES, REPEATS = 3, 2, 2


def _result(name: str, final: float, rise: float = 0.02) -> MethodResult:
    curve = np.array([0.0, *(final - rise * (STEPS - 1 - t) for t in range(STEPS))])
    dice = np.broadcast_to(curve, (REPEATS, CASES, STEPS + 1)).copy()
    zeros = np.zeros((REPEATS, CASES, STEPS))
    return MethodResult(name, ["a", "b"], dice, zeros + 1.0, zeros, zeros, zeros,
                        training={"env_steps": 100})


def _run(tmp_path, seed: int, finals: dict[str, float], **meta) -> str:
    out = tmp_path / f"seed{seed}"
    results = [_result(name, value) for name, value in finals.items()]
    write_report(results, out, {"title": "t", "seed": seed, "budget": "100 environment steps",
                                "dataset": "phantoms", "protocol": "T = 3", **meta})
    return str(out)


def test_seeds_combine_into_mean_and_std_with_the_checks(tmp_path):
    runs = [_run(tmp_path, s, {"DeepIGeoS": 0.85, "IteR-MRL": 0.70 + 0.01 * s, "MECCA": m})
            for s, m in ((0, 0.82), (1, 0.84), (2, 0.0))]
    summaries, metas = summarize_seeds(runs)
    mecca = next(s for s in summaries if s.name == "MECCA")
    assert mecca.seeds == [0, 1, 2] and mecca.empty_seeds == [2]
    np.testing.assert_allclose(mecca.final, [82.0, 84.0, 0.0])
    report = combine_seeds(runs, tmp_path / "combined")
    text = report.read_text()
    assert f"| MECCA | {np.mean([82, 84, 0]):.2f} ± {np.std([82, 84, 0], ddof=1):.2f} |" in text
    assert "MECCA seed(s) [2]" in text  # the collapsed seed is named
    assert "IteR-MRL: -" in text and "missed" in text
    assert (tmp_path / "combined" / "dice_per_step_seeds.png").stat().st_size > 1000


def test_combine_refuses_runs_that_are_not_seeds_of_one_setting(tmp_path):
    a = _run(tmp_path, 0, {"MECCA": 0.8})
    with pytest.raises(ValueError, match="repeat a training seed"):
        summarize_seeds([a, a])
    b = _run(tmp_path, 1, {"MECCA": 0.8}, budget="200 environment steps")
    with pytest.raises(ValueError, match="differ in budget"):
        summarize_seeds([a, b])
    with pytest.raises(ValueError, match="results.json: not found"):
        summarize_seeds([tmp_path / "nothing"])
    old = tmp_path / "old"
    old.mkdir()
    (old / "results.json").write_text(json.dumps({"meta": {}, "results": []}))
    with pytest.raises(ValueError, match="meta.seed is missing"):
        summarize_seeds([old])


def test_seed_and_test_dataset_reach_the_benchmark(monkeypatch, tmp_path):
    config = run_cli(monkeypatch, "--small", "--seed", "2", "--test-dataset", str(tmp_path))
    assert config.settings.seed == 2 and config.data_seed == 0  # the data stays fixed
    assert config.test_dataset == str(tmp_path)
    assert config.describe()["seed"] == "training seed 2, data seed 0"


def test_test_dataset_replaces_the_test_split_only():
    data = open_bench_data("phantoms", (8, 16, 16), num_train=3, num_test=2)
    other = open_test_data("phantoms", (8, 16, 16), seed=5, num_test=4)
    moved = data.with_test(other)
    assert moved.train is data.train and len(moved.test) == 4
    rng = np.random.default_rng(0)
    assert not np.array_equal(moved.test.get(0, rng)[0], data.test.get(0, rng)[0])
    assert "tested on" in moved.description


def test_merge_keeps_the_donor_rows_of_one_seed_and_names_the_donor(tmp_path):
    new = _run(tmp_path / "new", 0, {"IteR-MRL": 0.80, "MECCA": 0.90}, command="mecca bench new")
    old = _run(tmp_path / "old", 0, {"DeepIGeoS": 0.85, "IteR-MRL": 0.70, "MECCA": 0.75},
               command="mecca bench old", commit="abc1234")
    out = tmp_path / "merged"

    def merge(*argv):
        args = parse("--merge", *argv, "--out", str(out))
        assert args.func(args) == 0

    merge(new, old, "--methods", "DeepIGeoS")
    data = json.loads((out / "results.json").read_text())
    finals = {r["name"]: r["dice"][0][0][-1] for r in data["results"]}
    assert finals == pytest.approx({"DeepIGeoS": 0.85, "IteR-MRL": 0.80, "MECCA": 0.90})
    assert [r["name"] for r in data["results"]] == ["DeepIGeoS", "IteR-MRL", "MECCA"]
    assert "mecca bench new" in data["meta"]["command"] and "`mecca bench old` (abc1234)" in data["meta"]["command"]
    other_seed = _run(tmp_path / "other", 1, {"DeepIGeoS": 0.85})
    with pytest.raises(ValueError, match="differ in seed"):
        merge(new, other_seed, "--methods", "DeepIGeoS")
    with pytest.raises(ValueError, match="has no method 'InterCNN'"):
        merge(new, old, "--methods", "InterCNN")


def test_the_margin_over_iter_mrl_is_paired_per_episode_and_given_with_its_seed_spread(tmp_path):
    """Per seed, MECCA - IteR-MRL compares the same test episodes; across seeds the report gives
    the spread and a 95 % interval, so a margin inside the seed noise reads as such."""
    runs = []
    for seed, shift in ((0, 2.0), (1, 0.0)):
        iter_mrl, mecca = _result("IteR-MRL", 0.70), _result("MECCA", 0.70)
        mecca.dice[0, :, -1] += shift / 100  # ahead by `shift` points on repeat 0's episodes only
        out = tmp_path / f"seed{seed}"
        write_report([iter_mrl, mecca], out, {"title": "t", "seed": seed, "budget": "b",
                                               "dataset": "phantoms", "protocol": "T = 3"})
        runs.append(str(out))
    summaries, _ = summarize_seeds(runs)
    by = {s.name: s for s in summaries}
    margins = paired_margins(by["MECCA"], by["IteR-MRL"])
    assert [m.seed for m in margins] == [0, 1]
    episodes = REPEATS * CASES
    diffs = np.array([2.0] * CASES + [0.0] * (episodes - CASES))
    assert margins[0].mean == pytest.approx(diffs.mean())
    assert margins[0].sem == pytest.approx(diffs.std(ddof=1) / np.sqrt(episodes))
    assert margins[0].ahead == pytest.approx(CASES / episodes) and margins[0].episodes == episodes
    assert margins[1].mean == pytest.approx(0.0) and margins[1].ahead == 0.0
    text = combine_seeds(runs, tmp_path / "combined").read_text()
    assert "| 0 | +1.00 ± 0.58 | 50 % of 4 |" in text
    assert "Across 2 seeds: +0.50 (sd 0.71 over seeds; 95 % interval -5.85 to +6.85)" in text
    by["IteR-MRL"].cases[1] = ["other", "cases"]  # seed 1 played other episodes: not paired
    assert [m.seed for m in paired_margins(by["MECCA"], by["IteR-MRL"])] == [0]
