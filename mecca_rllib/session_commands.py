"""``mecca segment``, ``mecca evaluate`` and ``mecca export``.

- ``segment``: run a trained policy on one scan with the clicks of a JSON file (a list of
  interaction steps, each a list of ``[i, j, k]`` voxel indices of the file's array as
  nibabel returns it, or world millimetres with ``--mm``; ``{"point": [i, j, k],
  "foreground": false}`` marks a background click for models trained with
  ``hint_channels=2``) and write ``segmentation``,
  ``probability``, ``confidence`` and ``advice`` NIfTIs on the input's grid, affine and
  header, ``advice.json`` (where to click next) and ``overlay.png``.
- ``evaluate``: the paper's protocol (MECCA.md §6), the benchmark's own
  (``bench.protocol.evaluate_method`` with ``Protocol(seed=--seed)``, so ``mecca bench``'s
  protocol gives the same numbers for the same checkpoint and seed): 25 clicks, then 5 per
  step, T = 5, 5 repeats with different click seeds; Dice and ASSD (voxels) mean +/- std
  per step, misunderstanding rate per step, NoC@85/90 and time per interaction
  (``bench.report.summarize``); ``--guided`` restricts the simulated clicks to the advice
  regions (MECCA.md §4).
- ``export``: write the module of a checkpoint as a deployable folder (``--format torch`` or
  ``openvino``, ``mecca_rllib.inference.export``): weights, model config, training shape,
  hint kernel and channels in ``manifest.json``; sessions load it without Ray.

``--backend`` (segment, evaluate) chooses what runs the nets (``mecca_rllib.inference``).

Output folders are written atomically: every file goes into a temporary sibling folder that
is moved into place at the end, so an interrupted run leaves no half-written file.
"""
from __future__ import annotations

import argparse
import csv
import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from mecca_rllib.bench.report import StepStats, Summary, format_summary, summarize

__all__ = ["register", "read_clicks"]

SEGMENT_FILES = ("segmentation.nii.gz", "probability.nii.gz", "confidence.nii.gz", "advice.nii.gz")


class _UsageError(ValueError):
    """A bad argument or input file; the CLI prints it as one line (exit status 2)."""


def _check_out(out: str | Path, overwrite: bool) -> None:
    """Fail before any work when the output folder exists, is not empty and may not be replaced."""
    out = Path(out)
    if out.exists() and not overwrite and (not out.is_dir() or any(out.iterdir())):
        raise _UsageError(f"{out}: already exists and is not empty (pass --overwrite to replace it)")


