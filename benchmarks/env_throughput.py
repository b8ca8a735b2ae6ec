"""Throughput of InteractiveSegEnv: voxel-agent steps per second, reset, hint and click costs.

Goal (issue 3): at least 30 million voxel-agent steps per second on one core at
(30, 55, 55), i.e. about 3 ms per ``env.step`` for 90,750 voxels.

    .venv/bin/python benchmarks/env_throughput.py [--shape 30 55 55] [--episodes 40]

Prints a table of medians (and 90th percentiles) over the measured calls.
"""
from __future__ import annotations

import argparse
import time
from typing import Callable

import numpy as np

from mecca_rllib.envs import HintMap, InteractiveSegEnv, SimulatedUser

GOAL_VOXEL_STEPS_PER_S = 30e6


def _times(fn: Callable[[], object], repeat: int) -> np.ndarray:
    out = np.empty(repeat)
    for i in range(repeat):
        start = time.perf_counter()
        fn()
        out[i] = time.perf_counter() - start
    return out


def _row(name: str, seconds: np.ndarray, extra: str = "") -> str:
    med, p90 = np.median(seconds) * 1e3, np.percentile(seconds, 90) * 1e3
    return f"| {name:<40} | {med:9.3f} | {p90:9.3f} | {extra:<36} |"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", type=int, nargs=3, default=(30, 55, 55))
    parser.add_argument("--episodes", type=int, default=40, help="episodes for step/reset timing")
    parser.add_argument("--num-cases", type=int, default=8,
                        help="synthetic cases (made in pass 1, cached after)")
    args = parser.parse_args(argv)
    shape = tuple(args.shape)
    voxels = int(np.prod(shape))
    rng = np.random.default_rng(0)

    rows = []
    for mode in ("edge", "largest_error"):
        env = InteractiveSegEnv({"shape": shape, "num_cases": args.num_cases, "click_mode": mode})
        actions = [rng.integers(0, 6, shape, dtype=np.uint8) for _ in range(env.config["steps"])]
        first_pass = _times(env.reset, args.num_cases)  # includes making each phantom
        steps, resets = [], []
        # largest_error relabels and distance-transforms the error per click: fewer episodes.
        for _ in range(args.episodes if mode == "edge" else max(2, args.episodes // 10)):
            resets.append(_times(env.reset, 1))
            for a in actions:
                steps.append(_times(lambda: env.step(a), 1))
        steps, resets = np.concatenate(steps), np.concatenate(resets)
        rate = voxels / np.median(steps)
        verdict = ">= 30 M goal" if rate >= GOAL_VOXEL_STEPS_PER_S else "< 30 M goal"
        note = f"{rate / 1e6:.1f} M voxel-steps/s ({verdict})"
        rows.append(_row(f"env.step ({mode})", steps, note))
        rows.append(_row(f"env.reset, cached volume ({mode})", resets,
                         "boundary + 25 clicks + hints"))
        if mode == "edge":
            rows.append(_row("env.reset, first pass (makes phantom)", first_pass,
                             "data layer cost"))

    # Components on one volume: clicks on a random (salt-and-pepper, half wrong)
    # segmentation, the worst case for largest_error, and hint updates.
    env = InteractiveSegEnv({"shape": shape, "num_cases": 1})
    env.reset()
    label = env.label
    pred = rng.random(shape) < 0.5
    for mode in ("edge", "largest_error"):
        user = SimulatedUser(mode)
        for n in (5, 25):
            def click() -> None:
                user.start(label)
                user.click(pred, n, rng)

            repeat = 20 if mode == "edge" else 3
            start_only = _times(lambda: user.start(label), repeat)
            rows.append(_row(f"user.start + click {n} ({mode})", _times(click, repeat),
                             f"start alone {np.median(start_only) * 1e3:.2f} ms"))
    hints = HintMap(shape, kernel=8)
    for n in (5, 25):
        points = np.column_stack([rng.integers(0, s, n) for s in shape])
        add = _times(lambda: hints.add(points), 200)
        rows.append(_row(f"hint update, {n} clicks (kernel 8)", add))

    print(f"InteractiveSegEnv throughput at shape {shape} ({voxels:,} voxel agents), one process\n")
    print(f"| {'operation':<40} | {'median ms':>9} | {'p90 ms':>9} | {'note':<36} |")
    print(f"|{'-' * 42}|{'-' * 11}|{'-' * 11}|{'-' * 38}|")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
