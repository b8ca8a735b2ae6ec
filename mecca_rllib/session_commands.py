"""``mecca segment``, ``mecca evaluate`` and ``mecca export``.

- ``segment``: run a trained policy on one scan with the clicks of a JSON file (a list of
  interaction steps, each a list of ``[i, j, k]`` voxel indices of the file's array as
  nibabel returns it, or world millimetres with ``--mm``; ``{"point": [i, j, k],
  "foreground": false}`` marks a background click for models trained with
  ``hint_channels=2``) and write ``segmentation``,
  ``probability``, ``confidence`` and ``advice`` NIfTIs on the input's grid, affine and
  header, ``advice.json`` (where to click next) and ``overlay.png``.
- ``evaluate``: the paper's protocol (MECCA.md §6): 25 clicks, then 5 per step, T = 5,
  5 repeats with different seeds; Dice and ASSD (voxels) mean +/- std per step,
  misunderstanding rate per step, NoC@85/90 and time per interaction; ``--guided``
  restricts the simulated clicks to the advice regions (MECCA.md §4).
- ``export``: write the module of an Algorithm checkpoint as a small inference folder.

Output folders are written atomically: every file goes into a temporary sibling folder that
is moved into place at the end, so an interrupted run leaves no half-written file.
"""
from __future__ import annotations

import argparse
import csv
import json
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["register", "read_clicks", "summarize", "format_summary", "StepStats", "Summary"]

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
    import nibabel as nib

    from mecca_rllib.session import InteractiveSession

    image = Path(args.image)
    if not image.is_file():
        raise _UsageError(f"{image}: image file not found")
    _check_out(args.out, args.overwrite)
    session = InteractiveSession.from_checkpoint(
        args.checkpoint, explore=args.explore, seed=args.seed, k=args.k,
        hint_kernel=args.hint_kernel, roi_margin=args.roi_margin,
    )  # fmt: skip
    roi = None if args.roi is None else np.asarray(args.roi).reshape(3, 2)
    channel = int(args.channel) if args.channel is not None and args.channel.isdigit() else args.channel
    session.start(image, roi=roi, channel=channel)
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
        foreground = int(np.count_nonzero(result.roi_probability > 0.5))
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
        for name, array, dtype in zip(SEGMENT_FILES, arrays, dtypes):
            header = volume.header.copy()
            img = nib.Nifti1Image(np.asarray(array, dtype=dtype), volume.original_affine, header=header)
            img.set_data_dtype(dtype)
            img.header.set_slope_inter(1.0, 0.0)
            nib.save(img, tmp / name)
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
@dataclass(frozen=True)
class StepStats:
    """Metrics of one interaction step over episodes x repeats."""

    step: int
    dice_mean: float
    dice_std: float
    assd_mean: float  # voxels, over episodes whose prediction and label both have a surface
    assd_std: float
    assd_undefined: int  # episodes with an empty prediction (ASSD infinite), left out above
    misunderstanding_mean: float  # NaN at step 0
    misunderstanding_std: float


@dataclass(frozen=True)
class Summary:
    """``mecca evaluate`` results."""

    steps: tuple[StepStats, ...]
    episodes: int
    noc85: tuple[float, float]  # mean, std (interactions; T + 1 when never reached)
    noc90: tuple[float, float]
    policy_ms: tuple[float, float]  # policy forward per interaction
    guide_ms: tuple[float, float] | None  # advice regions per interaction (guided only)
    dice: np.ndarray  # (episodes, T + 1)


