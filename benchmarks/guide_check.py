"""What the interaction guide gives MECCA: unguided clicks against clicks steered by the advice.

Trains MECCA as ``mecca bench --small --validation`` does (same settings, budget, ``--seed``
and ``--override``; or ``--load`` a state dict saved by ``--save``, also by
``confidence_check.py``), then plays the bench's protocol on the dataset's *validation*
cases three ways and prints mean Dice (%) per step:

- ``unguided``: the user clicks wrong edge points anywhere (the bench's ``MECCA`` row);
- ``guided, only``: only inside the 5 least confident SLIC supervoxels (MECCA.md §4, the
  bench's ``MECCA (guided)`` row; fewer clicks where those hold fewer wrong voxels);
- ``guided, first``: inside them first, the rest of the step's clicks elsewhere
  (``advice_mode="first"``).

    .venv/bin/python benchmarks/guide_check.py --dataset phantoms --seed 0 --save /tmp/m0.pt
    .venv/bin/python benchmarks/guide_check.py --dataset atlas --seed 0 --load /tmp/a0.pt
"""
from __future__ import annotations

import argparse
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _bench_validation import (add_bench_arguments, bench_settings, load_or_train,  # noqa: E402
                               open_validation)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", default="phantoms", help="bench dataset (phantoms, atlas or a folder)")
    add_bench_arguments(p)
    p.add_argument("--load", default=None, help="a MECCA state dict saved by --save (skip training)")
    p.add_argument("--save", default=None, help="save the trained module's state dict here")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)

    from mecca_rllib.baselines import ModuleSegmenter, with_schedule
    from mecca_rllib.bench.protocol import evaluate_method
    from mecca_rllib.bench.run import SMALL
    from mecca_rllib.guide import make_advice_fn

    data = open_validation(args.dataset)
    module = load_or_train("confidence", data, bench_settings(args.seed, args.override),
                           load=args.load, save=args.save, env_steps=args.env_steps)

    ways = {"unguided": (SMALL.protocol, None),
            "guided, only": (SMALL.protocol, make_advice_fn()),
            "guided, first": (with_schedule(SMALL.protocol, advice_mode="first"), make_advice_fn())}
    print(f"{'Dice % per step':<16}" + "".join(f"{t:>8}" for t in range(1, SMALL.protocol.schedule.steps + 1)))
    for name, (protocol, advice_fn) in ways.items():
        result = evaluate_method(ModuleSegmenter(module), data.test, protocol, advice_fn=advice_fn)
        dice = 100 * result.dice[..., 1:].mean(axis=(0, 1))
        print(f"{name:<16}" + "".join(f"{v:>8.2f}" for v in dice), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
