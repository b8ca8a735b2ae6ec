"""``mecca train``: presets, config files, overrides, and one tiny end-to-end run."""
import json

import pytest

from mecca_rllib import cli
from mecca_rllib.train import PRESETS, apply_override, build_algorithm_config, load_train_config


def test_presets_build_valid_algorithm_configs():
    for name in ("demo", "paper"):
        config = build_algorithm_config(load_train_config(name))
        config.validate()
        assert config.gamma == 0.95
    paper = build_algorithm_config(load_train_config("paper"))
    assert paper.env_config["shape"] == [30, 55, 55]
    assert paper.lr == 1e-4 and paper.alpha == 0.8 and paper.beta == 1.0
    assert paper.model_config["width"] == 16
    assert paper.model_config["shape"] == (30, 55, 55)  # recorded for inference


def test_overrides_parse_values_and_name_bad_keys():
    config = load_train_config("demo", ["training.lr=3e-4", "env_config.shape=[8,16,16]",
                                        "training.reward_weighting=none", "stop.training_iteration=2"])
    assert config["training"]["lr"] == 3e-4
    assert config["env_config"]["shape"] == [8, 16, 16]
    assert config["training"]["reward_weighting"] == "none"
    assert config["stop"]["training_iteration"] == 2
    assert PRESETS["demo"]["training"]["lr"] != 3e-4  # presets are not mutated
    with pytest.raises(ValueError, match="unknown section 'trainin'"):
        apply_override({}, "trainin.lr=1")
    with pytest.raises(ValueError, match="expected KEY=VALUE"):
        apply_override({}, "training.lr")


def test_config_files_json_and_errors(tmp_path):
    path = tmp_path / "c.json"
    path.write_text(json.dumps({"env_config": {"shape": [8, 16, 16]}, "training": {"lr": 0.01}}))
    assert load_train_config(str(path))["training"]["lr"] == 0.01
    (tmp_path / "bad.json").write_text(json.dumps({"env": {}}))
    with pytest.raises(ValueError, match=r"bad.json: unknown section\(s\) \['env'\]"):
        load_train_config(str(tmp_path / "bad.json"))
    with pytest.raises(ValueError, match="neither a preset"):
        load_train_config(str(tmp_path / "missing.json"))


def test_cli_has_train_subcommand():
    parser = cli.build_parser()
    args = parser.parse_args(["train", "--config", "paper", "--override", "training.lr=1e-3",
                              "--iterations", "3"])
    assert args.config == "paper" and args.override == ["training.lr=1e-3"] and args.iterations == 3


@pytest.mark.slow
def test_mecca_train_end_to_end_writes_checkpoint_table_and_plot(tmp_path, capsys):
    import ray

    config = {
        "env_config": {"dataset": "synthetic", "shape": [8, 16, 16], "num_cases": 4, "steps": 2,
                       "initial_clicks": 3, "clicks_per_step": 1, "hint_kernel": 3},
        "model_config": {"width": 8, "dilations": [1, 1, 1, 1, 1], "conf_dilations": [1, 1, 1, 1, 1, 1]},
        "training": {"train_batch_size_per_learner": 4},
        "evaluation": {"episodes": 2, "seed": 5},
    }
    path = tmp_path / "tiny.json"
    path.write_text(json.dumps(config))
    try:
        code = cli.main(["train", "--config", str(path), "--iterations", "1",
                         "--storage", str(tmp_path / "runs"), "--name", "tiny"])
    finally:
        ray.shutdown()
    assert code == 0
    out = capsys.readouterr().out
    assert "untrained" in out and "trained" in out and "step 2" in out
    pngs = list((tmp_path / "runs" / "tiny").glob("*/dice_per_step.png"))
    assert len(pngs) == 1 and pngs[0].stat().st_size > 1000
    assert list((tmp_path / "runs" / "tiny").glob("*/checkpoint_*"))
    saved = json.loads(next((tmp_path / "runs" / "tiny").glob("*/train_config.json")).read_text())
    assert saved["env_config"]["shape"] == [8, 16, 16]


def test_warm_start_kind_chooses_the_supervised_loop_and_its_channels(tmp_path):
    from mecca_rllib.policies.warm_start import load_warm_start
    from mecca_rllib.train import prepare_warm_start

    env = {"dataset": "synthetic", "shape": [8, 16, 16], "num_cases": 4, "steps": 2,
           "initial_clicks": 3, "clicks_per_step": 2, "hint_kernel": 3}
    config = {"env_config": env, "model_config": {"width": 8, "dilations": [1, 2, 1, 2, 1]},
              "training": {}, "warm_start": {"env_steps": 3, "kind": "deepigeos"}}
    warm = load_warm_start(prepare_warm_start(config, tmp_path / "w.pt")["training"]["init_from"])
    assert warm["channels"] == [0, 2] and warm["meta"]["kind"] == "deepigeos"  # image + hint, no p
    config["warm_start"]["kind"] = "unet"
    with pytest.raises(ValueError, match="intercnn"):
        prepare_warm_start(config, tmp_path / "bad.pt")
    assert not (tmp_path / "bad.pt").exists()
