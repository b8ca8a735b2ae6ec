"""Several ``mecca bench`` runs that differ only in the training seed, as one report.

    mecca bench --small --seed 0 --out runs/phantoms_seed0     # ... seed 1, seed 2
    mecca bench --combine runs/phantoms_seed* --out benchmarks/results/phantoms_small

Per method and seed, Dice is first averaged over the test episodes (cases x click
repeats); the report gives the mean ± std of those per-seed means across seeds (the
spread a new training run would show), the per-step curve, empty-mask seeds, the
acceptance checks of MECCA.md §7's ranking (MECCA above IteR-MRL, near or above the
best supervised baseline, Dice rising with clicks) and MECCA - IteR-MRL paired per test
episode with its uncertainty (is the margin larger than a new seed would move it?).
"""
from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mecca_rllib.bench.report import load_results
from mecca_rllib.data.atomic import atomic_file

__all__ = ["PairedMargin", "SeedSummary", "combine_seeds", "merge_methods", "paired_margins",
           "summarize_seeds"]

#: A final Dice below this (in %) on every test episode counts as an empty-mask collapse.
EMPTY_DICE = 1.0


@dataclass
class SeedSummary:
    """One method over seeds: ``per_step`` is ``(S, T)`` Dice in %, one row per seed;
    ``episodes`` holds per seed the final Dice of every test episode, ``(R * C,)`` in %, and
    ``cases`` the test case names ``(C,)`` they were played on."""

    name: str
    seeds: list[int]
    per_step: np.ndarray
    empty_seeds: list[int]
    env_steps: list[float]
    episodes: list[np.ndarray]
    cases: list[list[str]]

    @property
    def final(self) -> np.ndarray:
        """Final Dice per seed, ``(S,)`` in %."""
        return self.per_step[:, -1]


def summarize_seeds(folders: Sequence[str | os.PathLike]) -> tuple[list[SeedSummary], list[dict[str, Any]]]:
    """Read each folder's ``results.json``; returns per-method summaries (table order of the
    first run) and the runs' ``meta`` dicts.

    Raises:
        ValueError: no folder, a folder without results, two runs with one seed, or runs
            whose budgets or datasets differ (they would not be seeds of one setting).
    """
    if not folders:
        raise ValueError("--combine: no run folder given")
    runs = []
    for folder in folders:
        results, meta = _load(folder)
        if "seed" not in meta:
            raise ValueError(f"{Path(folder) / 'results.json'}: meta.seed is missing (rerun with this "
                             "version's mecca bench)")
        runs.append((int(meta["seed"]), results, meta))
    seeds = [s for s, _, _ in runs]
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"--combine: runs repeat a training seed: {seeds}")
    for key in ("budget", "dataset", "protocol"):
        values = {str(m.get(key)) for _, _, m in runs}
        if len(values) > 1:
            raise ValueError(f"--combine: the runs differ in {key}: {sorted(values)}")
    names = [r.name for r in runs[0][1]]
    summaries = []
    for name in names:
        rows, empty, spent, used, episodes, cases = [], [], [], [], [], []
        for seed, results, _ in runs:
            found = [r for r in results if r.name == name]
            if not found:
                continue
            dice = 100.0 * found[0].dice[..., 1:]  # (R, C, T) in %
            rows.append(dice.reshape(-1, dice.shape[-1]).mean(axis=0))
            used.append(seed)
            episodes.append(dice[..., -1].reshape(-1))
            cases.append(list(found[0].cases))
            spent.append(float(found[0].training.get("env_steps", float("nan"))))
            if float(dice[..., -1].max()) < EMPTY_DICE:
                empty.append(seed)
        summaries.append(SeedSummary(name, used, np.stack(rows), empty, spent, episodes, cases))
    return summaries, [m for _, _, m in runs]


@dataclass(frozen=True)
class PairedMargin:
    """``a - b`` at the final step for one training seed, over the test episodes both methods
    played (the same case and click stream): ``mean`` and its standard error ``sem`` in Dice
    points, ``ahead`` the share of episodes where ``a`` is higher, ``episodes`` their count."""

    seed: int
    mean: float
    sem: float
    ahead: float
    episodes: int


def paired_margins(a: SeedSummary, b: SeedSummary) -> list[PairedMargin]:
    """``a - b`` per training seed both ran, paired per test episode; a seed whose two runs
    did not play the same episodes (other cases or repeats) is left out."""
    margins = []
    for seed, ep_a, cases_a in zip(a.seeds, a.episodes, a.cases):
        if seed not in b.seeds:
            continue
        k = b.seeds.index(seed)
        if b.cases[k] != cases_a or b.episodes[k].shape != ep_a.shape:
            continue
        diff = ep_a - b.episodes[k]
        sem = float(np.std(diff, ddof=1) / np.sqrt(len(diff))) if len(diff) > 1 else float("nan")
        margins.append(PairedMargin(seed, float(diff.mean()), sem, float((diff > 0).mean()), len(diff)))
    return margins


