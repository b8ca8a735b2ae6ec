"""RLlib's overhead on MECCA: one training iteration through RLlib against the same work in a
bare torch loop, and sample throughput with 0 vs 2 remote env runners.

Bare loop: the same module class, env, reward weighting, returns and losses (the project's
own functions), with no RLlib in between: sample ``--batch`` env steps of complete episodes
(one policy forward + categorical sample + ``env.step`` per step), then ONE forward/backward
of the train forward (trunk, policy, value and confidence heads), A2C + confidence losses
and the two Adam steps. RLlib: ``MECCA.train()`` with the same batch size, 0 env runners,
a local learner; its sampling and learner-update timers are read from the results.

    .venv/bin/python benchmarks/overhead.py                       # 16x32x32, quick
    .venv/bin/python benchmarks/overhead.py --shape 30 55 55 --batch 40 --iterations 5

Goal (issue 8): RLlib learner update <= 1.3x the bare forward/backward. Prints a table of
medians over ``--iterations`` measured iterations (after one warm-up).
"""
from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch

GOAL_RATIO = 1.3


def _env_config(shape: tuple[int, int, int], seed: int) -> dict:
    return {"dataset": "synthetic", "shape": list(shape), "num_cases": 16, "seed": seed}


def _model_config(width: int) -> dict:
    return {"width": width, "dilations": [1, 2, 4, 8, 16], "conf_dilations": [1, 2, 4, 8, 16, 1]}


def bare_loop(shape, batch: int, width: int, iterations: int, seed: int) -> dict[str, list[float]]:
    """Seconds per bare-torch sampling and per update, one entry per measured iteration."""
    from ray.rllib.core.columns import Columns

    from mecca_rllib import MECCAConfig
    from mecca_rllib.envs import InteractiveSegEnv
    from mecca_rllib.policies.checkpoints import build_module
    from mecca_rllib.policies.distribution import VoxelCategorical
    from mecca_rllib.policies.learner import masked_mean, symmetric_confidence_loss
    from mecca_rllib.policies.returns import advantages_and_targets, confidence_targets
    from mecca_rllib.policies.reward_shaping import ShapingInputs, get_weighting
    from mecca_rllib.policies.rl_module import CONF_LOGITS, CONF_LOGITS_FLIPPED

    cfg = MECCAConfig()
    torch.manual_seed(seed)
    module = build_module(_model_config(width), shape)
    conf_ids = {id(p) for p in module.confidence_net.parameters()}
    seg_opt = torch.optim.Adam([p for p in module.parameters() if id(p) not in conf_ids], lr=cfg.lr)
    conf_opt = torch.optim.Adam(module.confidence_net.parameters(), lr=cfg.confidence_lr)
    weighting = get_weighting(cfg.reward_weighting)
    env = InteractiveSegEnv(_env_config(shape, seed))
    times: dict[str, list[float]] = {"sample": [], "update": []}

    for it in range(iterations + 1):
        start = time.perf_counter()
        obs_rows, p_next, actions, labels, lengths = [], [], [], [], []
        with torch.no_grad():
            while sum(lengths) < batch:
                obs, info = env.reset()
                done, t = False, 0
                while not done:
                    x = torch.from_numpy(obs)[None]
                    action = VoxelCategorical(module.policy_logits(x)).sample()[0]
                    obs_rows.append(obs)
                    obs, _, _, done, info = env.step(action.numpy())
                    p_next.append(obs[1].reshape(-1))
                    actions.append(action)
                    t += 1
                labels.append(info["label"].reshape(-1))
                lengths.append(t)
        sample_s = time.perf_counter() - start

        start = time.perf_counter()
        module.train()
        obs_t = torch.from_numpy(np.stack(obs_rows))
        act_t = torch.stack(actions).to(torch.int64)
        b = obs_t.shape[0]
        out = module.forward_train({Columns.OBS: obs_t, Columns.ACTIONS: act_t})
        values = out[Columns.VF_PREDS].reshape(b, -1)
        conf_logits = out[CONF_LOGITS].reshape(b, -1)
        action_values = module.action_values_of(act_t).reshape(b, -1)
        adv, targets, conf_t = (torch.zeros_like(values) for _ in range(3))
        row = 0
        for t, label in zip(lengths, labels):
            rows = slice(row, row + t)
            row += t
            y = torch.from_numpy(label.astype(np.float32))
            inputs = ShapingInputs(p_prev=obs_t[rows, 1].reshape(t, -1),
                                   p_next=torch.from_numpy(np.stack(p_next[rows])), label=y,
                                   confidence=torch.sigmoid(conf_logits[rows]).detach())
            rewards = weighting(inputs, cfg.weighting_params)  # MECCA.md §3, Eq. 8
            adv[rows], targets[rows] = advantages_and_targets(rewards, values[rows].detach(),
                                                              cfg.gamma, None)
            conf_t[rows] = confidence_targets(action_values[rows], y)  # Eq. 7
        mask = torch.ones_like(values)
        logp = VoxelCategorical(out[Columns.ACTION_DIST_INPUTS]).logp(act_t)
        loss = (masked_mean(-logp * adv, mask)
                + cfg.vf_loss_coeff * masked_mean((values - targets) ** 2, mask)
                + symmetric_confidence_loss(conf_logits, out[CONF_LOGITS_FLIPPED].reshape(b, -1),
                                            conf_t, mask))
        seg_opt.zero_grad(set_to_none=True)
        conf_opt.zero_grad(set_to_none=True)
        loss.backward()
        seg_opt.step()
        conf_opt.step()
        update_s = time.perf_counter() - start
        if it:  # the first iteration warms up
            times["sample"].append(sample_s)
            times["update"].append(update_s)
    return times


