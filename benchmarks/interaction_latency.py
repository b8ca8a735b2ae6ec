"""Latency of one interaction step of ``InteractiveSession`` at the paper's (30, 55, 55).

Splits a step into policy forward, confidence forward, guide (advice regions from cached
supervoxels) and mapping back onto the original grid, for a BraTS-sized scan
(240 x 240 x 155 voxels, a tumour-sized ROI resized to the network shape), and prints the
paper's Table 6 beside it. Every available inference backend (``mecca_rllib.inference``:
torch fp32, torch bf16 autocast, OpenVINO fp32 and bf16 hint) runs side by side in one run,
on the model loaded from a deployable export, with its speed-up over fp32 torch; then the
cold start of each (a fresh process: imports, load the export, start the volume, first step).
Variants: memory format (contiguous vs channels-last 3D, torch backends), torch intra-op
threads. Weights are random (Xavier): latency does not depend on training.

    .venv/bin/python benchmarks/interaction_latency.py --threads 2          # all backends
    .venv/bin/python benchmarks/interaction_latency.py --backends torch openvino --steps 10

Goal on an idle 2-core machine (issue 16): a whole step <= 100 ms at width 16 with the best
backend, >= 1.8x faster than fp32 torch (MECCA.md §7: the paper reports 631 ms per
interaction on an RTX 2080 Ti).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mecca_rllib.inference import available_backends, load_export, openvino_installed, save_export
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


def make_exports(width: int, shape: tuple[int, int, int], seed: int, folder: Path) -> dict[str, Path]:
    """A random module of ``width`` exported in every format installed: ``{format: folder}``."""
    torch.manual_seed(seed)
    module = build_module({"shape": shape, "width": width})
    formats = ("torch", "openvino") if openvino_installed() else ("torch",)
    return {f: save_export(module, folder / f"w{width}-{f}", format=f) for f in formats}


def export_for(backend: str, exports: dict[str, Path]) -> Path:
    return exports["openvino"] if backend.startswith("openvino") else exports["torch"]


def run_variant(export: Path, backend: str, memory_format: torch.memory_format,
                steps: int, seed: int) -> dict[str, float]:
    """Median milliseconds per stage over ``steps`` steps (after one warm-up step)."""
    module = load_export(export)
    shape = tuple(module.model_config["shape"])
    session = InteractiveSession(module, memory_format=memory_format, backend=backend)
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
    out["first_ms"] = session.timings[0].total_ms  # OpenVINO compiles for the shape here
    out["gflop"] = conv_gflop([module.trunk, module.policy_head, module.confidence_net], shape)
    out["cpu_ms"] = statistics.median(cpu_ms)
    out["full_ms"] = statistics.median(full_ms)
    return out


COLD_SCRIPT = """
import sys, time, json
t0 = time.perf_counter()
import numpy as np, torch
torch.set_num_threads(int(sys.argv[3]))
from mecca_rllib.session import InteractiveSession
t1 = time.perf_counter()
session = InteractiveSession.from_export(sys.argv[1], backend=sys.argv[2])
t2 = time.perf_counter()
rng = np.random.default_rng(0)
roi = json.loads(sys.argv[4])
session.start(rng.normal(size=tuple(json.loads(sys.argv[5]))).astype(np.float32), affine=np.eye(4), roi=roi)
t3 = time.perf_counter()
lo, hi = np.array(roi)[:, 0], np.array(roi)[:, 1]
session.click(rng.integers(lo, hi, size=(25, 3)))
session.step()
t4 = time.perf_counter()
print(json.dumps({"import": t1 - t0, "load": t2 - t1, "start": t3 - t2, "first": t4 - t3,
                  "ray": "ray" in sys.modules, "backend": session.backend.name}))
