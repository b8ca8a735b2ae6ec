"""``mecca train``: train MECCA with Tune from a preset or a config file, then evaluate.

    mecca train --config demo
    mecca train --config paper --storage /data/runs
    mecca train --config my.json --override training.lr=3e-4 --override env_config.shape=[16,32,32]

A config (preset or JSON/YAML file) has the sections ``env_config``, ``model_config``,
``training`` (``MECCAConfig.training`` keywords), ``env_runners``, ``learners``,
``resources``, ``stop`` (Tune stop criteria), ``evaluation`` (``episodes``, ``seed``),
``warm_start`` (``env_steps``, ``lr``: a supervised P-Net pre-trained on the training cases
before RL and loaded with ``training.init_from``; ``mecca pretrain``) and ``seed``. After training: a final checkpoint, TensorBoard logs (Tune's default loggers),
a table of Dice per interaction step of the trained against the untrained module on
held-out volumes (``split="test"``, deterministic argmax), and ``dice_per_step.png``.
"""
from __future__ import annotations

import argparse
import ast
import copy
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

SECTIONS = ("env_config", "model_config", "training", "env_runners", "learners", "resources",
            "stop", "evaluation", "warm_start", "seed")

PRESETS: dict[str, dict[str, Any]] = {
    # Synthetic phantoms at a small shape on CPU, about 10 minutes on 2 cores (README).
    "demo": {
        "env_config": {"dataset": "synthetic", "shape": [10, 20, 20], "num_cases": 64,
                       "steps": 5, "initial_clicks": 10, "clicks_per_step": 3, "hint_kernel": 4},
        "model_config": {"width": 16, "dilations": [1, 2, 4, 2, 1],
                         "conf_dilations": [1, 2, 4, 2, 1, 1]},
        # Chosen on 2 CPU cores (README "Learning quality"; benchmarks/learning_levers.py):
        # lr 3e-3 (1e-4 of the paper learns too slowly for a 10-minute demo), a small
        # entropy bonus, 4 volumes sampled together (2.5x the env steps per second) and
        # trained as 4 one-episode minibatches, and the oracle term 0.5 (a class-balanced
        # policy loss guarded against a collapse to "all background" before the warm start
        # and the Dice term did). Warm start: 20 % of the RL env steps of a supervised
        # DeepIGeoS-like P-Net (image + hints)
        # first, then RL fine-tunes (README "Sixth round": the InterCNN-like warm start,
        # which also reads p, collapsed one atlas seed; 800 of a 2,000-step budget left RL too few). The oracle term rewards the
        # direction toward the label (not the +-0.4 step) and is not class-balanced: Dice
        # then rises at every step (chosen on validation phantoms, README). A soft Dice
        # term (3.0) on the policy's next-step foreground probability raises every step
        # (README "Fourth round"). RL lr 2e-3: +1.3 to +4.5 Dice points on the bench's
        # validation splits, neutral on the demo's (README "Fifth round"). No class balance
        # of the policy gradient since the eighth round: at 4,000 env steps its absence is
        # level at step 5 on the bench's validation splits (atlas, four seeds: -0.23) and
        # there turns the flat, late-falling Dice per step into a rise at every step (the
        # balance drove the late over-segmentation); the test bench did not confirm the
        # shape (README "Eighth round").
        "training": {"lr": 2e-3, "confidence_lr": 3e-3, "entropy_coeff": 0.01,
                     "train_batch_size_per_learner": 20, "minibatch_size": 5,
                     "shuffle_batch_per_epoch": False, "class_balanced": False, "oracle_coeff": 0.5,
                     "oracle_target": "direction", "oracle_balanced": False, "oracle_dice": 3.0},
        "env_runners": {"num_env_runners": 0, "num_envs_per_env_runner": 4},
        "learners": {"num_learners": 0},
        "resources": {"num_cpus_for_main_process": 2},
        # 800 warm-start env steps + 200 iterations x 20 = 4,800 env steps: a fixed sample
        # budget (the same numbers on any machine); the time cap only guards slow machines.
        # Twice the 2,400 of rounds 2-7 (README "Eighth round": +0.08 to +0.11 at step 5 on
        # validation phantoms); the warm start stays 20 % of the RL steps, as in `mecca bench`.
        "stop": {"training_iteration": 200, "time_total_s": 3600},
        "evaluation": {"episodes": 16, "seed": 10_000},
        "warm_start": {"env_steps": 800, "lr": 3e-3},  # kind: pretrain.WARM_START_KIND
        "seed": 0,
    },
    # The paper's setting (MECCA.md §1, §2, §6): 30x55x55, width 16, lr 1e-4, T = 5.
    "paper": {
        "env_config": {"dataset": "synthetic", "shape": [30, 55, 55], "num_cases": 256,
                       "steps": 5, "initial_clicks": 25, "clicks_per_step": 5, "hint_kernel": 8,
                       "augment": True},
        "model_config": {"width": 16, "dilations": [1, 2, 4, 8, 16],
                         "conf_dilations": [1, 2, 4, 8, 16, 1]},
        "training": {"lr": 1e-4, "confidence_lr": 1e-4, "gamma": 0.95, "alpha": 0.8, "beta": 1.0,
                     "reward_weighting": "confidence", "confidence_form": "focal",
                     "entropy_coeff": 0.0, "train_batch_size_per_learner": 40},
        "env_runners": {"num_env_runners": 0},
        "learners": {"num_learners": 0},
        "resources": {},
        "stop": {"training_iteration": 5000},
        "evaluation": {"episodes": 40, "seed": 10_000},
        "seed": 0,
    },
}


