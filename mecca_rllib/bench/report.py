"""The benchmark report: Markdown tables shaped like the paper's Tables 1, 2, 3 and 6 with
our numbers beside the paper's (MECCA.md §7), a Dice-per-step plot (Fig. 8 shape) and a
reward-ablation plot (Fig. 9 shape). Files are written atomically.

Also the plain-text per-step summary of one method that ``mecca evaluate`` prints
(:func:`summarize`, :func:`format_summary`).
"""
from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mecca_rllib.bench.protocol import MethodResult, mean_std
from mecca_rllib.metrics import NOC_THRESHOLDS, assd, misunderstanding_rate, noc

__all__ = ["PAPER_TABLE1", "PAPER_TABLE2", "PAPER_TABLE3", "PAPER_TIMES_MS", "REWARD_ABLATION",
           "StepStats", "Summary", "format_summary", "load_results", "render_report", "summarize",
           "write_report"]

# MECCA.md §7 (the paper's Table 1): Dice (%) at the end of interaction.
PAPER_DATASETS = ("BraTS2020", "BraTS2015", "MM-WHS", "Spleen", "Liver")
PAPER_TABLE1: dict[str, tuple[float, ...]] = {
    "P-Net": (83.67, 84.00, 81.40, 88.08, 35.89),
    "DeepIGeoS": (88.54, 88.32, 88.48, 91.97, 48.57),
    "InterCNN": (88.39, 88.26, 87.85, 93.52, 59.92),
    "IteR-MRL": (89.22, 88.94, 89.55, 91.50, 62.29),
    "BS-IRIS": (90.47, 89.74, 89.12, 92.35, 67.25),
    "MECCA": (91.02, 90.29, 90.39, 94.96, 71.46),
}
# Table 2: Dice (%) per interaction step on BraTS2015.
PAPER_TABLE2: dict[str, tuple[float, ...]] = {
    "MECCA": (86.49, 88.53, 89.56, 89.12, 90.29),
    "IteR-MRL": (84.56, 85.35, 88.15, 88.11, 88.94),
}
# Table 3: Dice (%) on BraTS2015 by fraction of labeled training volumes.
PAPER_FRACTIONS = (0.125, 0.25, 0.33, 0.5, 1.0)
PAPER_TABLE3: dict[str, tuple[float, ...]] = {
    "MECCA": (87.14, 88.23, 88.31, 89.17, 90.29),
    "IteR-MRL": (84.36, 86.54, 87.38, 88.66, 88.94),
}
# Table 6 (one RTX 2080 Ti, 55x55x30): (inference, interaction) ms per interaction.
PAPER_TIMES_MS: dict[str, tuple[float, float | None]] = {
    "MECCA": (631.0, 123.0), "IteR-MRL": (869.0, None), "DeepIGeoS": (510.0, None),
    "InterCNN": (532.0, None), "BS-IRIS": (990.0, None),
}
#: Methods of the reward ablation (the paper's Fig. 9), in plotting order.
REWARD_ABLATION = ("IteR-MRL", "Focal-IteR-MRL", "Err-IteR-MRL", "MECCA")


def _pm(values: np.ndarray, scale: float = 1.0, digits: int = 2) -> str:
    mean, std, n_inf = mean_std(np.asarray(values) * scale)
    if not np.isfinite(mean):
        return "n/a"
    text = f"{float(mean):.{digits}f} ± {float(std):.{digits}f}"
    return text + (f" ({int(n_inf)} empty)" if n_inf else "")


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _paper(value: float | None) -> str:
    return "—" if value is None else f"{value:.2f}"


def _table1(results: list[MethodResult]) -> str:
    by_name = {r.name: r for r in results}
    names = list(dict.fromkeys([*PAPER_TABLE1, *by_name]))
    rows = []
    for name in names:
        r = by_name.get(name)
        ours = ([_pm(r.dice[..., -1], 100), _pm(r.assd[..., -1])] if r is not None
                else ["not run", "not run"])
        paper = PAPER_TABLE1.get(name, (None,) * len(PAPER_DATASETS))
        rows.append([name, *ours, *(_paper(v) for v in paper)])
    header = ["method", "ours: Dice (%)", "ours: ASSD (vox)",
              *(f"paper {d}" for d in PAPER_DATASETS)]
    return _table(header, rows)


