"""Latency of one interaction step of ``InteractiveSession`` at the paper's (30, 55, 55).

Splits a step into policy forward, confidence forward, guide (advice regions from cached
supervoxels) and mapping back onto the original grid, for a BraTS-sized scan
(240 x 240 x 155 voxels, a tumour-sized ROI resized to the network shape), and prints the
paper's Table 6 beside it. Variants: memory format (contiguous vs channels-last 3D) and
torch intra-op threads. Weights are random (Xavier): latency does not depend on training.

    .venv/bin/python benchmarks/interaction_latency.py            # default table
    .venv/bin/python benchmarks/interaction_latency.py --steps 10 --width 16 32

Goal on the 2-core development machine: a whole step <= 150 ms at width 16 (MECCA.md §7:
the paper reports 631 ms per interaction on an RTX 2080 Ti).
"""
from __future__ import annotations

import argparse
import os
import statistics
import time

import numpy as np
import torch

from mecca_rllib.policies.checkpoints import build_module
from mecca_rllib.session import InteractiveSession

PAPER_TABLE6_MS = {  # inference per interaction, one RTX 2080 Ti, 55 x 55 x 30 (MECCA.md §7)
    "MECCA": 631, "IteR-MRL": 869, "DeepIGeoS": 510, "InterCNN": 532, "BS-IRIS": 990,
}  # fmt: skip
SCAN_SHAPE = (240, 240, 155)  # BraTS (i, j, k)
ROI = [[70, 180], [60, 170], [45, 105]]  # 110 x 110 x 60 voxels, resized to (30, 55, 55)


def conv_gflop(modules: list[torch.nn.Module], shape: tuple[int, int, int]) -> float:
    """Multiply-adds x 2 of every ``Conv3d`` in ``modules`` on one volume of ``shape`` (resolution
    preserving), in GFLOP: the arithmetic a step cannot avoid at this width."""
    voxels = float(np.prod(shape))
    total = 0.0
    for module in modules:
        for conv in module.modules():
            if isinstance(conv, torch.nn.Conv3d):
                per_voxel = conv.out_channels * conv.in_channels // conv.groups * np.prod(conv.kernel_size)
                total += 2.0 * voxels * per_voxel
    return total / 1e9


def run_variant(width: int, shape: tuple[int, int, int], memory_format: torch.memory_format,
                steps: int, seed: int) -> dict[str, float]:
    """Median milliseconds per stage over ``steps`` steps (after one warm-up step)."""
    torch.manual_seed(seed)
    module = build_module({"shape": shape, "width": width})
    session = InteractiveSession(module, memory_format=memory_format)
    rng = np.random.default_rng(seed)
    scan = rng.normal(size=SCAN_SHAPE).astype(np.float32)
    start = time.perf_counter()
    session.start(scan, affine=np.diag([1.0, 1.0, 1.0, 1.0]), roi=ROI)
    setup_ms = 1e3 * (time.perf_counter() - start)  # ROI resize + SLIC for the whole schedule
    lo, hi = np.array(ROI)[:, 0], np.array(ROI)[:, 1]
    session.click(rng.integers(lo, hi, size=(25, 3)))
    session.step()  # warm-up: first-call allocations and kernel selection
    cpu_ms, full_ms = [], []
    for _ in range(steps):
        session.click(rng.integers(lo, hi, size=(5, 3)))
        cpu = time.process_time()
        result = session.step()
        cpu_ms.append(1e3 * (time.process_time() - cpu))
        start = time.perf_counter()
        for name in ("probability", "segmentation", "confidence", "advice"):
            getattr(result, name)  # the full-scan arrays, assembled on first access
        full_ms.append(1e3 * (time.perf_counter() - start))
    timings = session.timings[1:]
    out = {
        name: statistics.median(getattr(t, name) for t in timings)
        for name in ("policy_ms", "confidence_ms", "guide_ms", "mapping_ms", "total_ms")
    }
    out["setup_ms"] = setup_ms
    out["gflop"] = conv_gflop([module.trunk, module.policy_head, module.confidence_net], shape)
    out["cpu_ms"] = statistics.median(cpu_ms)
    out["full_ms"] = statistics.median(full_ms)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--width", type=int, nargs="+", default=[16])
    parser.add_argument("--threads", type=int, nargs="+", default=[torch.get_num_threads()])
    parser.add_argument("--formats", nargs="+", default=["channels_last_3d"],
                        choices=["channels_last_3d", "contiguous_format"])
    parser.add_argument("--steps", type=int, default=5, help="timed steps per variant (median)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    shape = (30, 55, 55)
    print(f"one interaction step at {shape}, scan {SCAN_SHAPE}, ROI {ROI}; torch {torch.__version__}, "
          f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}")
    columns = ("width", "threads", "memory format", "policy", "confid.", "guide", "mapping", "step",
               "CPU", "scan", "start", "GFLOP", "GFLOP/s")
    widths = (5, 7, 18, 8, 8, 8, 8, 8, 8, 8, 8, 6, 8)
    print(" ".join(f"{c:<{w}}" if c == "memory format" else f"{c:>{w}}" for c, w in zip(columns, widths)))
    print("-" * (sum(widths) + len(widths) - 1))
    for width in args.width:
        for threads in args.threads:
            torch.set_num_threads(threads)
            for name in args.formats:
                r = run_variant(width, shape, getattr(torch, name), args.steps, args.seed)
                ms = [r[k] for k in ("policy_ms", "confidence_ms", "guide_ms", "mapping_ms", "total_ms",
                                     "cpu_ms", "full_ms", "setup_ms")]
                rate = r["gflop"] / (r["policy_ms"] + r["confidence_ms"]) * 1e3
                cells = [f"{width:>5}", f"{threads:>7}", f"{name:<18}"]
                cells += [f"{v:>6.0f}ms" if v >= 10 else f"{v:>6.1f}ms" for v in ms]
                cells += [f"{r['gflop']:>6.1f}", f"{rate:>8.0f}"]
                print(" ".join(cells))
    print("\npaper, Table 6 (inference per interaction, one RTX 2080 Ti, 55 x 55 x 30): "
          + ", ".join(f"{k} {v} ms" for k, v in PAPER_TABLE6_MS.items()))
    print("step = policy + confidence + guide + mapping (wall-clock medians); CPU = process CPU time "
          "of a step, all threads; scan = assembling the four full-scan arrays of a result (on first "
          "access, outside the step); start = ROI resize + SLIC of the whole supervoxel schedule, "
          "once per volume; GFLOP = convolution arithmetic of the two forwards, GFLOP/s = that over "
          "their wall time.")

if __name__ == "__main__":
    main()
