"""Does MECCA's confidence net know more than its policy? And what three ways of acting give.

Trains an RL method as ``mecca bench --small --validation`` does (same settings, budget,
``--seed`` and ``--override``, ``--env-steps N`` another budget; or ``--load`` a state dict
saved by an earlier ``--save``),
then plays the bench's protocol on the dataset's *validation* cases and prints, per step:

- ``conf acc``: how often ``C(s, a) > 0.5`` matches whether the chosen action moves p toward
  the label (Eq. 7's target, MECCA.md §3), against ``policy acc``: how often the chosen
  action does move toward it. Equal rows mean the confidence says nothing the policy does
  not already act on, so the self-adaptive reward (Eq. 8) has nothing to add;
- the same two on the voxels that sat at p = 0.5 or 0.6 before the step, where one +-0.1
  move changes the voxel's side (undecided; at step 1 every voxel, all start at 0.5);
- mean Dice (%) with argmax actions (the bench's), sampled actions (MECCA.md §1: "every
  voxel-agent samples an action"), a confidence veto (the action's direction flipped
  where ``C(s, a) < 0.5``) and the same veto only on the voxels still undecided after the
  first step (``veto undecided``; README "Fourteenth round"), of the segmentation read out
  as ``--readout`` says (default: the bench's; README "Eleventh round" compared the two
  readouts on ``--load``-ed modules).

``--weighting scaled --scale K`` trains IteR-MRL with its gains times K (a weighting
registered here with ``register_weighting``): MECCA's gated reward is IteR-MRL's times
``w(0.5)`` where the confidence has no skill, so this separates the reward's scale from its
shape.

    .venv/bin/python benchmarks/confidence_check.py --dataset atlas --seed 0 --save /tmp/m0.pt
    .venv/bin/python benchmarks/confidence_check.py --dataset atlas --seed 0 --load /tmp/m0.pt
    .venv/bin/python benchmarks/confidence_check.py --weighting scaled --scale 0.4 --seed 0
"""
from __future__ import annotations

import argparse
import functools
import os
import sys

import numpy as np
import torch

from mecca_rllib.envs.readout import READOUTS

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _bench_validation import (add_bench_arguments, bench_settings, load_or_train,  # noqa: E402
                               open_validation, validation_episodes)

#: Voxels whose p before the step is one of these tenths count as undecided: one +-0.1 move
#: takes them across the threshold (foreground is p > 0.5, MECCA.md §1).
UNDECIDED_TENTHS = (5, 6)


def direction_agreement(values: np.ndarray, label: np.ndarray, confidence: np.ndarray,
                        where: np.ndarray | None = None) -> tuple[float, float]:
    """(confidence accuracy, policy direction accuracy) over the voxels in ``where`` (all by
    default): ``values`` the chosen actions' increments, ``label`` 0/1 and ``confidence``
    C(s, a) in (0, 1), all ``(D, H, W)``. NaN where no voxel counts."""
    toward = np.where(values > 0, label > 0, label == 0)  # Eq. 7's target
    keep = np.ones(values.shape, bool) if where is None else where
    if not keep.any():
        return float("nan"), float("nan")
    return float(((confidence > 0.5) == toward)[keep].mean()), float(toward[keep].mean())


def veto(actions: torch.Tensor, confidence: torch.Tensor, where: torch.Tensor | None = None) -> torch.Tensor:
    """Action indices with the direction flipped where ``confidence < 0.5`` (same size:
    index k -> 5 - k, since the action set is symmetric, MECCA.md §1), only inside the
    boolean mask ``where`` when given."""
    flip = confidence < 0.5 if where is None else (confidence < 0.5) & where
    return torch.where(flip, 5 - actions, actions)