def summarize(traces: Sequence[Any], guide_ms: Sequence[float] | None = None) -> Summary:
    """Per-step statistics of ``EpisodeTrace`` s (MECCA.md §6). ASSD is in voxels."""
    from mecca_rllib.metrics import assd, misunderstanding_rate, noc

    if not traces:
        raise ValueError("no episodes to summarize")
    dice = np.stack([t.dice for t in traces])  # (E, T + 1)
    n_steps = dice.shape[1]
    assd_all = np.array([[assd(t.probabilities[s] > 0.5, t.label) for s in range(n_steps)] for t in traces])
    mis = np.full(dice.shape, np.nan)
    for e, t in enumerate(traces):
        for s in range(1, n_steps):
            mis[e, s] = misunderstanding_rate(t.probabilities[s - 1], t.probabilities[s], t.label)
    stats = []
    for s in range(n_steps):
        finite = assd_all[:, s][np.isfinite(assd_all[:, s])]
        stats.append(StepStats(
            step=s, dice_mean=float(dice[:, s].mean()), dice_std=float(dice[:, s].std()),
            assd_mean=float(finite.mean()) if len(finite) else math.nan,
            assd_std=float(finite.std()) if len(finite) else math.nan,
            assd_undefined=int(len(traces) - len(finite)),
            misunderstanding_mean=float(np.mean(mis[:, s])) if s else math.nan,
            misunderstanding_std=float(np.std(mis[:, s])) if s else math.nan,
        ))  # fmt: skip
    policy = np.concatenate([t.policy_ms for t in traces])

    def mean_std(values: np.ndarray) -> tuple[float, float]:
        values = np.asarray(values, float)
        return float(values.mean()), float(values.std())

    return Summary(
        steps=tuple(stats), episodes=len(traces),
        noc85=mean_std(noc(dice[:, 1:], 0.85)), noc90=mean_std(noc(dice[:, 1:], 0.90)),
        policy_ms=mean_std(policy),
        guide_ms=mean_std(np.asarray(guide_ms)) if guide_ms else None, dice=dice,
    )  # fmt: skip


def format_summary(summary: Summary) -> str:
    """The per-step table and the interaction figures as plain text."""
    head = f"{'step':>4}  {'Dice (%)':>15}  {'ASSD (voxels)':>15}  {'misunderstood (%)':>17}"
    lines = [head, "-" * len(head)]
    for s in summary.steps:
        assd = f"{s.assd_mean:6.2f} +/- {s.assd_std:5.2f}" if not math.isnan(s.assd_mean) else "n/a"
        if s.assd_undefined:
            assd += f" ({s.assd_undefined} empty)"
        mis = (
            f"{100 * s.misunderstanding_mean:6.2f} +/- {100 * s.misunderstanding_std:5.2f}"
            if s.step else ""
        )
        dice = f"{100 * s.dice_mean:6.2f} +/- {100 * s.dice_std:5.2f}"
        lines.append(f"{s.step:>4}  {dice}  {assd:>15}  {mis:>17}")
    t_max = len(summary.steps) - 1
    lines += [
        f"episodes: {summary.episodes} (step 0 = after the first clicks, before any action)",
        f"NoC@85: {summary.noc85[0]:.2f} +/- {summary.noc85[1]:.2f}   "
        f"NoC@90: {summary.noc90[0]:.2f} +/- {summary.noc90[1]:.2f}   "
        f"(interactions; {t_max + 1} = not reached in {t_max})",
        f"time per interaction: policy {summary.policy_ms[0]:.1f} +/- {summary.policy_ms[1]:.1f} ms",
    ]
    if summary.guide_ms is not None:
        lines[-1] += f", guide {summary.guide_ms[0]:.1f} +/- {summary.guide_ms[1]:.1f} ms"
    return "\n".join(lines)


