"""``mecca tune``: run a Ray Tune experiment defined in ``tune_configs/``.

    mecca tune alpha_beta_sweep --storage /shared/sweeps
    mecca tune ppo_swap --smoke                       # 8x16x16, <= 2 trials, 1 iteration, CPU
    mecca tune tune_configs/gpu_cluster.py --override learners.num_gpus_per_learner=0.5
    mecca tune alpha_beta_sweep --storage /shared/sweeps --resume

CONFIG is a file path or a bare name of a module in ``tune_configs/``. The folder is found
next to the package (a source checkout or an editable install) or through the
``MECCA_TUNE_CONFIGS`` environment variable; modules are loaded by path with importlib, so
``tune_configs`` needs no installation as a package. Each module exposes
``get_experiment(smoke=False, **overrides) -> (trainable, param_space, tune_config,
run_config)`` (see ``tune_configs/_common.py``). ``--override section.key=value`` uses the
syntax of ``mecca train``. Results go to ``STORAGE/NAME``; the best trial's config and
metric are printed at the end. ``--resume`` continues an interrupted sweep from
``STORAGE/NAME`` with ``Tuner.restore`` (unfinished and errored trials are resumed).
"""
from __future__ import annotations

import argparse
import importlib.util
import os
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

TUNE_CONFIGS_ENV = "MECCA_TUNE_CONFIGS"
# Config keys printed for the best trial (the rest of the RLlib config is in its params.json).
BEST_CONFIG_KEYS = ("alpha", "beta", "confidence_form", "reward_weighting", "lr", "gamma",
                    "gae_lambda", "entropy_coeff", "clip_param", "delta_start", "delta_growth",
                    "delta_max", "num_learners", "num_gpus_per_learner", "num_env_runners",
                    "env_config", "_model_config")


# ------------------------------------------------------------------------ config loading
def tune_configs_dir() -> Path:
    """``$MECCA_TUNE_CONFIGS`` if set, else ``tune_configs/`` next to the ``mecca_rllib`` package."""
    env = os.environ.get(TUNE_CONFIGS_ENV)
    folder = Path(env) if env else Path(__file__).resolve().parent.parent / "tune_configs"
    if not folder.is_dir():
        raise ValueError(f"tune configs folder {folder} does not exist; set ${TUNE_CONFIGS_ENV}")
    return folder


def available_configs() -> list[str]:
    """Bare names of the experiments in :func:`tune_configs_dir` (files not starting with ``_``)."""
    return sorted(p.stem for p in tune_configs_dir().glob("*.py") if not p.stem.startswith("_"))


def resolve_config_path(config: str) -> Path:
    """CONFIG as given (a ``.py`` file) or ``tune_configs/CONFIG.py``."""
    path = Path(config).expanduser()
    if path.suffix == ".py" or os.sep in config:
        if not path.is_file():
            raise ValueError(f"CONFIG {config!r}: no such file")
        return path.resolve()
    candidate = tune_configs_dir() / f"{config}.py"
    if not candidate.is_file():
        raise ValueError(f"CONFIG {config!r}: not a file and not one of {available_configs()}")
    return candidate


def load_config_module(config: str) -> ModuleType:
    """Import a tune config module by path; its folder goes on ``sys.path`` so that it can
    ``from _common import ...`` (the convention of ``tune_configs/``)."""
    path = resolve_config_path(config)
    folder = str(path.parent)
    if folder not in sys.path:
        sys.path.insert(0, folder)
    spec = importlib.util.spec_from_file_location(f"mecca_tune_config_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    if not callable(getattr(module, "get_experiment", None)):
        raise ValueError(f"CONFIG {path}: defines no get_experiment(smoke=False, **overrides)")
    return module


def parse_overrides(items: list[str]) -> dict[str, Any]:
    """``["training.lr=3e-4", ...]`` -> ``{"training.lr": 3e-4}`` (values parsed as in ``mecca train``)."""
    from mecca_rllib.train import parse_value

    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"--override {item!r}: expected KEY=VALUE, e.g. training.lr=3e-4")
        out[key.strip()] = parse_value(value.strip())
    return out