# ---------------------------------------------------------------------------- clicks
def read_clicks(
    path: str | Path, *, world_to_voxel: np.ndarray | None = None
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Clicks JSON -> per step, float ``(K, 3)`` original voxel indices and bool ``(K,)`` sides.

    The file holds a list of steps, each a list of points: ``[i, j, k]`` (a foreground
    click) or ``{"point": [i, j, k], "foreground": bool}``. With ``world_to_voxel`` (the
    inverse of the image affine) points are world millimetres. Raises ``ValueError`` naming
    the file, step and point on malformed content.
    """
    path = Path(path)
    try:
        steps = json.loads(path.read_text())
    except FileNotFoundError:
        raise _UsageError(f"{path}: clicks file not found") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise _UsageError(f"{path}: not a readable clicks JSON file ({err})") from None
    if not isinstance(steps, list) or not steps:
        raise _UsageError(f"{path}: expected a non-empty list of steps, each a list of [i, j, k] points")
    out = []
    for s, step in enumerate(steps, start=1):
        if not isinstance(step, list):
            raise _UsageError(f"{path}: step {s} is not a list of points")
        sides, coords = [], []
        for p, point in enumerate(step, start=1):
            side = True
            if isinstance(point, dict):
                side = point.get("foreground", True)
                if set(point) - {"point", "foreground"} or not isinstance(side, bool):
                    raise _UsageError(f"{path}: step {s}, point {p}: {point!r} is not "
                                      '{"point": [i, j, k], "foreground": true|false}')
                point = point.get("point")
            if (
                not isinstance(point, list)
                or len(point) != 3
                or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in point)
            ):
                raise _UsageError(f"{path}: step {s}, point {p}: {point!r} is not three numbers [i, j, k]")
            coords.append(point)
            sides.append(side)
        points = np.asarray(coords, dtype=float).reshape(-1, 3)
        if world_to_voxel is not None and len(points):
            points = points @ world_to_voxel[:3, :3].T + world_to_voxel[:3, 3]
        out.append((points, np.asarray(sides, bool)))
    return out


# ---------------------------------------------------------------------------- segment
def _segment(args: argparse.Namespace) -> int:
    from mecca_rllib.data.nifti import save_like
    from mecca_rllib.session import InteractiveSession

    image = Path(args.image)
    if not image.is_file():
        raise _UsageError(f"{image}: image file not found")
    _check_out(args.out, args.overwrite)
    session = InteractiveSession.from_checkpoint(
        args.checkpoint, explore=args.explore, seed=args.seed, k=args.k,
        hint_kernel=args.hint_kernel, roi_margin=args.roi_margin, backend=args.backend,
        readout=args.readout,
    )  # fmt: skip
    roi = None if args.roi is None else np.asarray(args.roi).reshape(3, 2)
    channel = int(args.channel) if args.channel is not None and args.channel.isdigit() else args.channel
    session.start(image, roi=roi, channel=channel, nonfinite=args.nonfinite)
    world_to_voxel = np.linalg.inv(session.volume.original_affine) if args.mm else None
    steps = read_clicks(args.clicks, world_to_voxel=world_to_voxel)
    for s, (points, foreground) in enumerate(steps, start=1):
        try:
            session.click(points, foreground=foreground)
        except ValueError as err:
            unit = "mm -> voxel " if args.mm else ""
            raise _UsageError(f"{args.clicks}: step {s}: {unit}{err}") from None
        if session.roi is None:
            raise _UsageError(f"{args.clicks}: step {s} has no clicks and no --roi was given")
        result = session.step()
        t = result.timing
        foreground = int(np.count_nonzero(result.roi_segmentation))
        print(
            f"step {s}: {len(points)} clicks, {foreground} foreground voxels, "
            f"{t.total_ms:.0f} ms (policy {t.policy_ms:.0f}, confidence {t.confidence_ms:.0f}, "
            f"guide {t.guide_ms:.0f}, mapping {t.mapping_ms:.0f})"
        )

    from mecca_rllib.data.atomic import atomic_folder

    volume = session.volume

    def fill(tmp: Path) -> None:
        arrays = (result.segmentation, result.probability, result.confidence, result.advice)
        dtypes = (np.uint8, np.float32, np.float32, np.uint8)
        for name, array, dtype in zip(SEGMENT_FILES, arrays, dtypes):  # the input's grid and header
            save_like(volume.to_dhw(array), volume, tmp / name, dtype=dtype)
        advice = _advice_json(result, volume.original_affine)
        (tmp / "advice.json").write_text(json.dumps(advice, indent=2) + "\n")
        _overlay_png(session, result, tmp / "overlay.png")

    out = atomic_folder(args.out, fill, replace_if=lambda p: args.overwrite)
    for region in result.regions:
        centre = ", ".join(f"{v:.1f}" for v in region.centroid)
        confidence = region.mean_confidence
        print(f"advice {region.rank}: click near voxel ({centre}), mean confidence {confidence:.3f}")
    print(f"wrote {', '.join(SEGMENT_FILES)}, advice.json, overlay.png to {out}")
    return 0


def _advice_json(result: Any, affine: np.ndarray) -> list[dict[str, Any]]:
    rows = []
    for r in result.regions:
        world = affine[:3, :3] @ np.asarray(r.centroid) + affine[:3, 3]
        rows.append({
            "rank": r.rank, "mean_confidence": r.mean_confidence, "voxels": r.size,
            "centroid_voxel": [round(v, 3) for v in r.centroid],
            "centroid_mm": [round(float(v), 3) for v in world],
        })  # fmt: skip
    return rows


def _overlay_png(session: Any, result: Any, path: Path) -> None:
    """Axial, coronal and sagittal slices through the ROI centre (canonical orientation):
    image, segmentation contour (red), advice regions (yellow) and the clicks (cyan)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import ListedColormap

    yellow = ListedColormap(["yellow"])
    volume = session.volume
    image = volume.array
    seg = volume.to_dhw(result.segmentation)
    advice = volume.to_dhw(result.advice)
    box = session.roi_grid.box  # canonical ROI, the region the network saw
    centre = (box[:, 0] + box[:, 1]) // 2
    clicks = volume.file_index_to_dhw(session.clicks) if len(session.clicks) else np.zeros((0, 3))
    views = (("axial", 0), ("coronal", 1), ("sagittal", 2))
    fig, axes = plt.subplots(1, 3, figsize=(12, 4.2), dpi=100)
    for ax, (name, axis) in zip(axes, views):
        index = [slice(None)] * 3
        index[axis] = int(centre[axis])
        index = tuple(index)
        rest = [a for a in range(3) if a != axis]
        aspect = volume.spacing[rest[0]] / volume.spacing[rest[1]]  # square millimetres
        ax.imshow(image[index], cmap="gray", origin="lower", aspect=aspect)
        if advice[index].any():
            ax.imshow(np.ma.masked_equal(advice[index], 0), cmap=yellow, alpha=0.4, origin="lower",
                      aspect=aspect, interpolation="nearest")  # fmt: skip
        if seg[index].any() and not seg[index].all():
            ax.contour(seg[index], levels=[0.5], colors="red", linewidths=1.0)
        near = clicks[np.abs(clicks[:, axis] - centre[axis]) <= 1] if len(clicks) else clicks
        if len(near):
            ax.scatter(near[:, rest[1]], near[:, rest[0]], s=14, c="cyan", marker="x")
        ax.set_title(f"{name} slice {int(centre[axis])}")
        ax.set_axis_off()
    fig.suptitle(f"step {result.step}: segmentation (red), advice (yellow), clicks (cyan)")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


# ---------------------------------------------------------------------------- evaluate
def _write_csvs(summary: Summary, result: Any, folder: Path) -> None:
    fields = list(StepStats.__dataclass_fields__)
    with open(folder / "per_step.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(fields)
        for s in summary.steps:
            writer.writerow([getattr(s, k) for k in fields])
    with open(folder / "episodes.csv", "w", newline="") as f:
        writer = csv.writer(f)
        n_steps = summary.dice.shape[1]
        policy_ms = result.inference_ms.reshape(len(summary.dice), -1).mean(axis=1)
        writer.writerow(["episode", "case", *(f"dice_{s}" for s in range(n_steps)), "policy_ms"])
        for e, (dice, ms) in enumerate(zip(summary.dice, policy_ms)):
            case = result.cases[e % len(result.cases)]  # episodes in (repeat, case) order
            writer.writerow([e, case, *(f"{v:.6f}" for v in dice), f"{ms:.3f}"])


class _TimedAdvice:
    """Wraps an ``advice_fn`` and records its wall time per call (ms)."""

    def __init__(self, fn: Any) -> None:
        self.fn, self.ms = fn, []

    def __call__(self, obs: np.ndarray, confidence: np.ndarray, step: int) -> np.ndarray | None:
        start = time.perf_counter()
        mask = self.fn(obs, confidence, step)
        self.ms.append(1e3 * (time.perf_counter() - start))
        return mask


def _evaluate(args: argparse.Namespace) -> int:
    """The benchmark's protocol (``bench.protocol.evaluate_method``) on one checkpoint."""
    from mecca_rllib.baselines import ClickSchedule, ModuleSegmenter
    from mecca_rllib.bench.protocol import Protocol, evaluate_method
    from mecca_rllib.data import open_source
    from mecca_rllib.guide import make_advice_fn
    from mecca_rllib.inference import load_inference_module, make_backend
    from mecca_rllib.policies.checkpoints import training_hint_channels, training_hint_kernel, training_shape

    for name in ("repeats", "steps", "clicks_per_step", "num_cases", "hint_kernel"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            raise _UsageError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    if args.initial_clicks < 0:
        raise _UsageError(f"--initial-clicks must be >= 0, got {args.initial_clicks}")
    if args.out:
        _check_out(args.out, args.overwrite)
    module = load_inference_module(args.checkpoint).eval()
    backend = make_backend(args.backend, module)
    shape = training_shape(module)
    source = open_source(args.data, shape, split=args.split, num_cases=args.num_cases, seed=args.split_seed)
    schedule = ClickSchedule(
        steps=args.steps, initial_clicks=args.initial_clicks, clicks_per_step=args.clicks_per_step,
        click_mode=args.click_mode, hint_channels=training_hint_channels(module),
        hint_kernel=training_hint_kernel(module) if args.hint_kernel is None else args.hint_kernel,
        readout=args.readout, advice_mode=args.advice_mode,
    )  # fmt: skip
    advice = _TimedAdvice(make_advice_fn(k=args.k)) if args.guided else None
    label = "MECCA guided" if args.guided else "MECCA"
    first = " (advice first)" if args.guided and args.advice_mode == "first" else ""
    print(f"{len(source)} case(s) x {args.repeats} repeat(s), shape {shape}, T = {args.steps}, "
          f"{'guided' if args.guided else 'unguided'} clicks{first}")  # fmt: skip
    result = evaluate_method(
        ModuleSegmenter(backend, label, explore=args.explore, seed=args.seed), source,
        Protocol(schedule, repeats=args.repeats, seed=args.seed), advice_fn=advice,
        progress=not args.no_progress,
    )  # fmt: skip
    summary = summarize(result, advice.ms if advice else None)
    print(format_summary(summary))
    if args.out:
        from mecca_rllib.data.atomic import atomic_folder
        from mecca_rllib.plots import plot_dice_per_step

        def fill(tmp: Path) -> None:
            _write_csvs(summary, result, tmp)
            plot_dice_per_step({label: summary.dice}, tmp / "dice_per_step.png")

        out = atomic_folder(args.out, fill, replace_if=lambda p: args.overwrite)
        print(f"wrote per_step.csv, episodes.csv, dice_per_step.png to {out}")
    return 0


# ---------------------------------------------------------------------------- export
def _export(args: argparse.Namespace) -> int:
    from mecca_rllib.inference import load_inference_module, save_export

    checkpoint = args.checkpoint_option or args.checkpoint
    if not checkpoint or (args.checkpoint_option and args.checkpoint
                          and args.checkpoint_option != args.checkpoint):
        raise _UsageError("give the checkpoint once: mecca export CKPT --out DIR (or --checkpoint CKPT)")
    _check_out(args.out, args.overwrite)
    path = save_export(load_inference_module(checkpoint), args.out, format=args.format,
                       overwrite=args.overwrite)
    print(f"exported the MECCA module of {checkpoint} to {path} ({args.format} format)")
    return 0


def add_model_options(p: argparse.ArgumentParser) -> None:
    """``--checkpoint`` (required), ``--backend`` and ``--readout``: the trained model, what
    runs it and how its p becomes the segmentation."""
    from mecca_rllib.envs import DEFAULT_CONFIG
    from mecca_rllib.envs.readout import READOUTS
    from mecca_rllib.inference.backends import CLI_BACKENDS

    p.add_argument("--checkpoint", required=True, help="Algorithm checkpoint or exported module folder")
    p.add_argument("--backend", choices=CLI_BACKENDS, default="torch",
                   help="what runs the nets: torch (fp32, default), torch-bf16, openvino[-bf16] "
                   "(pip install mecca-rllib[openvino]) or auto (the fastest available here)")
    p.add_argument("--readout", choices=READOUTS, default=DEFAULT_CONFIG["readout"],
                   help="how p becomes the segmentation: threshold (p > 0.5) or hold (a voxel at "
                   f"exactly 0.5 keeps its previous side; default {DEFAULT_CONFIG['readout']}, as mecca bench)")


# ---------------------------------------------------------------------------- parsers
def _guarded(func: Any) -> Any:
    """Turn runtime misuse (e.g. clicks before an ROI) into the CLI's one-line errors."""

    def run(args: argparse.Namespace) -> int:
        try:
            return func(args)
        except RuntimeError as err:
            raise _UsageError(str(err)) from None

    return run


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``mecca segment``, ``mecca evaluate`` and ``mecca export``."""
    from mecca_rllib.envs.simulated_user import ADVICE_MODES

    p = subparsers.add_parser(
        "segment", help="segment one scan with a trained policy and a clicks JSON file",
        description="Run a trained MECCA policy on IMAGE with the clicks of a JSON file (a list of "
        "steps, each a list of [i, j, k] voxel indices of the file's array, or world mm with --mm) "
        "and write segmentation/probability/confidence/advice NIfTIs, advice.json and overlay.png.",
    )  # fmt: skip
    p.add_argument("image", help="input NIfTI (.nii or .nii.gz)")
    add_model_options(p)
    p.add_argument("--clicks", required=True, help='clicks JSON: [[[i, j, k], ...], ...] (one list per step); '
                   '{"point": [i, j, k], "foreground": false} marks a background click')
    p.add_argument("--out", required=True, help="output folder (written atomically)")
    p.add_argument("--mm", action="store_true", help="clicks are world coordinates in mm (affine applied)")
    p.add_argument("--roi", type=int, nargs=6, metavar=("I0", "I1", "J0", "J1", "K0", "K1"),
                   help="region of interest [start, stop) per file axis (default: from the first clicks)")
    p.add_argument("--roi-margin", type=int, default=6,
                   help="voxels added around the first clicks when no --roi is given (default 6)")
    p.add_argument("--channel", default=None, help="channel index or name of a 4D image")
    p.add_argument("--nonfinite", choices=("raise", "clean"), default="raise",
                   help="NaN/Inf in the image: fail (default) or replace by the finite min/max")
    p.add_argument("--k", type=int, default=5, help="number of advice regions (default 5)")
    p.add_argument("--hint-kernel", type=int, default=None,
                   help="hint kernel in network voxels (default: the checkpoint's training value)")
    p.add_argument("--explore", action="store_true", help="sample actions instead of the argmax")
    p.add_argument("--seed", type=int, default=0, help="seed of --explore sampling")
    p.add_argument("--overwrite", action="store_true", help="replace a non-empty output folder")
    p.set_defaults(func=_guarded(_segment))

    p = subparsers.add_parser(
        "evaluate", help="the paper's evaluation protocol on a dataset (Dice/ASSD per step, NoC)",
        description="Evaluate a checkpoint with simulated clicks (MECCA.md §6): 25 clicks, then 5 per "
        "step, T = 5, 5 repeats with different seeds.",
    )  # fmt: skip
    add_model_options(p)
    p.add_argument("--data", required=True, help="dataset folder, cache folder, or 'synthetic'")
    p.add_argument("--split", choices=("test", "train", "all"), default="test",
                   help="cases to evaluate (default: the seeded test split)")
    p.add_argument("--split-seed", type=int, default=0, help="seed of the train/test split (as in training)")
    p.add_argument("--num-cases", type=int, default=16, help="synthetic data only: number of cases")
    p.add_argument("--repeats", type=int, default=5, help="runs per case with different seeds (default 5)")
    p.add_argument("--steps", type=int, default=5, help="interaction steps T (default 5)")
    p.add_argument("--initial-clicks", type=int, default=25, help="clicks before the first step (default 25)")
    p.add_argument("--clicks-per-step", type=int, default=5, help="clicks after each step (default 5)")
    p.add_argument("--click-mode", choices=("edge", "largest_error"), default="edge")
    p.add_argument("--hint-kernel", type=int, default=None,
                   help="hint kernel in network voxels (default: the checkpoint's training value)")
    p.add_argument("--guided", action="store_true", help="simulated clicks only inside the advice regions")
    p.add_argument("--k", type=int, default=5, help="number of advice regions with --guided (default 5)")
    p.add_argument("--advice-mode", choices=ADVICE_MODES, default=ADVICE_MODES[0],
                   help="with --guided: clicks only inside the advice regions (the paper; default) "
                        "or there first, then elsewhere")
    p.add_argument("--explore", action="store_true", help="sample actions instead of the argmax")
    p.add_argument("--seed", type=int, default=0,
                   help="root seed of the protocol's click and crop streams (as mecca bench's "
                   "Protocol(seed=...)) and of --explore sampling")
    p.add_argument("--out", default=None, help="folder for per_step.csv, episodes.csv, dice_per_step.png")
    p.add_argument("--overwrite", action="store_true", help="replace a non-empty --out folder")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=_guarded(_evaluate))

    p = subparsers.add_parser("export", help="export the MECCA module of a checkpoint for deployment")
    p.add_argument("checkpoint", nargs="?", default=None, help="Algorithm checkpoint, RLModule or export folder")
    p.add_argument("--checkpoint", dest="checkpoint_option", default=None, help="the same as CKPT")
    p.add_argument("--format", choices=("torch", "openvino"), default="torch",
                   help="torch (default: manifest.json + weights.pt, also an RLModule export) or "
                   "openvino (+ OpenVINO IR; pip install mecca-rllib[openvino])")
    p.add_argument("--out", required=True, help="output folder (manifest.json, weights.pt, ...)")
    p.add_argument("--overwrite", action="store_true", help="replace a non-empty output folder")
    p.set_defaults(func=_guarded(_export))