def _paired_section(summaries: list[SeedSummary]) -> list[str]:
    """MECCA - IteR-MRL per seed (paired per episode) and across seeds, with a 95 % interval
    over seeds (Student's t): the seed-to-seed spread is what decides whether a margin holds."""
    from scipy import stats

    by = {s.name: s for s in summaries}
    if "MECCA" not in by or "IteR-MRL" not in by:
        return []
    margins = paired_margins(by["MECCA"], by["IteR-MRL"])
    if not margins:
        return []
    lines = ["## MECCA - IteR-MRL, paired per test episode", "",
             "Per seed both methods played the same test episodes (case and click stream): the "
             "mean difference at the final step ± its standard error, and the share of episodes "
             "where MECCA is ahead.", "",
             "| training seed | MECCA - IteR-MRL (Dice points) | episodes MECCA ahead |", "|---|---|---|"]
    lines += [f"| {m.seed} | {m.mean:+.2f} ± {m.sem:.2f} | {100 * m.ahead:.0f} % of {m.episodes} |"
              for m in margins]
    means = np.array([m.mean for m in margins])
    if len(means) > 1:
        sd = float(np.std(means, ddof=1))
        half = float(stats.t.ppf(0.975, len(means) - 1) * sd / np.sqrt(len(means)))
        lines += ["", f"Across {len(means)} seeds: {means.mean():+.2f} (sd {sd:.2f} over seeds; 95 % "
                      f"interval {means.mean() - half:+.2f} to {means.mean() + half:+.2f}). The seed "
                      "spread, not the episode error, is what a new training run would move"
                      + ("; with this few seeds the spread itself is poorly known." if len(means) < 4 else ".")]
    return lines + [""]


def _pm(values: np.ndarray) -> str:
    std = float(np.std(values, ddof=1)) if len(values) > 1 else 0.0
    return f"{float(np.mean(values)):.2f} ± {std:.2f}"


def _checks(summaries: list[SeedSummary]) -> list[str]:
    by = {s.name: s for s in summaries}
    lines = []
    mecca, iter_mrl = by.get("MECCA"), by.get("IteR-MRL")
    if mecca and iter_mrl:
        gap = mecca.final.mean() - iter_mrl.final.mean()
        lines.append(f"MECCA - IteR-MRL: {gap:+.2f} Dice points (goal >= +1): "
                     f"{'met' if gap >= 1 else 'missed'}")
    if mecca and "DeepIGeoS" in by:
        gap = mecca.final.mean() - by["DeepIGeoS"].final.mean()
        lines.append(f"MECCA - DeepIGeoS-like: {gap:+.2f} Dice points (goal >= -5, paper: > 0): "
                     f"{'met' if gap >= -5 else 'missed'}")
    rl_empty = {s.name: s.empty_seeds for s in summaries if s.name in ("MECCA", "IteR-MRL") and s.empty_seeds}
    lines.append("RL runs ending with empty masks: " + (", ".join(
        f"{n} seed(s) {v}" for n, v in rl_empty.items()) if rl_empty else "none"))
    if mecca:
        steps = mecca.per_step.mean(axis=0)
        diffs = np.diff(steps)
        rises, worst = int((diffs > 0).sum()), float(diffs.min()) if len(diffs) else 0.0
        ok = rises >= min(3, len(diffs)) and worst >= -0.5
        lines.append(f"MECCA's mean Dice per step: {' -> '.join(f'{v:.2f}' for v in steps)}; "
                     f"{rises} of {len(diffs)} transitions rise, largest fall {min(worst, 0):.2f} "
                     f"(goal: >= 3 rises, no fall > 0.5): {'met' if ok else 'missed'}")
    return lines