# ------------------------------------------------------------------------ running
def main_tune(config: str, *, overrides: list[str] | None = None, storage: str | None = None,
              resume: bool = False, smoke: bool = False, progress: bool = True):
    """Run (or resume) the experiment ``config``; returns Tune's ``ResultGrid``."""
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    # The metric appears only on evaluation iterations (every EVAL_EVERY): ASHA skips
    # results without it, Tune's strict check must too.
    os.environ.setdefault("TUNE_DISABLE_STRICT_METRIC_CHECKING", "1")
    import ray
    from ray import tune

    import mecca_rllib  # noqa: F401  (registers "mecca_seg" and "MECCA")

    module = load_config_module(config)
    trainable, param_space, tune_config, run_config = module.get_experiment(
        smoke=smoke, **parse_overrides(overrides or [])
    )
    if storage:
        run_config.storage_path = str(Path(storage).expanduser().resolve())
    Path(run_config.storage_path).mkdir(parents=True, exist_ok=True)
    if not progress:
        run_config.verbose = 0
    if not ray.is_initialized():
        ray.init(include_dashboard=False)
    exp_dir = Path(run_config.storage_path) / run_config.name
    if resume:
        if not tune.Tuner.can_restore(str(exp_dir)):
            raise ValueError(f"--resume: no Tune experiment to restore at {exp_dir}")
        tuner = tune.Tuner.restore(str(exp_dir), trainable=trainable, param_space=param_space,
                                   resume_unfinished=True, resume_errored=True)
    else:
        tuner = tune.Tuner(trainable, param_space=param_space, tune_config=tune_config,
                           run_config=run_config)
    results = tuner.fit()
    _print_best(results, tune_config.metric, tune_config.mode, exp_dir)
    return results


def _print_best(results, metric: str, mode: str, exp_dir: Path) -> None:
    errors = [r for r in results if r.error is not None]
    print(f"\n{len(results)} trial(s), {len(errors)} errored; results in {exp_dir}")
    try:
        best = results.get_best_result(metric=metric, mode=mode, scope="all")
    except RuntimeError:
        print(f"no trial reported {metric}")
        return
    from ray.tune.utils import flatten_dict

    values = best.metrics_dataframe[metric].dropna() if best.metrics_dataframe is not None else []
    value = max(values) if mode == "max" and len(values) else (min(values) if len(values) else None)
    print(f"best trial: {best.path}")
    print(f"best {metric} = {value}")
    print("best config:")
    config = flatten_dict(best.config or {}, delimiter=".")
    for key in sorted(k for k in config if k.split(".")[0] in BEST_CONFIG_KEYS):
        print(f"  {key} = {config[key]}")
    if best.checkpoint is not None:
        print(f"best checkpoint: {best.checkpoint.path}")


def _main(args: argparse.Namespace) -> int:
    results = main_tune(args.config, overrides=args.override or [], storage=args.storage,
                        resume=args.resume, smoke=args.smoke)
    return 1 if any(r.error is not None for r in results) else 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``mecca tune`` to the ``mecca`` command line."""
    from mecca_rllib.train import add_config_options

    p = subparsers.add_parser(
        "tune",
        help="run a Ray Tune sweep from tune_configs/ (alpha_beta_sweep, ppo_swap, ...)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("config", metavar="CONFIG", help="bare name in tune_configs/ or a .py file")
    add_config_options(p, preset=False)
    p.add_argument("--storage", default=None, help="Tune storage path (default: ~/mecca_tune)")
    p.add_argument("--resume", action="store_true", help="restore the interrupted experiment")
    p.add_argument("--smoke", action="store_true",
                   help="8x16x16, at most 2 trials of 1 iteration, no GPUs: check a config")
    p.set_defaults(func=_main)