def _write_csvs(summary: Summary, traces: Sequence[Any], folder: Path) -> None:
    fields = list(StepStats.__dataclass_fields__)
    with open(folder / "per_step.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(fields)
        for s in summary.steps:
            writer.writerow([getattr(s, k) for k in fields])
    with open(folder / "episodes.csv", "w", newline="") as f:
        writer = csv.writer(f)
        n_steps = summary.dice.shape[1]
        writer.writerow(["episode", "case", *(f"dice_{s}" for s in range(n_steps)), "policy_ms"])
        for e, t in enumerate(traces):
            writer.writerow([e, t.case, *(f"{v:.6f}" for v in t.dice), f"{np.mean(t.policy_ms):.3f}"])


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
    from mecca_rllib.data import open_source
    from mecca_rllib.evaluation import evaluate
    from mecca_rllib.guide import make_advice_fn
    from mecca_rllib.policies.checkpoints import load_rl_module
    from mecca_rllib.session import training_hint_kernel, training_shape

    for name in ("repeats", "steps", "clicks_per_step", "num_cases", "hint_kernel"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            raise _UsageError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    if args.initial_clicks < 0:
        raise _UsageError(f"--initial-clicks must be >= 0, got {args.initial_clicks}")
    if args.out:
        _check_out(args.out, args.overwrite)
    module = load_rl_module(args.checkpoint)
    shape = training_shape(module)
    source = open_source(args.data, shape, split=args.split, num_cases=args.num_cases, seed=args.split_seed)
    env_config = {
        "dataset": source, "shape": shape, "steps": args.steps,
        "initial_clicks": args.initial_clicks, "clicks_per_step": args.clicks_per_step,
        "click_mode": args.click_mode, "seed": args.seed,
        "hint_kernel": training_hint_kernel(module) if args.hint_kernel is None else args.hint_kernel,
        "hint_channels": module.hint_channels,
    }  # fmt: skip
    advice = _TimedAdvice(make_advice_fn(k=args.k)) if args.guided else None
    n_cases = len(source)
    print(f"{n_cases} case(s) x {args.repeats} repeat(s), shape {shape}, T = {args.steps}, "
          f"{'guided' if args.guided else 'unguided'} clicks")  # fmt: skip
    # Episode i plays case i mod n_cases with seed seed + i: repeats differ by their seeds.
    traces = evaluate(
        module, env_config, episodes=n_cases * args.repeats, seed=args.seed,
        explore=args.explore, advice_fn=advice, progress=not args.no_progress,
    )  # fmt: skip
    summary = summarize(traces, advice.ms if advice else None)
    print(format_summary(summary))
    if args.out:
        from mecca_rllib.data.atomic import atomic_folder
        from mecca_rllib.plots import plot_dice_per_step

        label = "MECCA guided" if args.guided else "MECCA"

        def fill(tmp: Path) -> None:
            _write_csvs(summary, traces, tmp)
            plot_dice_per_step({label: summary.dice}, tmp / "dice_per_step.png")

        out = atomic_folder(args.out, fill, replace_if=lambda p: args.overwrite)
        print(f"wrote per_step.csv, episodes.csv, dice_per_step.png to {out}")
    return 0


# ---------------------------------------------------------------------------- export
def _export(args: argparse.Namespace) -> int:
    from mecca_rllib.policies.checkpoints import export_rl_module

    _check_out(args.out, args.overwrite)
    path = export_rl_module(args.checkpoint, args.out)
    print(f"exported the MECCA module of {args.checkpoint} to {path}")
    return 0


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
    p = subparsers.add_parser(
        "segment", help="segment one scan with a trained policy and a clicks JSON file",
        description="Run a trained MECCA policy on IMAGE with the clicks of a JSON file (a list of "
        "steps, each a list of [i, j, k] voxel indices of the file's array, or world mm with --mm) "
        "and write segmentation/probability/confidence/advice NIfTIs, advice.json and overlay.png.",
    )  # fmt: skip
    p.add_argument("image", help="input NIfTI (.nii or .nii.gz)")
    p.add_argument("--checkpoint", required=True, help="Algorithm checkpoint or exported module folder")
    p.add_argument("--clicks", required=True, help='clicks JSON: [[[i, j, k], ...], ...] (one list per step); '
                   '{"point": [i, j, k], "foreground": false} marks a background click')
    p.add_argument("--out", required=True, help="output folder (written atomically)")
    p.add_argument("--mm", action="store_true", help="clicks are world coordinates in mm (affine applied)")
    p.add_argument("--roi", type=int, nargs=6, metavar=("I0", "I1", "J0", "J1", "K0", "K1"),
                   help="region of interest [start, stop) per file axis (default: from the first clicks)")
    p.add_argument("--roi-margin", type=int, default=6,
                   help="voxels added around the first clicks when no --roi is given (default 6)")
    p.add_argument("--channel", default=None, help="channel index or name of a 4D image")
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
    p.add_argument("--checkpoint", required=True, help="Algorithm checkpoint or exported module folder")
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
    p.add_argument("--explore", action="store_true", help="sample actions instead of the argmax")
    p.add_argument("--seed", type=int, default=0, help="base seed of the episodes")
    p.add_argument("--out", default=None, help="folder for per_step.csv, episodes.csv, dice_per_step.png")
    p.add_argument("--overwrite", action="store_true", help="replace a non-empty --out folder")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=_guarded(_evaluate))

    p = subparsers.add_parser("export", help="export the MECCA module of a checkpoint for inference")
    p.add_argument("--checkpoint", required=True, help="Algorithm checkpoint (or RLModule) folder")
    p.add_argument("--out", required=True, help="output folder (mecca_module.json + weights.pt)")
    p.add_argument("--overwrite", action="store_true", help="replace a non-empty output folder")
    p.set_defaults(func=_guarded(_export))