def _per_step(results: list[MethodResult], field: str, scale: float, digits: int,
              paper: Mapping[str, Sequence[float]] = {}) -> str:
    steps = max(r.steps for r in results)
    rows = []
    for r in results:
        values = r.dice[..., 1:] if field == "dice" else getattr(r, field)
        rows.append([r.name, *(_pm(values[..., t], scale, digits) for t in range(r.steps))])
    for name, row in paper.items():
        rows.append([f"{name} (paper, BraTS2015)", *(f"{v:.2f}" for v in row[:steps])])
    return _table(["method", *(f"step {t + 1}" for t in range(steps))], rows)


def _table_noc(results: list[MethodResult]) -> str:
    rows = [[r.name, *(_pm(r.noc(th), digits=2) for th in NOC_THRESHOLDS),
             *(f"{100 * float(np.mean(r.dice[..., -1] >= th)):.0f}" for th in NOC_THRESHOLDS)]
            for r in results]
    header = ["method", *(f"NoC@{round(th * 100)}" for th in NOC_THRESHOLDS),
              *(f"% reaching {round(th * 100)}" for th in NOC_THRESHOLDS)]
    return _table(header, rows)


def _table_times(results: list[MethodResult]) -> str:
    rows = []
    for r in results:
        base = r.name.split(" (")[0]
        paper_inf, paper_int = PAPER_TIMES_MS.get(base, (None, None))
        rows.append([r.name, _pm(r.inference_ms, digits=1), _pm(r.interaction_ms, digits=1),
                     "—" if paper_inf is None else f"{paper_inf:.0f}",
                     "—" if paper_int is None else f"{paper_int:.0f}"])
    return _table(["method", "ours: inference (ms/step)", "ours: interaction (ms/step)",
                   "paper: inference (ms)", "paper: interaction (ms)"], rows)


def _table3(results: list[MethodResult]) -> str:
    rows = []
    for name, paper in PAPER_TABLE3.items():
        ours = {round(r.labeled_fraction, 3): r for r in results if r.name == name}
        cells = [_pm(ours[round(f, 3)].dice[..., -1], 100) if round(f, 3) in ours else "not run"
                 for f in PAPER_FRACTIONS]
        rows.append([f"{name} (ours)", *cells])
        rows.append([f"{name} (paper, BraTS2015)", *(f"{v:.2f}" for v in paper)])
    return _table(["method", *(f"{100 * f:g} % labeled" for f in PAPER_FRACTIONS)], rows)


def _training_rows(results: list[MethodResult]) -> str:
    rows = []
    for r in results:
        t = r.training or {}
        rows.append([r.name, str(t.get("env_steps", "—")), str(t.get("updates", "—")),
                     f"{t['seconds']:.1f}" if "seconds" in t else "—"])
    return _table(["method", "env steps", "updates", "training wall time (s)"], rows)


def render_report(results: list[MethodResult], meta: Mapping[str, Any]) -> str:
    """The Markdown report of ``results`` (one per evaluated method, all at one setting).

    ``meta`` keys used: ``title``, ``command``, ``commit``, ``machine``, ``dataset``,
    ``budget``, ``protocol``, ``settings``, ``runtime``, ``plots`` (name -> file), ``notes``.
    """
    if not results:
        raise ValueError("results: nothing to report (no method was evaluated)")
    full = [r for r in results if r.labeled_fraction == 1.0]
    lines = [f"# {meta.get('title', 'MECCA benchmark')}", ""]
    for key in ("command", "commit", "machine", "dataset", "budget", "protocol", "settings",
                "runtime"):
        if key in meta:
            lines.append(f"- **{key.replace('_', ' ')}**: {meta[key]}")
    lines += [
        "",
        "Ours: mean ± std over all test episodes (cases x repeats); ASSD in voxels, over "
        "non-empty predictions (empty ones counted in brackets). The paper's numbers come "
        "from other datasets at 55x55x30 after full training (MECCA.md §7): compare the "
        "ranking and the trends, not the values.",
        "",
        "## Table 1: Dice at the end of interaction",
        "", _table1(full), "",
        "## Table 2: Dice (%) per interaction step", "",
        _per_step(full, "dice", 100, 2, PAPER_TABLE2), "",
        "### ASSD (voxels) per step", "", _per_step(full, "assd", 1, 2), "",
        "### Misunderstanding rate (%) per step", "",
        _per_step(full, "misunderstanding", 100, 2), "",
        "### NoC@85 / NoC@90", "",
        "Interaction steps until Dice first reaches 85 / 90 % (T + 1 when never), and the "
        "share of episodes that end at or above it.", "",
        _table_noc(full), "",
        "## Table 3: label efficiency (final Dice, %)", "", _table3(results), "",
        "## Table 6: time per interaction step", "",
        "Inference: the method's forward pass and update of p. Interaction: the simulated "
        "user's clicks and hint map (plus the advice regions when guided).", "",
        _table_times(full), "",
        "## Training spent", "", _training_rows(results), "",
    ]
    for title, file in (meta.get("plots") or {}).items():
        lines += [f"![{title}]({file})", ""]
    for note in meta.get("notes") or ():
        lines.append(f"- {note}")
    return "\n".join(lines).rstrip() + "\n"