"""


def cold_start(export: Path, backend: str, threads: int, cache_dir: Path) -> dict[str, Any]:
    """Seconds of a fresh process: imports, loading the export (``auto``: timing the backends
    unless ``cache_dir`` already holds the choice), ``start`` (ROI + SLIC), first step
    (OpenVINO: compiling for the shape), and the whole process wall time."""
    start = time.perf_counter()
    env = os.environ | {"MECCA_CACHE_DIR": str(cache_dir)}
    proc = subprocess.run([sys.executable, "-c", COLD_SCRIPT, str(export), backend, str(threads),
                           json.dumps(ROI), json.dumps(SCAN_SHAPE)], capture_output=True, text=True,
                          cwd=Path(__file__).resolve().parents[1], timeout=900, env=env)
    wall = time.perf_counter() - start
    if proc.returncode:
        raise RuntimeError(f"cold start of {backend} failed: {proc.stderr[-1500:]}")
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    out["wall"] = wall
    return out


def cell(ms: float) -> str:
    return f"{ms:>6.0f}ms" if ms >= 10 else f"{ms:>6.1f}ms"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--width", type=int, nargs="+", default=[16])
    parser.add_argument("--threads", type=int, nargs="+", default=[torch.get_num_threads()])
    parser.add_argument("--formats", nargs="+", default=["channels_last_3d"],
                        choices=["channels_last_3d", "contiguous_format"],
                        help="memory formats of the torch backends")
    parser.add_argument("--backends", nargs="+", default=None,
                        help=f"default: every available one here ({', '.join(available_backends())})")
    parser.add_argument("--steps", type=int, default=5, help="timed steps per variant (median)")
    parser.add_argument("--no-cold", action="store_true", help="skip the cold-start table")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    backends = args.backends or list(available_backends())
    shape = (30, 55, 55)
    print(f"one interaction step at {shape}, scan {SCAN_SHAPE}, ROI {ROI}; torch {torch.__version__}, "
          f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}")
    columns = ("width", "threads", "backend", "memory format", "policy", "confid.", "guide", "mapping",
               "step", "speed-up", "CPU", "scan", "start", "1st step", "GFLOP/s")
    widths = (5, 7, 14, 17, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8)
    left = ("backend", "memory format")
    print(" ".join(f"{c:<{w}}" if c in left else f"{c:>{w}}" for c, w in zip(columns, widths)))
    print("-" * (sum(widths) + len(widths) - 1))
    tmp = tempfile.TemporaryDirectory(prefix="mecca-latency-")
    exports = {}
    for width in args.width:
        exports[width] = make_exports(width, shape, args.seed, Path(tmp.name))
        for threads in args.threads:
            torch.set_num_threads(threads)
            base = None
            for backend in backends:
                formats = args.formats if backend.startswith("torch") else ["-"]
                for name in formats:
                    fmt = torch.channels_last_3d if name == "-" else getattr(torch, name)
                    r = run_variant(export_for(backend, exports[width]), backend, fmt, args.steps, args.seed)
                    if backend == "torch" and base is None:
                        base = r["total_ms"]
                    ms = [r[k] for k in ("policy_ms", "confidence_ms", "guide_ms", "mapping_ms", "total_ms")]
                    rate = r["gflop"] / (r["policy_ms"] + r["confidence_ms"]) * 1e3
                    cells = [f"{width:>5}", f"{threads:>7}", f"{backend:<14}", f"{name:<17}"]
                    cells += [cell(v) for v in ms]
                    cells.append(f"{base / r['total_ms']:>7.2f}x" if base else f"{'-':>8}")
                    cells += [cell(r[k]) for k in ("cpu_ms", "full_ms", "setup_ms", "first_ms")]
                    cells.append(f"{rate:>8.0f}")
                    print(" ".join(cells), flush=True)
    if not args.no_cold:
        threads = args.threads[-1]
        print(f"\ncold start in a fresh process (width {args.width[0]}, {threads} threads): import "
              "mecca_rllib.session, load the export, start (ROI resize + SLIC), first step")
        columns = ("backend", "import", "load", "start", "1st step", "total", "process", "Ray")
        widths = (26, 8, 8, 8, 9, 8, 8, 4)
        print(" ".join(f"{c:<{w}}" if c == "backend" else f"{c:>{w}}" for c, w in zip(columns, widths)))
        print("-" * (sum(widths) + len(widths) - 1))
        cache_dir = Path(tmp.name) / "cache"  # empty: the first auto run times the backends
        rows = [(b, b) for b in backends] + [("auto", "auto, timing"), ("auto", "auto, cached")]
        for backend, label in rows:
            r = cold_start(export_for(backend, exports[args.width[0]]), backend, threads, cache_dir)
            total = r["import"] + r["load"] + r["start"] + r["first"]
            if backend == "auto":
                label = f"{label}: {r['backend']}"
            cells = [f"{label:<26}"] + [f"{r[k]:>7.2f}s" for k in ("import", "load", "start")]
            cells += [f"{r['first']:>8.2f}s", f"{total:>7.2f}s", f"{r['wall']:>7.2f}s",
                      f"{'yes' if r['ray'] else 'no':>4}"]
            print(" ".join(cells), flush=True)
    tmp.cleanup()
    print("\npaper, Table 6 (inference per interaction, one RTX 2080 Ti, 55 x 55 x 30): "
          + ", ".join(f"{k} {v} ms" for k, v in PAPER_TABLE6_MS.items()))
    print("step = policy + confidence + guide + mapping (wall-clock medians); speed-up = fp32 torch's "
          "step over this one's, same run; CPU = process CPU time of a step, all threads; scan = "
          "assembling the four full-scan arrays of a result (on first access, outside the step); "
          "start = ROI resize + SLIC of the whole supervoxel schedule, once per volume; 1st step = "
          "the first step (OpenVINO compiles for the volume shape there); GFLOP/s = the two "
          "forwards' convolution arithmetic over their wall time. The model is loaded from a "
          "`mecca export` folder (torch, or openvino for the OpenVINO backends). auto: the first "
          "session on a machine times the available backends on the model's shape and caches the "
          "choice (timing row); later ones read it (cached row).")

if __name__ == "__main__":
    main()
