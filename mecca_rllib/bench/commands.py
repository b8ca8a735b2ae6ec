"""``mecca bench``: train MECCA and its baselines under one budget and write the report.

    mecca bench --quick                       # smoke check, about 12 minutes on 2 CPU cores
    mecca bench --small --methods P-Net,DeepIGeoS,InterCNN,IteR-MRL,MECCA   # the committed CPU run
    mecca bench --dataset atlas --out bench_atlas
    mecca bench --dataset /data/Task09_Spleen --budget 2h --repeats 5
    mecca bench --small --dataset /data/Task01_BrainTumour --test-dataset /data/my_scans
    mecca bench --small --seed 1 --out bench_seed1   # another training seed, same data
    mecca bench --small --validation --override training.lr=1e-3   # a lever, on validation cases

Writes ``report.md`` (Tables 1/2/3/6 shaped like the paper's, ours beside the paper's),
``results.json``, ``dice_per_step.png`` and ``reward_ablation.png`` to ``--out``.
"""
from __future__ import annotations

import argparse
import dataclasses
import shlex
import sys
from pathlib import Path

__all__ = ["register"]


def _shape(text: str) -> tuple[int, int, int]:
    try:
        shape = tuple(int(v) for v in text.lower().replace(",", "x").split("x"))
    except ValueError:
        shape = ()
    if len(shape) != 3 or min(shape) < 1:
        raise argparse.ArgumentTypeError(f"expected D x H x W, e.g. 16x32x32, got {text!r}")
    return shape  # type: ignore[return-value]


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def _main(args: argparse.Namespace) -> int:
    import torch

    from mecca_rllib.baselines import with_schedule
    from mecca_rllib.budget import parse_budget
    from mecca_rllib.bench.run import FULL, QUICK, SMALL, demo_settings, run_bench

    if args.combine:
        from mecca_rllib.bench.seeds import combine_seeds

        print(f"report: {combine_seeds(args.combine, args.out)}")
        return 0
    if args.merge:
        from mecca_rllib.bench.seeds import merge_methods

        if not args.methods:
            raise ValueError("--merge needs --methods: the methods to take from DONOR")
        names = [m.strip() for m in args.methods.split(",") if m.strip()]
        print(f"report: {merge_methods(args.merge[0], args.merge[1], names, args.out)}")
        return 0
    if args.quick and args.small:
        raise ValueError("choose one of --quick and --small")
    if args.validation and args.test_dataset:
        raise ValueError("choose one of --validation and --test-dataset")
    config = QUICK if args.quick else SMALL if args.small else FULL
    changes: dict = {"dataset": args.dataset, "out": Path(args.out),
                     "test_dataset": args.test_dataset, "validation": args.validation}
    if args.shape:
        changes["shape"] = args.shape
    if args.budget:
        changes["budget"] = parse_budget(args.budget)
    protocol = config.protocol
    if args.repeats:
        protocol = dataclasses.replace(protocol, repeats=args.repeats)
    if args.readout:
        protocol = with_schedule(protocol, readout=args.readout)
    if args.advice_mode:
        protocol = with_schedule(protocol, advice_mode=args.advice_mode)
    changes["protocol"] = protocol
    if args.methods:
        changes["methods"] = tuple(m.strip() for m in args.methods.split(",") if m.strip())
    if args.max_cases:
        changes["max_cases"] = args.max_cases
    if args.cache_dir:
        changes["cache_dir"] = Path(args.cache_dir)
    if args.no_guided:
        changes["guided"] = False
    settings = config.settings
    if args.override:
        settings = _overridden_settings(args.override, preset_sized=args.quick or args.small)
    device = args.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if args.readout:  # the users the methods train with read p as the test users do
        settings = with_schedule(settings, readout=args.readout)
    changes["settings"] = dataclasses.replace(
        settings, device=device,
        seed=config.settings.seed if args.seed is None else args.seed)
    if args.threads:
        torch.set_num_threads(args.threads)
    command = "mecca " + " ".join(shlex.quote(a) for a in sys.argv[1:]) if sys.argv else ""
    run_bench(config.replace(**changes), command=command, progress=not args.no_progress)
    return 0


#: The demo preset's sections the --quick/--small settings read (bench/run.py, demo_settings),
#: and the single settings of other sections they read.
OVERRIDABLE = ("training", "warm_start", "model_config")
OVERRIDABLE_KEYS = ("env_config.augment",)


