"""tune_configs/ experiments and ``mecca tune`` (issue 7): every config builds, smoke-runs one
tiny trial, reports the shared metric, and an interrupted sweep resumes."""
from __future__ import annotations

import argparse
import itertools
import math

import pytest

from mecca_rllib.tune_cli import (
    available_configs,
    load_config_module,
    main_tune,
    register,
    resolve_config_path,
    tune_configs_dir,
)

CONFIGS = available_configs()
SWEEPS = ("alpha_beta_sweep", "threshold_sweep", "ppo_swap")


def _common() -> dict:
    """Namespace of tune_configs/_common.py (importable once a config module is loaded)."""
    load_config_module("alpha_beta_sweep")
    import _common

    return vars(_common)


def _num_trials(param_space: dict, num_samples: int) -> int:
    """Grid points (top level and env_config) times num_samples."""
    grids = [v["grid_search"] for v in param_space.values() if isinstance(v, dict) and "grid_search" in v]
    grids += [v["grid_search"] for v in (param_space.get("env_config") or {}).values()
              if isinstance(v, dict) and "grid_search" in v]
    return math.prod(len(g) for g in grids) * num_samples


def test_the_issue_configs_exist():
    assert {"alpha_beta_sweep", "threshold_sweep", "reward_ablation", "ppo_swap", "gpu_cluster"} <= set(CONFIGS)


@pytest.mark.parametrize("name", CONFIGS)
def test_smoke_experiment_is_tiny_and_cpu_only(name):
    module = load_config_module(name)
    assert "metric" in module.__doc__.lower() and "schedul" in module.__doc__.lower()
    _, space, tune_config, run_config = module.get_experiment(smoke=True)
    assert list(space["env_config"]["shape"]) == [8, 16, 16]
    assert space["num_env_runners"] == 0
    assert space["num_gpus_per_learner"] == 0 and space["num_learners"] == 0
    assert run_config.stop == {"training_iteration": 1}
    assert 1 <= _num_trials(space, tune_config.num_samples) <= 2
    assert tune_config.metric == _common()["METRIC"] and tune_config.mode == "max"


@pytest.mark.parametrize("name", CONFIGS)
def test_full_experiment_evaluates_on_held_out_volumes(name):
    _, space, tune_config, run_config = load_config_module(name).get_experiment()
    common = _common()
    assert space["evaluation_interval"] == common["EVAL_EVERY"]
    assert space["evaluation_config"]["env_config"]["split"] == "test"
    assert space["evaluation_config"]["explore"] is False
    # The last iteration is an evaluation iteration, so the final result carries the metric.
    assert run_config.stop["training_iteration"] % common["EVAL_EVERY"] == 0
    if name in SWEEPS:
        assert type(tune_config.scheduler).__name__ == "AsyncHyperBandScheduler"


def test_sweeps_cover_the_documented_grids():
    _, space, config, _ = load_config_module("alpha_beta_sweep").get_experiment()
    assert _num_trials(space, config.num_samples) == 18
    assert set(space["confidence_form"]["grid_search"]) == {"focal", "paper"}
    _, space, config, _ = load_config_module("reward_ablation").get_experiment()
    arms = space["reward_arm"]["grid_search"]
    assert len(arms) == 5 and len(set(arms)) == 5  # the five weightings of Fig. 9
    assert {a.split("/")[0] for a in arms} == {"none", "focal_prob", "error_region", "confidence"}


def test_gpu_settings_flow_from_the_config():
    _, space, _, _ = load_config_module("gpu_cluster").get_experiment(
        **{"learners.num_gpus_per_learner": 0.5, "learners.num_learners": 4}
    )
    assert space["num_gpus_per_learner"] == 0.5 and space["num_learners"] == 4
    _, space, _, _ = load_config_module("alpha_beta_sweep").get_experiment(
        **{"learners.num_gpus_per_learner": 0.25}
    )
    assert space["num_gpus_per_learner"] == 0.25


def test_override_fixes_a_swept_key_and_bad_keys_fail():
    _, space, _, _ = load_config_module("alpha_beta_sweep").get_experiment(**{"training.alpha": 0.5})
    assert space["alpha"] == 0.5 and "grid_search" in space["beta"]
    with pytest.raises(ValueError, match="unknown section 'trainin'"):
        load_config_module("alpha_beta_sweep").get_experiment(**{"trainin.alpha": 0.5})