def _atomic_write(path: Path, write: Any) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return path


def _plot(results: list[MethodResult], path: Path, title: str) -> Path:
    from mecca_rllib.plots import plot_dice_per_step

    return plot_dice_per_step({r.name: r.dice.reshape(-1, r.steps + 1) for r in results}, path,
                              title=title)


def load_results(path: str | os.PathLike) -> tuple[list[MethodResult], dict[str, Any]]:
    """Read ``results.json`` written by :func:`write_report`: (results, meta)."""
    data = json.loads(Path(path).read_text())
    return [MethodResult.from_dict(r) for r in data["results"]], data.get("meta", {})


def write_report(results: list[MethodResult], out_dir: str | os.PathLike,
                 meta: Mapping[str, Any]) -> Path:
    """Write ``report.md``, ``results.json``, ``dice_per_step.png`` (Fig. 8 shape) and, when
    any reward-ablation method was run, ``reward_ablation.png`` (Fig. 9 shape) to
    ``out_dir``; returns the report's path."""
    out = Path(out_dir)
    full = [r for r in results if r.labeled_fraction == 1.0]
    plots = {"Dice per interaction step (Fig. 8 shape)":
             _plot(full, out / "dice_per_step.png", "Dice per interaction step").name}
    ablation = [r for name in REWARD_ABLATION for r in full if r.name == name]
    if ablation:
        plots["Reward ablation (Fig. 9 shape)"] = _plot(
            ablation, out / "reward_ablation.png", "Reward weighting ablation").name
    meta = {**meta, "plots": plots}
    payload = {"meta": meta, "results": [r.to_dict() for r in results]}
    _atomic_write(out / "results.json",
                  lambda tmp: Path(tmp).write_text(json.dumps(payload, indent=1) + "\n"))
    text = render_report(results, meta)
    return _atomic_write(out / "report.md", lambda tmp: Path(tmp).write_text(text))


# ---------------------------------------------------------------------------- one method
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
    """Per-step statistics of one method (what ``mecca evaluate`` prints)."""

    steps: tuple[StepStats, ...]
    episodes: int
    noc: Mapping[float, tuple[float, float]]  # threshold -> mean, std (T + 1 when never reached)
    policy_ms: tuple[float, float]  # policy step per interaction
    guide_ms: tuple[float, float] | None  # advice regions per interaction (guided only)
    dice: np.ndarray  # (episodes, T + 1)

    @property
    def noc85(self) -> tuple[float, float]:
        return self.noc[NOC_THRESHOLDS[0]]

    @property
    def noc90(self) -> tuple[float, float]:
        return self.noc[NOC_THRESHOLDS[1]]