def parse_value(text: str) -> Any:
    """An override's value: JSON, else a Python literal, else the text itself."""
    for parse in (json.loads, ast.literal_eval):
        try:
            return parse(text)
        except (ValueError, SyntaxError):
            continue
    return text


def apply_override(config: dict[str, Any], item: str) -> None:
    """Apply ``section.key=value`` (value parsed as JSON / Python literal, else a string)."""
    key, sep, value = item.partition("=")
    if not sep or not key:
        raise ValueError(f"--override {item!r}: expected KEY=VALUE, e.g. training.lr=3e-4")
    parts = key.strip().split(".")
    if parts[0] not in SECTIONS:
        raise ValueError(f"--override {item!r}: unknown section {parts[0]!r}; one of {list(SECTIONS)}")
    node = config
    for part in parts[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ValueError(f"--override {item!r}: {part!r} is not a section")
    node[parts[-1]] = parse_value(value.strip())


def load_train_config(name_or_path: str, overrides: list[str] = ()) -> dict[str, Any]:
    """A preset name (``demo``, ``paper``) or a JSON/YAML file, with ``overrides`` applied."""
    if name_or_path in PRESETS:
        config = copy.deepcopy(PRESETS[name_or_path])
    else:
        path = Path(name_or_path)
        if not path.is_file():
            raise ValueError(f"--config {name_or_path!r}: neither a preset {sorted(PRESETS)} nor a file")
        text = path.read_text()
        try:
            if path.suffix in (".yaml", ".yml"):
                import yaml

                config = yaml.safe_load(text)
            else:
                config = json.loads(text)
        except Exception as err:
            raise ValueError(f"{path}: cannot parse the config ({err})") from None
        if not isinstance(config, dict):
            raise ValueError(f"{path}: the config must be a mapping of sections")
        unknown = sorted(set(config) - set(SECTIONS))
        if unknown:
            raise ValueError(f"{path}: unknown section(s) {unknown}; valid: {list(SECTIONS)}")
    for item in overrides:
        apply_override(config, item)
    return config


def apply_train_config(algo_config, config: Mapping[str, Any]):
    """Apply a train config's sections to any ``AlgorithmConfig`` (MECCA, PPO, APPO, ...)."""
    algo_config = (
        algo_config
        .environment("mecca_seg", env_config=dict(config.get("env_config", {})))
        .rl_module(model_config=dict(config.get("model_config", {})))
        .training(**config.get("training", {}))
        .env_runners(**config.get("env_runners", {}))
        .learners(**config.get("learners", {}))
        .debugging(seed=config.get("seed", 0))
    )
    if config.get("resources"):
        algo_config.resources(**config["resources"])
    return algo_config


def build_algorithm_config(config: dict[str, Any]):
    """The ``MECCAConfig`` described by a train config."""
    from mecca_rllib.algorithm import MECCAConfig

    return apply_train_config(MECCAConfig(), config)


def prepare_warm_start(config: dict[str, Any], out: str | os.PathLike) -> dict[str, Any]:
    """Pre-train the config's warm start (``warm_start.env_steps`` > 0 and no
    ``training.init_from`` yet) into the file ``out``; returns the config with
    ``training.init_from`` set to an absolute path (Tune trials run in other folders)."""
    config = copy.deepcopy(config)
    training = config.setdefault("training", {})
    warm = dict(config.get("warm_start") or {})
    if training.get("init_from"):
        training["init_from"] = str(Path(training["init_from"]).expanduser().resolve())
        return config
    steps = int(warm.get("env_steps", 0))
    if steps <= 0:
        return config
    from mecca_rllib.baselines.interaction import ClickSchedule
    from mecca_rllib.baselines.pretrain import WARM_START_KIND, pretrain_warm_start, training_source
    from mecca_rllib.policies.rl_module import DEFAULT_MODEL_CONFIG

    env_config = config.get("env_config", {})
    model = {**DEFAULT_MODEL_CONFIG, **config.get("model_config", {})}
    kind = str(warm.get("kind", WARM_START_KIND))
    print(f"warm start: pre-training a {kind} P-Net for {steps} env steps ...", flush=True)
    path, spent = pretrain_warm_start(
        training_source(env_config), out, env_steps=steps,
        schedule=ClickSchedule.from_env_config(env_config), width=int(model["width"]),
        dilations=tuple(int(d) for d in model["dilations"]),
        lr=float(warm.get("lr", training.get("lr", 1e-3))), seed=int(config.get("seed", 0)), kind=kind)
    print(f"warm start: {path} ({spent['env_steps']:.0f} env steps, {spent['seconds']:.0f} s)")
    training["init_from"] = str(path.resolve())
    return config


def held_out_env_config(config: dict[str, Any], seed: int | None = None) -> dict[str, Any]:
    """The held-out evaluation env: ``split="test"``, no augmentation, all labeled; its
    phantoms and clicks from ``seed`` (default: the config's ``evaluation.seed``, 10,000)."""
    env = dict(config.get("env_config", {}))
    if seed is None:
        seed = config.get("evaluation", {}).get("seed", 10_000)
    env.update(split="test", augment=False, labeled_fraction=1.0, seed=int(seed))
    return env


def compare_policies(checkpoint: str | os.PathLike, config: dict[str, Any], out_dir: Path,
                     *, progress: bool = True) -> dict[str, np.ndarray]:
    """Dice per step of the trained vs the untrained module; prints a table, writes a PNG."""
    import torch

    from mecca_rllib.evaluation import dice_table, evaluate
    from mecca_rllib.plots import plot_dice_per_step
    from mecca_rllib.policies.checkpoints import build_module, load_rl_module

    trained = load_rl_module(checkpoint)
    torch.manual_seed(int(config.get("seed", 0)))
    untrained = build_module(trained.resolved_model_config())
    ev = config.get("evaluation", {})
    env_config = held_out_env_config(config)
    kwargs = dict(episodes=int(ev.get("episodes", 16)), seed=int(ev.get("seed", 10_000)), progress=progress)
    curves = {
        "untrained": np.stack([t.dice for t in evaluate(untrained, env_config, **kwargs)]),
        "trained": np.stack([t.dice for t in evaluate(trained, env_config, **kwargs)]),
        "sampled": np.stack([t.dice for t in evaluate(trained, env_config, explore=True, **kwargs)]),
    }
    print("\nDice per interaction step on held-out volumes (untrained, trained: deterministic "
          "argmax; sampled: the trained policy sampling its actions):")
    print(dice_table(curves))
    png = plot_dice_per_step(curves, out_dir / "dice_per_step.png")
    print(f"plot: {png}")
    return curves


def run_training(config: dict[str, Any], storage: str | os.PathLike, *, name: str | None = None,
                 progress: bool = True):
    """Train with ``tune.Tuner("MECCA")``; returns (Tune ``Result``, experiment folder)."""
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")  # use the CLIReporter columns below
    import ray
    from ray import tune

    import mecca_rllib  # noqa: F401  (registers "mecca_seg" and "MECCA")

    storage = Path(storage).expanduser().resolve()
    storage.mkdir(parents=True, exist_ok=True)
    name = name or "mecca"
    if not ray.is_initialized():
        ray.init(include_dashboard=False, log_to_driver=True)
    reporter = tune.CLIReporter(
        metric_columns={
            "training_iteration": "iter",
            "time_total_s": "time (s)",
            "mecca/dice_step_1": "dice@1",
            "mecca/dice_final": "dice@T",
            "learners/default_policy/confidence_accuracy": "conf acc",
            "learners/default_policy/entropy": "entropy",
        },
        max_report_frequency=30,
    )
    tuner = tune.Tuner(
        "MECCA",
        param_space=build_algorithm_config(config),
        run_config=tune.RunConfig(
            name=name,
            storage_path=str(storage),
            stop=dict(config.get("stop", {})),
            checkpoint_config=tune.CheckpointConfig(checkpoint_at_end=True, num_to_keep=1),
            progress_reporter=reporter if progress else None,
            verbose=1 if progress else 0,
        ),
    )
    results = tuner.fit()
    result = results[0]
    if result.error is not None:
        raise RuntimeError(f"training failed: {result.error}")
    return result, storage / name


def _main(args: argparse.Namespace) -> int:
    config = load_train_config(args.config, args.override or [])
    if args.iterations is not None:
        config.setdefault("stop", {})["training_iteration"] = int(args.iterations)
    if args.init_from:
        config.setdefault("training", {})["init_from"] = args.init_from
    config = prepare_warm_start(config, Path(args.storage) / (args.name or "mecca") / "warm_start.pt")
    result, exp_dir = run_training(config, args.storage, name=args.name)
    checkpoint = result.checkpoint.path
    print(f"\nfinal checkpoint: {checkpoint}")
    print(f"TensorBoard: tensorboard --logdir {exp_dir}")
    (Path(result.path) / "train_config.json").write_text(json.dumps(config, indent=2) + "\n")
    compare_policies(checkpoint, config, Path(result.path))
    return 0


def add_config_options(parser: argparse.ArgumentParser, *, preset: bool = True) -> None:
    """``--config`` (a preset or a file; with ``preset``) and the repeatable ``--override``."""
    if preset:
        parser.add_argument("--config", default="demo",
                            help="preset name (demo, paper) or a JSON/YAML file")
    parser.add_argument("--override", action="append", metavar="KEY=VALUE",
                        help="override a train-config setting, e.g. training.lr=3e-4 (repeatable)")


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``mecca train`` to the ``mecca`` command line."""
    p = subparsers.add_parser(
        "train",
        help="train MECCA with Tune (preset demo|paper or a config file), then evaluate",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_config_options(p)
    p.add_argument("--storage", default="mecca_runs", help="Tune storage folder (default: ./mecca_runs)")
    p.add_argument("--name", default=None, help="experiment name (default: mecca)")
    p.add_argument("--iterations", type=int, default=None, help="stop after N training iterations")
    p.add_argument("--init-from", default=None, metavar="FILE",
                   help="start the policy from this warm-start file (mecca pretrain) instead "
                        "of the config's warm_start section")
    p.set_defaults(func=_main)

    q = subparsers.add_parser(
        "pretrain",
        help="pre-train MECCA's warm start: a supervised P-Net on a config's training cases",
        description="Train a supervised P-Net on the training cases of a train config (the "
                    "config's warm_start.kind: deepigeos, the default, reads image and hint; "
                    "intercnn image, p and hint) and write a warm-start file for "
                    "`mecca train --init-from`.",
    )
    add_config_options(q)
    q.add_argument("--env-steps", type=int, default=None,
                   help="supervised env steps (default: the config's warm_start.env_steps, else 800)")
    q.add_argument("--out", default="warm_start.pt", help="warm-start file to write")
    q.set_defaults(func=_pretrain_main)


def _pretrain_main(args: argparse.Namespace) -> int:
    config = load_train_config(args.config, args.override or [])
    warm = config.setdefault("warm_start", {})
    warm["env_steps"] = int(args.env_steps if args.env_steps is not None else warm.get("env_steps") or 800)
    config.setdefault("training", {}).pop("init_from", None)
    out = Path(args.out)
    prepare_warm_start(config, out)
    print(f"wrote {out}; train with: mecca train --config {args.config} --init-from {out}")
    return 0