def test_config_resolution_by_name_and_path(tmp_path):
    assert resolve_config_path("ppo_swap") == tune_configs_dir() / "ppo_swap.py"
    assert resolve_config_path(str(tune_configs_dir() / "ppo_swap.py")) == tune_configs_dir() / "ppo_swap.py"
    with pytest.raises(ValueError, match="not one of"):
        resolve_config_path("no_such_sweep")
    bad = tmp_path / "bad.py"
    bad.write_text("X = 1\n")
    with pytest.raises(ValueError, match="get_experiment"):
        load_config_module(str(bad))


def test_cli_parses_the_documented_options():
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["tune", "ppo_swap", "--override", "training.lr=1e-3", "--override",
                              "seed=3", "--storage", "/tmp/x", "--resume", "--smoke"])
    assert (args.config, args.override, args.storage, args.resume, args.smoke) == (
        "ppo_swap", ["training.lr=1e-3", "seed=3"], "/tmp/x", True, True)
    assert callable(args.func)


# ------------------------------------------------------------------------------ runs

@pytest.fixture(scope="module")
def ray_local():
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, ignore_reinit_error=True)
    yield
    ray.shutdown()


@pytest.mark.slow
@pytest.mark.parametrize("name", CONFIGS)
def test_smoke_run_reports_the_metric(name, ray_local, tmp_path, capsys):
    results = main_tune(name, smoke=True, storage=str(tmp_path), progress=False)
    assert 1 <= len(results) <= 2
    metric = _common()["METRIC"]
    for result in results:
        assert result.error is None
        assert result.metrics["training_iteration"] == 1
        assert 0.0 <= result.metrics_dataframe[metric].iloc[-1] <= 1.0
        assert result.checkpoint is not None
    out = capsys.readouterr().out
    assert f"best {metric} = " in out and "best config:" in out
    assert (tmp_path / results[0].path.split("/")[-2]).is_dir()


@pytest.mark.slow
def test_resume_restores_the_interrupted_sweep(ray_local, tmp_path):
    first = main_tune("alpha_beta_sweep", smoke=True, storage=str(tmp_path), progress=False,
                      overrides=["training.lr=1e-3"])
    resumed = main_tune("alpha_beta_sweep", smoke=True, storage=str(tmp_path), progress=False,
                        resume=True)
    assert sorted(r.path for r in resumed) == sorted(r.path for r in first)
    assert all(r.config["lr"] == 1e-3 for r in resumed)  # the stored config, not a new one
    with pytest.raises(ValueError, match="no Tune experiment"):
        main_tune("ppo_swap", smoke=True, storage=str(tmp_path / "empty"), resume=True)


def test_smoke_limits_combined_grids():
    smoke_search = _common()["_smoke_search"]
    from ray import tune

    search = {"a": tune.grid_search([1, 2, 3]), "b": tune.grid_search([4, 5]), "c": tune.uniform(0, 1)}
    out, samples = smoke_search(search, 10)
    sizes = [len(v["grid_search"]) for v in out.values() if isinstance(v, dict) and "grid_search" in v]
    assert math.prod(sizes) * samples <= 2
    assert out["c"] is search["c"]
    assert list(itertools.chain(out["a"]["grid_search"], out["b"]["grid_search"])) == [1, 2, 4]


def test_swept_keys_land_where_rllib_reads_them():
    from ray import tune

    from mecca_rllib.algorithm import MECCAConfig

    common = _common()
    search = {"model_config.width": tune.grid_search([8, 16]), "env_config.steps": tune.grid_search([3]),
              "training.alpha": tune.grid_search([0.3])}
    _, space, _, _ = common["make_experiment"]("x", train_config=common["base_train_config"](), search=search)
    from ray.tune.search.variant_generator import generate_variants

    # Tune's own resolution of the first grid point, then RLlib's config from the trial dict.
    _, resolved = next(generate_variants(space))
    config = MECCAConfig().update_from_dict(resolved)
    assert (config.model_config["width"], config.env_config["steps"], config.alpha) == (8, 3, 0.3)
    assert config.model_config["dilations"] == common["base_train_config"]()["model_config"]["dilations"]