def _per_episode(episodes: MethodResult | Sequence[Any]) -> tuple[np.ndarray, ...]:
    """(dice, ASSD, misunderstanding) ``(E, T + 1)`` and policy ms of a :class:`MethodResult`
    (episodes in (repeat, case) order; at step 0, ``p = 0.5`` predicts nothing: ASSD ``inf``)
    or of ``EpisodeTrace`` s (``mecca_rllib.evaluation``), whose p maps give ASSD and
    misunderstanding."""
    if isinstance(episodes, MethodResult):
        dice = episodes.dice.reshape(-1, episodes.steps + 1)
        first = np.full((len(dice), 1), np.inf)
        assd_all = np.concatenate([first, episodes.assd.reshape(len(dice), -1)], axis=1)
        mis = np.concatenate([first * np.nan, episodes.misunderstanding.reshape(len(dice), -1)], axis=1)
        return dice, assd_all, mis, episodes.inference_ms.ravel()
    dice = np.stack([t.dice for t in episodes])  # (E, T + 1)
    assd_all = np.array([[assd(seg, t.label) for seg in t.segmentations] for t in episodes])
    mis = np.full(dice.shape, np.nan)
    for e, t in enumerate(episodes):
        for s in range(1, dice.shape[1]):
            mis[e, s] = misunderstanding_rate(t.probabilities[s - 1], t.probabilities[s], t.label)
    return dice, assd_all, mis, np.concatenate([t.policy_ms for t in episodes])


def _mean_std(values: Any) -> tuple[float, float]:
    values = np.asarray(values, float)
    return float(values.mean()), float(values.std())


def summarize(episodes: MethodResult | Sequence[Any],
              guide_ms: Sequence[float] | None = None) -> Summary:
    """Per-step statistics (MECCA.md §6) of a :class:`MethodResult` or of ``EpisodeTrace`` s.
    ASSD is in voxels; ``guide_ms``: the advice regions' time per call (guided mode)."""
    if not isinstance(episodes, MethodResult) and not episodes:
        raise ValueError("no episodes to summarize")
    dice, assd_all, mis, policy = _per_episode(episodes)
    stats = []
    for s in range(dice.shape[1]):
        finite = assd_all[:, s][np.isfinite(assd_all[:, s])]
        stats.append(StepStats(
            step=s, dice_mean=float(dice[:, s].mean()), dice_std=float(dice[:, s].std()),
            assd_mean=float(finite.mean()) if len(finite) else math.nan,
            assd_std=float(finite.std()) if len(finite) else math.nan,
            assd_undefined=int(len(dice) - len(finite)),
            misunderstanding_mean=float(np.mean(mis[:, s])) if s else math.nan,
            misunderstanding_std=float(np.std(mis[:, s])) if s else math.nan,
        ))  # fmt: skip
    return Summary(
        steps=tuple(stats), episodes=len(dice),
        noc={th: _mean_std(noc(dice[:, 1:], th)) for th in NOC_THRESHOLDS},
        policy_ms=_mean_std(policy),
        guide_ms=_mean_std(guide_ms) if guide_ms else None, dice=dice,
    )  # fmt: skip


def format_summary(summary: Summary) -> str:
    """The per-step table and the interaction figures as plain text."""
    head = f"{'step':>4}  {'Dice (%)':>15}  {'ASSD (voxels)':>15}  {'misunderstood (%)':>17}"
    lines = [head, "-" * len(head)]
    for s in summary.steps:
        assd_text = f"{s.assd_mean:6.2f} +/- {s.assd_std:5.2f}" if not math.isnan(s.assd_mean) else "n/a"
        if s.assd_undefined:
            assd_text += f" ({s.assd_undefined} empty)"
        mis = (
            f"{100 * s.misunderstanding_mean:6.2f} +/- {100 * s.misunderstanding_std:5.2f}"
            if s.step else ""
        )
        dice = f"{100 * s.dice_mean:6.2f} +/- {100 * s.dice_std:5.2f}"
        lines.append(f"{s.step:>4}  {dice}  {assd_text:>15}  {mis:>17}")
    t_max = len(summary.steps) - 1
    noc_text = "   ".join(f"NoC@{round(th * 100)}: {m:.2f} +/- {sd:.2f}"
                          for th, (m, sd) in summary.noc.items())
    lines += [
        f"episodes: {summary.episodes} (step 0 = after the first clicks, before any action)",
        f"{noc_text}   (interactions; {t_max + 1} = not reached in {t_max})",
        f"time per interaction: policy {summary.policy_ms[0]:.1f} +/- {summary.policy_ms[1]:.1f} ms",
    ]
    if summary.guide_ms is not None:
        lines[-1] += f", guide {summary.guide_ms[0]:.1f} +/- {summary.guide_ms[1]:.1f} ms"
    return "\n".join(lines)
