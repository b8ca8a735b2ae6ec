"""Training throughput: env steps per second of MECCA training through RLlib (``algo.train()``)
beside a bare torch loop doing the same sampling and update on the same module.

Each lever of the training speed is a flag, so a reader can see what each one buys:

- ``--envs N``: volumes per env-runner step (``num_envs_per_env_runner``; the policy
  forward batches them); one iteration trains on the N episodes;
- ``--contiguous``: contiguous convolutions instead of ``channels_last_3d``;
- ``--act-bf16`` / ``--train-bf16``: bf16 autocast (fp32 weights) of the action forward
  (sampling) / of the train forward (learner);
- ``--two-forwards``: the learner connector's separate no-grad forward of values and
  confidence (``training(one_forward=False)``), as before issue 13.

The bare loop uses the project's env, module, reward shaping and loss functions with
no RLlib in between: N envs stepped together with one batched policy forward per step,
then one train forward/backward and the two Adam steps.

    .venv/bin/python benchmarks/training_throughput.py                        # demo size, today's defaults
    .venv/bin/python benchmarks/training_throughput.py --envs 1 --contiguous --two-forwards   # as before
    .venv/bin/python benchmarks/training_throughput.py --size paper --iterations 2            # 30x55x55

Prints medians over ``--iterations`` measured iterations (after ``--warmup`` ones).
"""
from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch

SIZES = {
    # the demo preset (mecca_rllib/train.py): 10x20x20, width 16, short dilations
    "demo": dict(shape=(10, 20, 20), dilations=[1, 2, 4, 2, 1], conf_dilations=[1, 2, 4, 2, 1, 1],
                 initial_clicks=10, clicks_per_step=3, hint_kernel=4),
    # the paper preset: 30x55x55, dilations up to 16
    "paper": dict(shape=(30, 55, 55), dilations=[1, 2, 4, 8, 16], conf_dilations=[1, 2, 4, 8, 16, 1],
                  initial_clicks=25, clicks_per_step=5, hint_kernel=8),
}
STEPS = 5  # interactions per episode (MECCA.md §1)


def _configs(args) -> tuple[dict, dict]:
    size = SIZES[args.size]
    env = {"dataset": "synthetic", "shape": list(size["shape"]), "num_cases": 32, "steps": STEPS,
           "initial_clicks": size["initial_clicks"], "clicks_per_step": size["clicks_per_step"],
           "hint_kernel": size["hint_kernel"], "seed": args.seed}
    model = {"width": 16, "dilations": size["dilations"], "conf_dilations": size["conf_dilations"],
             "channels_last": not args.contiguous, "act_bf16": args.act_bf16,
             "train_bf16": args.train_bf16}
    return env, model


def bare_loop(args) -> list[float]:
    """Seconds per iteration (sample ``--envs`` episodes, one update) of the bare loop."""
    from ray.rllib.core.columns import Columns

    from mecca_rllib import MECCAConfig
    from mecca_rllib.envs import InteractiveSegEnv
    from mecca_rllib.policies.checkpoints import build_module
    from mecca_rllib.policies.connectors import RewardShaping
    from mecca_rllib.policies.distribution import VoxelCategorical
    from mecca_rllib.policies.learner import masked_mean, symmetric_confidence_loss
    from mecca_rllib.policies.returns import confidence_targets
    from mecca_rllib.policies.reward_shaping import get_weighting
    from mecca_rllib.policies.rl_module import CONF_LOGITS, CONF_LOGITS_FLIPPED

    env_config, model_config = _configs(args)
    cfg = MECCAConfig().training(lr=3e-3, confidence_lr=3e-3)
    torch.manual_seed(args.seed)
    module = build_module(model_config, tuple(env_config["shape"]))
    conf_ids = {id(p) for p in module.confidence_net.parameters()}
    seg_opt = torch.optim.Adam([p for p in module.parameters() if id(p) not in conf_ids], lr=cfg.lr)
    conf_opt = torch.optim.Adam(module.confidence_net.parameters(), lr=cfg.confidence_lr)
    shaping = RewardShaping(gamma=cfg.gamma, gae_lambda=None, weighting=get_weighting(cfg.reward_weighting),
                            params=cfg.weighting_params)
    envs = []
    for i in range(args.envs):
        env = InteractiveSegEnv(env_config)
        env.set_vector_slot(i, args.envs)
        envs.append(env)
    times = []
    for it in range(args.warmup + args.iterations):
        start = time.perf_counter()
        obs = np.stack([env.reset()[0] for env in envs])
        rows, p_next, actions, labels = [], [], [], []
        module.eval()
        for _ in range(STEPS):
            x = torch.from_numpy(obs)
            out = module._forward_exploration({Columns.OBS: x})
            act = out[Columns.ACTIONS].numpy()
            steps = [env.step(a) for env, a in zip(envs, act)]
            rows.append(obs)
            actions.append(act)
            obs = np.stack([s[0] for s in steps])
            p_next.append(obs[:, 1])
            labels = [s[4]["label"] for s in steps]
        # rows in episode order: (env, step)
        obs_t = torch.from_numpy(np.stack(rows, 1).reshape(-1, *obs.shape[1:]))
        act_t = torch.from_numpy(np.stack(actions, 1).reshape(-1, *obs.shape[2:]))
        p_next_t = torch.from_numpy(np.stack(p_next, 1).reshape(obs_t.shape[0], -1))
        label_t = torch.from_numpy(np.repeat(np.stack(labels).reshape(args.envs, 1, -1), STEPS, 1)
                                   .reshape(obs_t.shape[0], -1).astype(np.float32))
        episode_id = torch.arange(args.envs).repeat_interleave(STEPS)
        module.train()
        b = obs_t.shape[0]
        out = module.forward_train({Columns.OBS: obs_t, Columns.ACTIONS: act_t})
        values = out[Columns.VF_PREDS].reshape(b, -1)
        conf_logits = out[CONF_LOGITS].reshape(b, -1)
        mask = torch.ones_like(values)
        if args.two_forwards:
            with torch.no_grad():
                v = module.values(obs_t).reshape(b, -1)
                c = module.confidence(obs_t, module.action_values_of(act_t)).reshape(b, -1)
        else:
            v, c = values.detach(), torch.sigmoid(conf_logits).detach()
        adv, targets, _ = shaping.targets(p_prev=obs_t[:, 1].reshape(b, -1), p_next=p_next_t, label=label_t,
                                          values=v, confidence=c, episode_id=episode_id, mask=mask)
        conf_t = confidence_targets(module.action_values_of(act_t).reshape(b, -1), label_t)
        dist = VoxelCategorical(out[Columns.ACTION_DIST_INPUTS])
        loss = (masked_mean(-dist.logp(act_t) * adv, mask)
                + cfg.vf_loss_coeff * masked_mean((values - targets) ** 2, mask)
                - 0.01 * masked_mean(dist.entropy(), mask)
                + symmetric_confidence_loss(conf_logits, out[CONF_LOGITS_FLIPPED].reshape(b, -1), conf_t, mask))
        seg_opt.zero_grad(set_to_none=True)
        conf_opt.zero_grad(set_to_none=True)
        loss.backward()
        seg_opt.step()
        conf_opt.step()
        if it >= args.warmup:
            times.append(time.perf_counter() - start)
    return times