def _scaled(inputs, scale: float = 0.4) -> torch.Tensor:
    """IteR-MRL's reward times ``scale``: r = scale * gain."""
    return inputs.gain * scale


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", default="atlas", help="bench dataset (phantoms, atlas or a folder)")
    p.add_argument("--weighting", default="confidence",
                   help="reward weighting: confidence (MECCA), none (IteR-MRL) or scaled")
    p.add_argument("--scale", type=float, default=0.4, help="--weighting scaled: the gains' factor")
    add_bench_arguments(p)
    p.add_argument("--load", default=None, help="a state dict saved by --save (skip training)")
    p.add_argument("--save", default=None, help="save the trained module's state dict here")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--readout", default=None, choices=READOUTS,
                   help="how p becomes the segmentation (default: the bench's)")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)

    from mecca_rllib.envs.rollout import (StepOutput, action_values, choose_actions, play_episode,
                                          probability, step_tenths)
    from mecca_rllib.metrics import dice as dice_score
    from mecca_rllib.policies.reward_shaping import register_weighting

    if args.weighting == "scaled" and not args.load:
        register_weighting("scaled", functools.partial(_scaled, scale=args.scale), overwrite=True)
    data = open_validation(args.dataset)
    module = load_or_train(args.weighting, data, bench_settings(args.seed, args.override),
                           load=args.load, save=args.save, env_steps=args.env_steps)

    agreement: list[list[tuple[float, float, float, float]]] = []
    dice: dict[str, list[list[float]]] = {"argmax": [], "sampled": [], "veto": [], "veto undecided": []}
    for mode in dice:
        generator = torch.Generator().manual_seed(args.seed)

        @torch.no_grad()
        def step(obs: np.ndarray, with_confidence: bool = False, *, label: np.ndarray) -> StepOutput:
            x = torch.from_numpy(np.ascontiguousarray(obs, dtype=np.float32))[None]
            actions = choose_actions(module.policy_logits(x), explore=mode == "sampled", generator=generator)
            if mode != "sampled":  # sampling reads no confidence
                values = action_values(actions)
                confidence = module.confidence(x, values)
                if mode == "argmax":
                    values, c = values[0].numpy(), confidence[0].numpy()
                    undecided = np.isin(np.rint(obs[1] * 10), UNDECIDED_TENTHS)
                    rows[-1].append(direction_agreement(values, label, c)
                                    + direction_agreement(values, label, c, undecided))
                elif mode == "veto":
                    actions = veto(actions, confidence)
                elif len(rows[-1]) > 0:  # after the first move: only where p is still undecided
                    undecided = torch.from_numpy(np.isin(np.rint(obs[1] * 10), UNDECIDED_TENTHS))
                    actions = veto(actions, confidence, undecided[None])
                if mode != "argmax":
                    rows[-1].append(())  # counts the steps of the episode
            tenths = step_tenths(torch.round(x[0, 1] * 10).to(torch.int8), actions[0])
            return StepOutput(p=probability(tenths).numpy(), actions=actions[0].to(torch.uint8).numpy())

        rows: list[list[tuple[float, float, float, float]]] = []
        for label, episode in validation_episodes(data, args.readout):
            rows.append([])
            records = play_episode(episode, lambda obs, with_confidence=False: step(obs, label=label))
            dice[mode].append([dice_score(rec.info["segmentation"], label) for rec in records])
        if mode == "argmax":
            agreement = rows

    table = np.nanmean(np.asarray(agreement, float), axis=0)  # (T, 4)
    steps = table.shape[0]
    print(f"{'per step':<34}" + "".join(f"{t:>8}" for t in range(1, steps + 1)))
    for k, name in enumerate(("conf acc (all voxels)", "policy acc (all voxels)",
                              "conf acc (p 0.5 or 0.6 before)", "policy acc (p 0.5 or 0.6 before)")):
        print(f"{name:<34}" + "".join(f"{v:>8.3f}" for v in table[:, k]))
    for mode, runs in dice.items():
        print(f"{'Dice % ' + mode:<34}" + "".join(f"{100 * v:>8.2f}" for v in np.mean(runs, axis=0)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