def rllib_loop(shape, batch: int, width: int, iterations: int, seed: int,
               env_runners: int = 0) -> dict[str, list[float]]:
    """Seconds per ``MECCA.train()`` iteration and its sampling / learner-update timers."""
    from ray.rllib.utils.metrics import (
        ENV_RUNNER_RESULTS,
        ENV_RUNNER_SAMPLING_TIMER,
        LEARNER_UPDATE_TIMER,
        NUM_ENV_STEPS_SAMPLED_LIFETIME,
        TIMERS,
    )

    from mecca_rllib import MECCAConfig

    config = (
        MECCAConfig()
        .environment("mecca_seg", env_config=_env_config(shape, seed))
        .rl_module(model_config=_model_config(width))
        .training(train_batch_size_per_learner=batch)
        .env_runners(num_env_runners=env_runners)
        .debugging(seed=seed)
    )
    algo = config.build_algo()
    times: dict[str, list[float]] = {"iteration": [], "sample": [], "update": [], "steps": []}
    try:
        last_steps = 0
        for it in range(iterations + 1):
            start = time.perf_counter()
            result = algo.train()
            elapsed = time.perf_counter() - start
            steps = int(result[ENV_RUNNER_RESULTS][NUM_ENV_STEPS_SAMPLED_LIFETIME])
            if it:
                times["iteration"].append(elapsed)
                times["sample"].append(float(result[TIMERS][ENV_RUNNER_SAMPLING_TIMER]))
                times["update"].append(float(result[TIMERS][LEARNER_UPDATE_TIMER]))
                times["steps"].append(steps - last_steps)
            last_steps = steps
    finally:
        algo.stop()
    return times


def _ms(values: list[float]) -> float:
    return 1e3 * statistics.median(values)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", type=int, nargs=3, default=(16, 32, 32))
    parser.add_argument("--batch", type=int, default=20, help="env steps per iteration")
    parser.add_argument("--width", type=int, default=16)
    parser.add_argument("--iterations", type=int, default=3, help="measured iterations")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None,
                        help="torch intra-op threads (default: torch's choice)")
    parser.add_argument("--skip-runners", action="store_true",
                        help="skip the 0 vs 2 env runner throughput (starts 2 processes)")
    args = parser.parse_args(argv)
    shape = tuple(args.shape)
    if args.threads:
        torch.set_num_threads(args.threads)

    import ray

    import mecca_rllib  # noqa: F401  (registers the env)

    ray.init(include_dashboard=False, log_to_driver=False, configure_logging=False)
    try:
        bare = bare_loop(shape, args.batch, args.width, args.iterations, args.seed)
        print(f"bare torch: sample {_ms(bare['sample']):.0f} ms, update {_ms(bare['update']):.0f} ms",
              flush=True)
        local = rllib_loop(shape, args.batch, args.width, args.iterations, args.seed)
        print(f"RLlib, 0 env runners: iteration {_ms(local['iteration']):.0f} ms", flush=True)
        remote = None
        if not args.skip_runners:
            remote = rllib_loop(shape, args.batch, args.width, args.iterations, args.seed, 2)
            print(f"RLlib, 2 env runners: iteration {_ms(remote['iteration']):.0f} ms", flush=True)
    finally:
        ray.shutdown()

    print(f"\nshape {shape}, batch {args.batch} env steps, width {args.width}, "
          f"torch threads {torch.get_num_threads()}, medians over {args.iterations} iterations\n")
    print(f"| {'what':<44} | {'bare torch':>10} | {'RLlib':>10} | {'ratio':>6} |")
    print(f"|{'-' * 46}|{'-' * 12}|{'-' * 12}|{'-' * 8}|")
    rows = [
        ("learner update (forward/backward + Adam), ms", _ms(bare["update"]), _ms(local["update"])),
        ("sampling of the batch, ms", _ms(bare["sample"]), _ms(local["sample"])),
        ("whole iteration, ms", _ms(bare["sample"]) + _ms(bare["update"]), _ms(local["iteration"])),
    ]
    for name, b, r in rows:
        print(f"| {name:<44} | {b:10.1f} | {r:10.1f} | {r / b:5.2f}x |")
    ratio = _ms(local["update"]) / _ms(bare["update"])
    verdict = "meets" if ratio <= GOAL_RATIO else "misses"
    print(f"\nlearner update ratio {ratio:.2f}x {verdict} the goal of <= {GOAL_RATIO}x")
    if remote is not None:
        print(f"\n| {'env runners':<12} | {'env steps/s (sampling)':>22} | {'iteration, ms':>14} |")
        print(f"|{'-' * 14}|{'-' * 24}|{'-' * 16}|")
        for n, t in ((0, local), (2, remote)):
            rate = statistics.median(s / max(x, 1e-9) for s, x in zip(t["steps"], t["sample"]))
            print(f"| {n:<12} | {rate:22.1f} | {_ms(t['iteration']):14.1f} |")


if __name__ == "__main__":
    main()
