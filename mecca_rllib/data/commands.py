"""``mecca data``: preview, atlas, cache and phantoms subcommands."""
from __future__ import annotations

import argparse


def _label_value(text: str) -> int | str:
    return int(text) if text.lstrip("-").isdigit() else text


def _channel(text: str) -> int | str:
    return int(text) if text.isdigit() else text


def _preview(args: argparse.Namespace) -> int:
    from mecca_rllib.data.preview import render_preview

    path = render_preview(args.dataset, args.out, args.cases, channel=args.channel,
                          label_value=args.label_value, nonfinite=args.nonfinite)
    print(f"wrote {path}")
    return 0


def _atlas(args: argparse.Namespace) -> int:
    from mecca_rllib.data.atlas import build_atlas_task

    path = build_atlas_task(args.out, args.structures, args.max, threshold=args.threshold,
                            margin=args.margin, progress=_progress(args))
    print(f"wrote MSD task {path}")
    return 0


def _cache(args: argparse.Namespace) -> int:
    from mecca_rllib.data.cache import build_cache

    path = build_cache(args.dataset, args.out, tuple(args.shape), variants=args.variants,
                       seed=args.seed, channel=args.channel, label_value=args.label_value,
                       nonfinite=args.nonfinite, progress=_progress(args))
    print(f"wrote cache {path}")
    return 0


def _phantoms(args: argparse.Namespace) -> int:
    from mecca_rllib.data.phantoms import write_phantom_folder

    path = write_phantom_folder(args.out, args.n, tuple(args.shape), seed=args.seed,
                                spacing=tuple(args.spacing))
    print(f"wrote {args.n} phantoms to {path}")
    return 0


def _progress(args: argparse.Namespace):
    if args.quiet:
        return None
    from tqdm import tqdm

    return tqdm


def _add_load_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--channel", type=_channel, default=None,
                        help="channel of 4D images: index or name from dataset.json")
    parser.add_argument("--label-value", type=_label_value, default=None,
                        help="label class kept as foreground (value or name); default: any > 0")
    parser.add_argument("--nonfinite", choices=("raise", "clean"), default="raise",
                        help="NaN/Inf in an image: fail (default) or replace by the finite "
                             "min/max")


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``mecca data`` and its subcommands."""
    data = subparsers.add_parser("data", help="inspect, build and cache datasets",
                                 description="Inspect, build and cache datasets.")
    sub = data.add_subparsers(dest="data_command", metavar="SUBCOMMAND", required=True)

    p = sub.add_parser("preview", help="PNG montage of middle slices with label contours")
    p.add_argument("dataset", metavar="DIR", help="dataset folder (MSD, BraTS, images/+labels/) or cache")
    p.add_argument("--out", default="preview.png", help="PNG to write (default: preview.png)")
    p.add_argument("--cases", type=int, default=4, help="number of cases shown (default: 4)")
    _add_load_options(p)
    p.set_defaults(func=_preview)

    p = sub.add_parser("atlas", help="MSD task from the MNI152 template + Harvard-Oxford atlas")
    p.add_argument("--out", required=True, help="folder to create")
    p.add_argument("--structures", nargs="+", default=None, help="structure names or indices")
    p.add_argument("--max", type=int, default=None, help="at most this many structures")
    p.add_argument("--threshold", type=float, default=50.0, help="probability percent (default 50)")
    p.add_argument("--margin", type=int, default=16, help="voxels kept around each structure")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_atlas)

    p = sub.add_parser("cache", help="preprocess a dataset into a cache folder")
    p.add_argument("dataset", metavar="DIR", help="dataset folder")
    p.add_argument("--out", required=True, help="cache folder to create or replace")
    p.add_argument("--shape", type=int, nargs=3, default=[30, 55, 55], metavar=("D", "H", "W"))
    p.add_argument("--variants", type=int, default=4, help="random-margin variants per case")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    _add_load_options(p)
    p.set_defaults(func=_cache)

    p = sub.add_parser("phantoms", help="write synthetic phantoms as an images/+labels/ folder")
    p.add_argument("--out", required=True, help="folder to create")
    p.add_argument("--n", type=int, required=True, help="number of phantoms")
    p.add_argument("--shape", type=int, nargs=3, default=[30, 55, 55], metavar=("D", "H", "W"))
    p.add_argument("--spacing", type=float, nargs=3, default=[1.0, 1.0, 1.0],
                   metavar=("d", "h", "w"), help="voxel size in mm")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=_phantoms)