def rllib_loop(args) -> tuple[list[float], list[float], list[float]]:
    """Seconds per ``algo.train()`` iteration, and its sampling / learner-update timers."""
    from ray.rllib.utils.metrics import ENV_RUNNER_SAMPLING_TIMER, LEARNER_UPDATE_TIMER, TIMERS

    from mecca_rllib import MECCAConfig

    env_config, model_config = _configs(args)
    config = (
        MECCAConfig()
        .environment("mecca_seg", env_config=env_config)
        .rl_module(model_config=model_config)
        .training(lr=3e-3, confidence_lr=3e-3, entropy_coeff=0.01, one_forward=not args.two_forwards,
                  train_batch_size_per_learner=STEPS * args.envs)
        .env_runners(num_env_runners=0, num_envs_per_env_runner=args.envs)
        .debugging(seed=args.seed)
    )
    algo = config.build_algo()
    times, sample, update = [], [], []
    try:
        for it in range(args.warmup + args.iterations):
            start = time.perf_counter()
            result = algo.train()
            if it >= args.warmup:
                times.append(time.perf_counter() - start)
                sample.append(float(result[TIMERS][ENV_RUNNER_SAMPLING_TIMER]))
                update.append(float(result[TIMERS][LEARNER_UPDATE_TIMER]))
    finally:
        algo.stop()
    return times, sample, update


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", choices=sorted(SIZES), default="demo")
    parser.add_argument("--envs", type=int, default=4, help="volumes per env-runner step")
    parser.add_argument("--contiguous", action="store_true", help="contiguous instead of channels_last_3d")
    parser.add_argument("--act-bf16", action="store_true", help="bf16 autocast of the action forward")
    parser.add_argument("--train-bf16", action="store_true", help="bf16 autocast of the train forward")
    parser.add_argument("--two-forwards", action="store_true",
                        help="values/confidence from a separate no-grad forward (as before issue 13)")
    parser.add_argument("--iterations", type=int, default=10, help="measured iterations")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--skip-bare", action="store_true")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    import os

    import ray

    import mecca_rllib  # noqa: F401  (registers the env)

    ray.init(include_dashboard=False, log_to_driver=False, configure_logging=False)
    try:
        rllib, sample, update = rllib_loop(args)
        bare = None if args.skip_bare else bare_loop(args)
    finally:
        ray.shutdown()
    steps = STEPS * args.envs
    load = os.getloadavg()[0]
    levers = [f"envs {args.envs}", "contiguous" if args.contiguous else "channels_last_3d"]
    levers += ["act bf16"] * args.act_bf16 + ["train bf16"] * args.train_bf16
    levers += ["two forwards" if args.two_forwards else "one forward"]
    print(f"\nsize {args.size} {SIZES[args.size]['shape']}, {', '.join(levers)}; {steps} env steps per "
          f"iteration, torch threads {args.threads}, medians over {args.iterations} iterations, "
          f"load average {load:.2f}\n")
    print("| loop | iteration (ms) | sampling (ms) | update (ms) | env steps/s |")
    print("|---|---|---|---|---|")
    it = statistics.median(rllib)
    print(f"| RLlib `algo.train()` | {1e3 * it:.0f} | {1e3 * statistics.median(sample):.0f} | "
          f"{1e3 * statistics.median(update):.0f} | {steps / it:.1f} |")
    if bare is not None:
        b = statistics.median(bare)
        print(f"| bare torch | {1e3 * b:.0f} | | | {steps / b:.1f} |")
        print(f"\nRLlib / bare: {it / b:.2f}x")


if __name__ == "__main__":
    main()
