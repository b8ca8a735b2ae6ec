"""Forward / train-step time of the MECCA module per width and volume shape (prints a table).

    .venv/bin/python benchmarks/network_speed.py --shapes 10x20x20 30x55x55 --widths 8 16 32
"""
from __future__ import annotations

import argparse
import time

import torch
from ray.rllib.core.columns import Columns

from mecca_rllib.policies.checkpoints import build_module


def _ms(fn, repeats: int) -> float:
    fn()  # warm-up
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - start) / repeats * 1000.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shapes", nargs="+", default=["10x20x20", "30x55x55"])
    parser.add_argument("--widths", nargs="+", type=int, default=[8, 16, 32])
    parser.add_argument("--batch", type=int, default=5, help="train-step batch (env steps)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"{'shape':>10} {'width':>5} {'policy fwd ms':>14} {'confidence fwd ms':>18} {'train step ms':>14}")
    for text in args.shapes:
        shape = tuple(int(s) for s in text.split("x"))
        for width in args.widths:
            module = build_module({"width": width}, shape)
            g = torch.Generator().manual_seed(0)
            obs = torch.rand(1, 3, *shape, generator=g)
            batch = {Columns.OBS: torch.rand(args.batch, 3, *shape, generator=g),
                     Columns.ACTIONS: torch.randint(0, 6, (args.batch, *shape), generator=g)}
            with torch.inference_mode():
                pol = _ms(lambda: module.policy_logits(obs), args.repeats)
                conf = _ms(lambda: module.confidence(obs, torch.zeros(1, *shape)), args.repeats)

            def step() -> None:
                out = module.forward_train(batch)
                sum(v.float().mean() for v in out.values()).backward()

            train = _ms(step, 1)
            print(f"{text:>10} {width:>5} {pol:>14.1f} {conf:>18.1f} {train:>14.1f}")


if __name__ == "__main__":
    main()
