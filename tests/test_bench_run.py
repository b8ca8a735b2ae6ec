"""``mecca bench``: the command line and a miniature end-to-end benchmark."""
import argparse
import dataclasses
import re
from types import SimpleNamespace

import pytest
import torch

from mecca_rllib.baselines import ClickSchedule
from mecca_rllib.bench import commands
from mecca_rllib.budget import Budget
from mecca_rllib.bench.methods import TrainSettings, method_names, select_methods
from mecca_rllib.bench.protocol import Protocol
from mecca_rllib.bench.report import load_results
from mecca_rllib.bench.run import FULL, QUICK, SMALL, run_bench

SCHEDULE = ClickSchedule(steps=3, initial_clicks=4, clicks_per_step=2, hint_kernel=3)


def parse(*argv):
    parser = argparse.ArgumentParser(prog="mecca")
    commands.register(parser.add_subparsers(dest="command"))
    return parser.parse_args(["bench", *argv])


def run_cli(monkeypatch, *argv):
    seen = {}
    monkeypatch.setattr("mecca_rllib.bench.run.run_bench",
                        lambda config, **kw: seen.setdefault("config", config))
    args = parse(*argv)
    assert args.func(args) == 0
    return seen["config"]


def test_cli_options_reach_the_benchmark(monkeypatch, tmp_path):
    config = run_cli(monkeypatch, "--quick", "--out", str(tmp_path), "--dataset", "atlas",
                     "--repeats", "2", "--methods", "P-Net,MECCA", "--no-guided",
                     "--device", "cpu", "--cache-dir", str(tmp_path / "cache"))
    assert config.shape == QUICK.shape and config.budget == QUICK.budget
    assert (config.dataset, config.out, config.protocol.repeats) == ("atlas", tmp_path, 2)
    assert config.methods == ("P-Net", "MECCA") and not config.guided
    assert config.settings.device == "cpu" and config.cache_dir == tmp_path / "cache"
    config = run_cli(monkeypatch, "--budget", "5000steps", "--shape", "12x24x24")
    assert config.budget == Budget("env_steps", 5000) and config.shape == (12, 24, 24)
    assert config.protocol == FULL.protocol and config.dataset == "phantoms"
    config = run_cli(monkeypatch, "--small", "--repeats", "3")
    assert config.budget == Budget("env_steps", 8000) and config.shape == SMALL.shape
    assert config.settings.lr == SMALL.settings.lr and config.protocol.repeats == 3
    assert config.protocol.schedule == SMALL.protocol.schedule  # the small hint kernel is kept
    config = run_cli(monkeypatch, "--small", "--advice-mode", "first", "--readout", "threshold")
    assert config.protocol.schedule == dataclasses.replace(
        SMALL.protocol.schedule, advice_mode="first", readout="threshold")
    assert config.settings.schedule.readout == "threshold"  # training reads p as the test does
    with pytest.raises(ValueError, match="--quick and --small"):
        run_cli(monkeypatch, "--quick", "--small")


def test_overrides_change_the_preset_the_small_bench_trains_with(monkeypatch):
    config = run_cli(monkeypatch, "--small", "--seed", "3", "--override", "training.lr=5e-4",
                     "--override", "training.oracle_dice=0", "--override", "warm_start.env_steps=1000",
                     "--override", "warm_start.kind=intercnn", "--override", "warm_start.lr=1e-3")
    settings = config.settings
    assert settings.rl_lr == 5e-4 and settings.rl_training["oracle_dice"] == 0
    assert settings.rl_warm_start == 0.25 and settings.rl_warm_start_kind == "intercnn"  # 1,000 of the demo's 4,000 RL steps
    assert settings.rl_warm_start_lr == 1e-3 and SMALL.settings.rl_warm_start_lr == 3e-3
    assert settings.seed == 3 and settings.lr == SMALL.settings.lr  # the rest stays
    assert SMALL.settings.rl_lr != 5e-4  # the preset itself is not changed
    # every model_config key reaches the RL module, not only the ones TrainSettings names
    model = run_cli(monkeypatch, "--small", "--override", "model_config.conf_signed=true",
                    "--override", "model_config.keep_side=0.5").settings.model_config()
    assert model["conf_signed"] is True and model["keep_side"] == 0.5
    assert "conf_signed" not in SMALL.settings.model_config()
    with pytest.raises(ValueError, match="env_config"):
        run_cli(monkeypatch, "--small", "--override", "env_config.shape=[8,16,16]")
    augmented = run_cli(monkeypatch, "--small", "--override", "env_config.augment=true")
    assert augmented.settings.augment and not SMALL.settings.augment
    assert "training cases augmented" in augmented.describe()["settings"]
    with pytest.raises(ValueError, match="--quick and --small"):
        run_cli(monkeypatch, "--override", "training.lr=5e-4")