def render_seeds(summaries: list[SeedSummary], metas: list[dict[str, Any]], title: str) -> str:
    """The combined report as Markdown."""
    first = metas[0]
    seeds = sorted(int(m["seed"]) for m in metas)
    steps = summaries[0].per_step.shape[1]
    lines = [f"# {title}", ""]
    for key in ("dataset", "budget", "protocol", "settings", "machine"):
        if key in first:
            value = str(first[key])
            if key == "settings":  # one run's settings end with its own seed
                value = value.removesuffix(f", seed {first['seed']}")
            lines.append(f"- **{key}**: {value}")
    lines += [f"- **training seeds**: {seeds} (data and its split fixed: data seed "
              f"{first.get('data_seed', 0)})",
              "- **runs**: " + "; ".join(f"seed {m['seed']}: `{m.get('command', '?')}` at "
                                          f"{m.get('commit', '?')}, {m.get('runtime', '?')}"
                                          for m in sorted(metas, key=lambda m: int(m['seed']))),
              "",
              "Dice (%): per seed the mean over test episodes; here the mean ± std of those "
              "across seeds.", "",
              "## Final Dice across seeds", "",
              "| method | Dice (%) | per seed | env steps trained | seeds with empty masks |",
              "|---|---|---|---|---|"]
    for s in summaries:
        per = ", ".join(f"{v:.1f}" for v in s.final)
        lines.append(f"| {s.name} | {_pm(s.final)} | {per} | {np.mean(s.env_steps):,.0f} | "
                     f"{s.empty_seeds or 'none'} |")
    lines += ["", "## Dice (%) per interaction step across seeds", "",
              "| method | " + " | ".join(f"step {t + 1}" for t in range(steps)) + " |",
              "|---|" + "---|" * steps]
    for s in summaries:
        lines.append(f"| {s.name} | " + " | ".join(_pm(s.per_step[:, t]) for t in range(steps)) + " |")
    lines += ["", "## Checks", ""] + [f"- {line}" for line in _checks(summaries)]
    lines += ["", *_paired_section(summaries)]
    lines += ["![Dice per step across seeds](dice_per_step_seeds.png)", ""]
    return "\n".join(lines)


def combine_seeds(folders: Sequence[str | os.PathLike], out: str | os.PathLike, *,
                  title: str = "MECCA benchmark across training seeds") -> Path:
    """Write ``report.md`` and ``dice_per_step_seeds.png`` for ``folders`` into ``out``."""
    summaries, metas = summarize_seeds(folders)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    _plot(summaries, out / "dice_per_step_seeds.png")
    path = out / "report.md"
    with atomic_file(path) as tmp:
        tmp.write_text(render_seeds(summaries, metas, title))
    return path


def merge_methods(run: str | os.PathLike, donor: str | os.PathLike, methods: Sequence[str],
                  out: str | os.PathLike) -> Path:
    """One run's results with ``methods`` taken from another run of the same seed, dataset and
    budget (a method a change does not touch need not be trained again), written as a bench
    output folder ``out`` (``report.md``, ``results.json``, plots); returns the report's path.

    The donor's methods come first, in its order; ``meta`` is the run's, its ``command``
    naming the donor run (command and commit) the kept rows come from.

    Raises:
        ValueError: a missing ``results.json``, runs of another seed, dataset or budget, or a
            method the donor does not have.
    """
    from mecca_rllib.bench.report import write_report

    (results, meta), (given, donor_meta) = (_load(run), _load(donor))
    for key in ("seed", "dataset", "budget"):
        if str(meta.get(key)) != str(donor_meta.get(key)):
            raise ValueError(f"--merge: the runs differ in {key}: {meta.get(key)!r} and {donor_meta.get(key)!r}")
    kept = []
    for name in methods:
        found = [r for r in given if r.name == name]
        if not found:
            raise ValueError(f"--merge: {donor} has no method {name!r} (it has {[r.name for r in given]})")
        kept.append(found[0])
    merged = kept + [r for r in results if r.name not in set(methods)]
    meta = {**meta, "command": (f"{meta.get('command', '?')}; the {', '.join(methods)} rows are those of "
                                f"`{donor_meta.get('command', '?')}` ({donor_meta.get('commit', '?')})")}
    return write_report(merged, out, meta)


def _load(folder: str | os.PathLike) -> tuple[list, dict[str, Any]]:
    path = Path(folder) / "results.json"
    if not path.is_file():
        raise ValueError(f"{path}: not found (is {folder} a `mecca bench` output folder?)")
    return load_results(path)


def _plot(summaries: list[SeedSummary], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for s in summaries:
        mean = s.per_step.mean(axis=0)
        std = s.per_step.std(axis=0, ddof=1) if len(s.per_step) > 1 else np.zeros_like(mean)
        x = np.arange(1, len(mean) + 1)
        ax.plot(x, mean, marker="o", label=f"{s.name} ({len(s.seeds)} seeds)")
        ax.fill_between(x, mean - std, mean + std, alpha=0.15)
    ax.set_xlabel("interaction step")
    ax.set_ylabel("Dice (%)")
    ax.set_xticks(range(1, summaries[0].per_step.shape[1] + 1))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    with atomic_file(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