def _overridden_settings(overrides: list[str], *, preset_sized: bool):
    """--quick/--small's settings from the demo preset with ``overrides`` (``mecca train``'s
    ``section.key=value``) applied; only the sections those settings read may change."""
    from mecca_rllib.bench.run import demo_settings
    from mecca_rllib.train import load_train_config

    if not preset_sized:
        raise ValueError("--override changes the demo preset that --quick and --small train with; "
                         "pass one of them")
    for item in overrides:
        key = item.partition("=")[0]
        if key.split(".")[0] not in OVERRIDABLE and key not in OVERRIDABLE_KEYS:
            raise ValueError(f"--override {item!r}: mecca bench reads only the preset's "
                             f"{', '.join(OVERRIDABLE)} sections and {', '.join(OVERRIDABLE_KEYS)} "
                             "(the shape, clicks and budget have their own options)")
    return demo_settings(load_train_config("demo", overrides))


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``mecca bench`` to the ``mecca`` command line."""
    from mecca_rllib.envs import DEFAULT_CONFIG
    from mecca_rllib.envs.readout import READOUTS
    from mecca_rllib.envs.simulated_user import ADVICE_MODES

    p = subparsers.add_parser(
        "bench", help="benchmark MECCA against its baselines and write a report",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true",
                   help="smoke check: 10x20x20 phantoms, 90 s of training per method")
    p.add_argument("--small", action="store_true",
                   help="CPU-sized full protocol: 10x20x20, 8000 env steps per method")
    p.add_argument("--out", default="bench_out", help="output folder (default: ./bench_out)")
    p.add_argument("--dataset", default="phantoms",
                   help="phantoms (default), atlas (MNI152 + Harvard-Oxford) or a dataset folder")
    p.add_argument("--combine", nargs="+", default=None, metavar="RUN",
                   help="instead of running: combine finished runs of different --seed into one "
                        "mean ± std report in --out")
    p.add_argument("--merge", nargs=2, default=None, metavar=("RUN", "DONOR"),
                   help="instead of running: RUN's results with the --methods rows of DONOR (a run "
                        "of the same seed, dataset and budget), written to --out")
    p.add_argument("--test-dataset", default=None, metavar="DIR",
                   help="evaluate every method on all cases of this folder (MSD, BraTS or "
                        "images/+labels/) instead of --dataset's held-out split")
    p.add_argument("--validation", action="store_true",
                   help="evaluate on a validation split held out of the training data instead "
                        "of the test cases (to choose settings without looking at them)")
    p.add_argument("--seed", type=int, default=None,
                   help="training seed of every method (default 0); the data and its split "
                        "stay fixed, results.json records it as meta.seed")
    p.add_argument("--repeats", type=_positive_int, default=None,
                   help="test repeats with different click seeds (default 5)")
    p.add_argument("--budget", default=None,
                   help="training budget per method: 90s, 10min, 1h or 5000steps "
                        "(default: 90s with --quick, 8000steps with --small, else 1h)")
    p.add_argument("--shape", type=_shape, default=None,
                   help="volume shape D x H x W (default 10x20x20 with --quick/--small, else 30x55x55)")
    p.add_argument("--methods", default=None,
                   help="comma-separated subset, e.g. P-Net,MECCA (default: all)")
    p.add_argument("--max-cases", type=_positive_int, default=None,
                   help="atlas: at most this many structures per split")
    p.add_argument("--cache-dir", default=None,
                   help="atlas: folder the atlas task is built in once "
                        "(default: ~/.cache/mecca_rllib)")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                   help="where networks train (default: cuda when available)")
    p.add_argument("--threads", type=_positive_int, default=None,
                   help="torch intra-op threads (default: torch's choice; 1 can be faster on "
                        "small volumes and busy machines)")
    p.add_argument("--override", action="append", default=[], metavar="KEY=VALUE",
                   help="with --quick/--small: change the demo preset they train with, as in "
                        "mecca train (e.g. training.lr=1e-3, warm_start.env_steps=0); repeatable")
    p.add_argument("--no-guided", action="store_true", help="skip MECCA's guided evaluation")
    p.add_argument("--readout", default=None, choices=READOUTS,
                   help="how p becomes the segmentation, in training and test (default: the "
                        f"env's, {DEFAULT_CONFIG['readout']}; README 'Eleventh round')")
    p.add_argument("--advice-mode", default=None, choices=ADVICE_MODES,
                   help="MECCA (guided): clicks only inside the advice regions (the paper; "
                        "default) or there first, then elsewhere (README 'Twelfth round')")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=_main)