def test_the_small_bench_takes_lr_and_entropy_schedules_and_states_them(monkeypatch):
    config = run_cli(monkeypatch, "--small", "--override", "training.lr=[[0, 2e-3], [1600, 2e-4]]",
                     "--override", "training.entropy_coeff=[[0, 0.01], [1600, 0.0]]")
    settings = config.settings
    assert settings.rl_lr == [[0, 2e-3], [1600, 2e-4]]
    assert settings.entropy_coeff == [[0, 0.01], [1600, 0.0]]
    assert "RL policy 0.002 -> 0.0002 over 1,600 RL env steps" in config.describe()["settings"]

@pytest.mark.parametrize("augment", [False, True])
def test_every_method_trains_on_the_same_cases_augmented_or_not(monkeypatch, tmp_path, augment):
    from mecca_rllib.bench.methods import MethodSpec
    from mecca_rllib.data import AugmentedSource

    seen = []

    class Stop(Exception):
        pass

    def train(source, budget, settings):
        seen.append(source)
        return SimpleNamespace(spent={}, segmenter=None)

    def evaluate(*args, **kwargs):
        if len(seen) == 2:
            raise Stop  # both trained: no need to evaluate or report
        return SimpleNamespace()

    specs = [MethodSpec("A", "supervised", train), MethodSpec("B", "supervised", train)]
    monkeypatch.setattr("mecca_rllib.bench.run.select_methods", lambda names: specs)
    monkeypatch.setattr("mecca_rllib.bench.run.evaluate_method", evaluate)
    config = QUICK.replace(shape=(8, 16, 16), num_train=3, num_test=2, out=tmp_path,
                           settings=dataclasses.replace(QUICK.settings, augment=augment))
    with pytest.raises(Stop):
        run_bench(config, progress=False, log=lambda s: None)
    assert seen[0] is seen[1] and isinstance(seen[0], AugmentedSource) == augment


@pytest.mark.parametrize("argv", [["--repeats", "0"], ["--shape", "16x32"]])
def test_cli_rejects_bad_values(argv, capsys):
    with pytest.raises(SystemExit):
        parse(*argv)
    assert argv[0] in capsys.readouterr().err


def test_method_selection_names_the_unknown():
    assert [m.name for m in select_methods(["mecca", "P-Net"])] == ["P-Net", "MECCA"]
    with pytest.raises(ValueError, match="U-Net"):
        select_methods(["U-Net"])
    assert method_names()[:3] == ["P-Net", "DeepIGeoS", "InterCNN"]


@pytest.mark.slow
def test_miniature_bench_reports_every_method_and_step(tmp_path):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        config = QUICK.replace(
            shape=(8, 16, 16), num_train=3, num_test=2, budget=Budget("env_steps", 6),
            settings=TrainSettings(width=16, dilations=(1, 2, 1, 2, 1),
                                   conf_dilations=(1, 2, 1, 2, 1, 1), lr=1e-3,
                                   schedule=SCHEDULE, rl_batch_env_steps=6),
            protocol=Protocol(schedule=SCHEDULE, repeats=1), out=tmp_path)
        path = run_bench(config, command="mecca bench (test)", progress=False, log=lambda s: None)
    finally:
        torch.set_num_threads(threads)
    text = path.read_text()
    expected = [*method_names(), "MECCA (guided)"]
    for heading in ("Table 1", "Table 2", "Misunderstanding", "NoC@85", "Table 6"):
        body = text[text.index(heading):]
        body = body[: re.search(r"\n## |\n### |$", body[1:]).start() + 1]
        for name in expected:
            assert re.search(rf"\| {re.escape(name)} \| \d", body), (heading, name)
    table2 = text[text.index("Table 2"):text.index("### ASSD")]
    assert "| step 1 | step 2 | step 3 |" in table2
    assert (tmp_path / "dice_per_step.png").exists() and (tmp_path / "reward_ablation.png").exists()
    results, meta = load_results(tmp_path / "results.json")
    assert meta["budget"] == "6 environment steps per method"
    for r in results:  # every method was held to the same budget
        assert 6 <= r.training["env_steps"] < 6 + SCHEDULE.steps * 2, r.name
    gated = {r.name for r in results if "gate_skill_mean" in r.training}  # did the confidence act?
    assert gated == {"MECCA", "MECCA (guided)"}
    assert all(0 <= r.training["gate_open_share"] <= 1 for r in results if r.name in gated)
