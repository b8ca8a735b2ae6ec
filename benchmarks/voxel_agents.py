"""Voxels as agents, measured: RLlib ``MultiAgentEnv`` agent ids against MECCA's tensor axis.

MECCA is multi-agent: every voxel is an agent with a shared policy and its own reward, value
and advantage. The package keeps the agents on a tensor axis (``(B, N)`` batch columns); this
benchmark measures what the textbook RLlib mapping would cost at the same volume shape:

- ``multi-agent``: ``benchmarks/_voxel_multiagent.py``'s ``VoxelAgentsEnv``, one RLlib agent
  per voxel (``"v0"`` .. ``"v{N-1}"``), each observing its voxel's (image, p, hint) as a
  ``Box((3,))`` (``--patch R``: a (2R+1)^3 patch), ``Discrete(6)`` actions, reward = its own
  cross-entropy gain (``relative_gain``); all agents mapped to one shared policy
  (``multi_agent(policies={"shared"}, ...)``), sampled by RLlib's ``MultiAgentEnvRunner`` and
  trained by stock PPO with a tiny MLP default module (``fcnet_hiddens=[16]``, no head
  layers): the cheapest network RLlib offers, so the overhead is RLlib's per-agent machinery.
- ``tensor axis (MECCA)``: ``InteractiveSegEnv`` + ``MECCAConfig`` (width-16 dilated 3D CNN,
  a confidence net, per-voxel columns), ``num_env_runners=0``: one env step = one policy
  forward over the whole volume.
- ``tensor axis (PPO)``: the same env and module under ``MECCAPPOConfig`` (per-voxel PPO),
  the like-for-like algorithm of the multi-agent row (``--skip-ppo`` drops it).

Per path, after one warm-up: ``env.step`` alone (random actions; the multi-agent env builds
its per-agent dicts), ``env_runner.sample(num_timesteps=T, force_reset=True)`` per env step
(one episode of T steps, the reset included), one learner update
(``learner_group.update(episodes=...)``, one epoch, one minibatch = one gradient step over
the whole episode) and one ``algo.train()`` iteration of one episode. Episode memory: the
deep size of the sampled episode objects (Python objects + array buffers; gym spaces, which
the env owns, excluded). Medians over ``--repeats``.

    .venv/bin/python benchmarks/voxel_agents.py --threads 1
    .venv/bin/python benchmarks/voxel_agents.py --threads 1 --repeats 5 --patch 1

The run stops by itself: the multi-agent repeats are cut to fit ``--budget-s`` (printed when
that happens).
"""
from __future__ import annotations

import argparse
import gc
import os
import signal
import statistics
import sys
import time
from typing import Any, Callable

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

SHAPE = (8, 16, 16)


# ----------------------------------------------------------------------------- helpers
def _ms(values: list[float]) -> float:
    return 1e3 * statistics.median(values)


def deep_bytes(root: Any) -> int:
    """Rough deep size: Python objects reachable from ``root`` plus array buffers, each once.

    Gym spaces, types, modules and functions are skipped (shared with the env / code)."""
    import gymnasium as gym

    skip = (type, type(os), type(deep_bytes), type(len), gym.Space)
    seen: set[int] = set()
    storages: set[int] = set()
    total = 0
    stack = [root]
    while stack:
        obj = stack.pop()
        if id(obj) in seen or isinstance(obj, skip):
            continue
        seen.add(id(obj))
        if isinstance(obj, torch.Tensor):
            total += sys.getsizeof(obj)
            storage = obj.untyped_storage()
            if storage.data_ptr() not in storages:
                storages.add(storage.data_ptr())
                total += storage.nbytes()
            continue
        total += sys.getsizeof(obj)  # numpy: includes the buffer when the array owns it
        if isinstance(obj, np.ndarray):
            if obj.base is not None:
                stack.append(obj.base)
            if obj.dtype == object:
                stack.extend(obj.ravel().tolist())
            continue
        if isinstance(obj, (str, bytes, int, float, bool, complex, np.generic)) or obj is None:
            continue
        if isinstance(obj, dict):
            stack.extend(obj.keys())
            stack.extend(obj.values())
        elif isinstance(obj, (list, tuple, set, frozenset)):
            stack.extend(obj)
        if hasattr(obj, "__dict__"):
            stack.append(vars(obj))
        for cls in type(obj).__mro__:
            for slot in getattr(cls, "__slots__", ()) or ():
                if isinstance(slot, str) and hasattr(obj, slot):
                    stack.append(getattr(obj, slot))
    return total


def _timesteps(algo, episodes_before: int) -> dict[str, Any]:
    from ray.rllib.utils.metrics import NUM_ENV_STEPS_SAMPLED_LIFETIME, NUM_MODULE_STEPS_TRAINED_LIFETIME

    from mecca_rllib.policies.learner import EPISODES_TRAINED_LIFETIME

    return {NUM_ENV_STEPS_SAMPLED_LIFETIME: 0, NUM_MODULE_STEPS_TRAINED_LIFETIME: 0,
            EPISODES_TRAINED_LIFETIME: episodes_before}


def network_seconds(module: torch.nn.Module, batch: dict[str, torch.Tensor],
                    loss_keys: tuple[str, ...] | None = None) -> float:
    """One train forward + backward of ``module`` on ``batch`` (no optimizer, no connectors);
    the backward runs through the outputs named in ``loss_keys`` (None: all)."""
    from ray.rllib.core.columns import Columns

    start = time.perf_counter()
    out = module.forward_train(batch)
    loss = sum(v.sum() for k, v in out.items() if isinstance(v, torch.Tensor) and v.requires_grad
               and (loss_keys is None or k in loss_keys))
    if Columns.VF_PREDS not in out and hasattr(module, "compute_values"):
        loss = loss + module.compute_values(batch).sum()
    module.zero_grad(set_to_none=True)
    loss.backward()
    return time.perf_counter() - start


def inference_seconds(module: torch.nn.Module, batch: dict[str, torch.Tensor]) -> float:
    """One exploration forward of the env runner's module (what one env step needs)."""
    start = time.perf_counter()
    with torch.no_grad():
        module.forward_exploration(batch)
    return time.perf_counter() - start


def measure(name: str, make_env: Callable[[], Any], random_action: Callable[[Any], Any],
            build_algo: Callable[[], Any], steps: int, repeats: int,
            net_batch: Callable[[int], dict[str, torch.Tensor]], module_id: str,
            deadline: float | None = None, loss_keys: tuple[str, ...] | None = None) -> dict[str, Any]:
    """Median timings (s) and the episode's deep size (bytes) of one path."""
    from ray.rllib.core.rl_module.multi_rl_module import MultiRLModule

    row: dict[str, Any] = {"path": name, "notes": []}

    env = make_env()
    env.reset(seed=0)
    step_times = []
    for rep in range(repeats + 1):
        env.reset()
        action = random_action(env)
        for _ in range(steps):
            start = time.perf_counter()
            env.step(action)
            if rep:
                step_times.append(time.perf_counter() - start)
    row["env_step"] = step_times
    del env

    start = time.perf_counter()
    algo = build_algo()
    row["build_s"] = time.perf_counter() - start
    try:
        runner = algo.env_runner
        row["runner"] = type(runner).__name__
        module = algo.learner_group._learner.module[module_id]
        runner_module = runner.module  # SingleAgentEnvRunner: the RLModule itself
        if isinstance(runner_module, MultiRLModule):
            runner_module = runner_module[module_id]
        sample_times, update_times, train_times, net_times, act_times = [], [], [], [], []
        n_repeats, rep = repeats, 0
        while rep < n_repeats + 1:  # rep 0 warms up
            rep_start = time.perf_counter()
            start = time.perf_counter()
            episodes = runner.sample(num_timesteps=steps, force_reset=True)
            sample_s = time.perf_counter() - start
            done = [e for e in episodes if e.is_done]
            if rep == 0:
                row["episodes"] = len(episodes)
                row["agent_steps"] = sum(e.agent_steps() for e in episodes)
                row["env_steps"] = sum(e.env_steps() for e in episodes)
                gc.collect()
                row["episode_bytes"] = deep_bytes(episodes)
            start = time.perf_counter()
            algo.learner_group.update(episodes=done, timesteps=_timesteps(algo, rep), num_epochs=1)
            update_s = time.perf_counter() - start
            del episodes, done
            net_s = network_seconds(module, net_batch(row["agent_steps"]), loss_keys)
            act_s = inference_seconds(runner_module, net_batch(row["agent_steps"] // steps))
            start = time.perf_counter()
            algo.train()
            train_s = time.perf_counter() - start
            if rep:
                sample_times.append(sample_s / steps)
                update_times.append(update_s)
                train_times.append(train_s)
                net_times.append(net_s)
                act_times.append(act_s)
            elif deadline is not None:  # cut the repeats to what the budget allows
                per_rep = time.perf_counter() - rep_start
                fit = int((deadline - time.perf_counter()) // max(per_rep, 1e-9))
                if fit < n_repeats:
                    n_repeats = max(1, fit)
                    row["notes"].append(f"{name}: {n_repeats} measured repeat(s) instead of "
                                        f"{repeats} ({per_rep:.1f} s each, --budget-s)")
            rep += 1
        row.update(sample=sample_times, update=update_times, train=train_times, net=net_times,
                   act=act_times, repeats=n_repeats)
    finally:
        algo.stop()
    return row


# ----------------------------------------------------------------------------- paths
def multi_agent_path(args) -> dict[str, Any]:
    from ray.rllib.algorithms.ppo import PPOConfig
    from ray.rllib.core.rl_module.default_model_config import DefaultModelConfig

    from _voxel_multiagent import VoxelAgentsEnv

    env_config = {"shape": list(SHAPE), "num_cases": 16, "seed": args.seed, "steps": args.ma_steps,
                  "patch": args.patch}

    def make_env():
        return VoxelAgentsEnv(dict(env_config))

    def random_action(env):
        rng = np.random.default_rng(0)
        return dict(zip(env.agents, rng.integers(0, 6, env.n).tolist()))

    def build():
        config = (
            PPOConfig()
            .environment(VoxelAgentsEnv, env_config=env_config)
            .multi_agent(policies={"shared"}, policy_mapping_fn=lambda aid, *a, **k: "shared")
            .env_runners(num_env_runners=0, batch_mode="complete_episodes")
            .training(train_batch_size_per_learner=args.ma_steps, minibatch_size=None, num_epochs=1)
            .rl_module(model_config=DefaultModelConfig(fcnet_hiddens=[16], head_fcnet_hiddens=[]))
            .debugging(seed=args.seed)
        )
        return config.build_algo()

    obs_dim = 3 * (2 * args.patch + 1) ** 3

    def net_batch(rows: int) -> dict[str, torch.Tensor]:
        from ray.rllib.core.columns import Columns

        return {Columns.OBS: torch.randn(rows, obs_dim)}

    deadline = time.perf_counter() + args.budget_s
    row = measure("multi-agent (PPO, MLP)", make_env, random_action, build, args.ma_steps,
                  args.repeats, net_batch, "shared", deadline)
    if args.ma_steps != 5:
        row["notes"].append(f"multi-agent episodes have {args.ma_steps} steps, not 5 (--ma-steps)")
    return row


def _tensor_env_config(args) -> dict:
    return {"dataset": "synthetic", "shape": list(SHAPE), "num_cases": 16, "seed": args.seed, "steps": 5}


def _model_config(args) -> dict:
    return {"width": args.width, "dilations": [1, 2, 4, 8, 16], "conf_dilations": [1, 2, 4, 8, 16, 1]}


def tensor_path(args, algorithm: str) -> dict[str, Any]:
    from mecca_rllib import MECCAConfig
    from mecca_rllib.envs import InteractiveSegEnv
    from mecca_rllib.policies.ppo import MECCAPPOConfig

    def make_env():
        return InteractiveSegEnv(_tensor_env_config(args))

    def random_action(env):
        return np.random.default_rng(0).integers(0, 6, env.shape, dtype=np.int64)

    def build():
        if algorithm == "mecca":
            config = MECCAConfig().training(train_batch_size_per_learner=5)
            model = _model_config(args)
        else:
            config = MECCAPPOConfig().training(train_batch_size_per_learner=5, minibatch_size=None,
                                               num_epochs=1)
            model = {**_model_config(args), "sample_in_module": False}
        config = (
            config.environment("mecca_seg", env_config=_tensor_env_config(args))
            .rl_module(model_config=model)
            .env_runners(num_env_runners=0)
            .debugging(seed=args.seed)
        )
        return config.build_algo()

    def net_batch(rows: int) -> dict[str, torch.Tensor]:
        from ray.rllib.core.columns import Columns

        return {Columns.OBS: torch.randn(rows, 3, *SHAPE),
                Columns.ACTIONS: torch.randint(0, 6, (rows, *SHAPE))}

    from ray.rllib.core.columns import Columns

    name = "tensor axis (MECCA)" if algorithm == "mecca" else "tensor axis (PPO)"
    # PPO without the self-adaptive reward computes the confidence logits but has no loss
    # on them: its backward runs through the policy and value heads only.
    keys = None if algorithm == "mecca" else (Columns.ACTION_DIST_INPUTS, Columns.VF_PREDS)
    return measure(name, make_env, random_action, build, 5, args.repeats, net_batch,
                   "default_policy", loss_keys=keys)


# ----------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> None:
    global SHAPE
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1, help="torch.set_num_threads")
    parser.add_argument("--shape", type=int, nargs=3, default=SHAPE,
                        help="volume shape D H W (the issue's measurement: 8 16 16)")
    parser.add_argument("--repeats", type=int, default=5, help="measured repeats (after a warm-up)")
    parser.add_argument("--patch", type=int, default=0,
                        help="multi-agent observation: 0 = the voxel's 3 features, R = (2R+1)^3 patch")
    parser.add_argument("--ma-steps", type=int, default=5,
                        help="episode length of the multi-agent env (fewer if it is too slow)")
    parser.add_argument("--width", type=int, default=16, help="width of MECCA's CNN")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--budget-s", type=float, default=180.0,
                        help="wall-clock budget of the multi-agent path (repeats are cut to fit)")
    parser.add_argument("--skip-ppo", action="store_true", help="skip the tensor-axis PPO row")
    args = parser.parse_args(argv)
    SHAPE = tuple(args.shape)
    t0 = time.perf_counter()
    torch.set_num_threads(args.threads)

    def _stop(signum, frame):
        raise TimeoutError(f"voxel_agents.py: over {hard_limit} s, stopped")

    hard_limit = int(args.budget_s) + 300  # the multi-agent path fits budget_s; the rest is quick
    signal.signal(signal.SIGALRM, _stop)
    signal.alarm(hard_limit)

    import ray

    import mecca_rllib  # noqa: F401  (registers "mecca_seg")

    load = os.getloadavg()
    ray.init(include_dashboard=False, log_to_driver=False, configure_logging=False)
    rows = []
    try:
        rows.append(tensor_path(args, "mecca"))
        print(f"done: {rows[-1]['path']}", flush=True)
        if not args.skip_ppo:
            rows.append(tensor_path(args, "ppo"))
            print(f"done: {rows[-1]['path']}", flush=True)
        rows.append(multi_agent_path(args))
        print(f"done: {rows[-1]['path']}", flush=True)
    finally:
        signal.alarm(0)
        ray.shutdown()
    load_end = os.getloadavg()

    n = int(np.prod(SHAPE))
    print(f"\nvolume {SHAPE[0]}x{SHAPE[1]}x{SHAPE[2]} = {n} voxel agents, torch threads "
          f"{torch.get_num_threads()}, {os.cpu_count()} CPUs, load average (1/5/15 min) "
          f"{load[0]:.2f} {load[1]:.2f} {load[2]:.2f} at start, {load_end[0]:.2f} {load_end[1]:.2f} "
          f"{load_end[2]:.2f} at the end; medians; total {time.perf_counter() - t0:.0f} s\n")
    header = ("path", "env runner", "env step (ms)", "sampling per env step (ms)",
              "of which policy forward (ms)", "learner update (ms)",
              "of which network fwd+bwd (ms)", "train() iteration (ms)", "episode memory (MiB)",
              "RLlib agent steps / episode", "repeats")

    def cells(r: dict[str, Any]) -> list[float]:
        return [_ms(r["env_step"]), _ms(r["sample"]), _ms(r["act"]), _ms(r["update"]),
                _ms(r["net"]), _ms(r["train"]), r["episode_bytes"] / 2**20]

    formats = ("{:.2f}", "{:.1f}", "{:.2f}", "{:.1f}", "{:.1f}", "{:.0f}", "{:.2f}")
    print("| " + " | ".join(header) + " |")
    print("|" + "|".join("---" for _ in header) + "|")
    for r in rows:
        values = [f.format(v) for f, v in zip(formats, cells(r))]
        print(f"| {r['path']} | {r['runner']} | " + " | ".join(values)
              + f" | {r['agent_steps']} | {r['repeats']} |")
    base, ma = rows[0], rows[-1]
    ratios = [m / b for m, b in zip(cells(ma), cells(base))]
    print(f"| **ratio** multi-agent / {base['path']} | | "
          + " | ".join(f"{x:.3g}x" for x in ratios) + " | | |")
    overhead = {r["path"]: (_ms(r["sample"]) - _ms(r["env_step"]) - _ms(r["act"]),
                            _ms(r["update"]) - _ms(r["net"])) for r in rows}
    print("\nRLlib's share (total minus env step / network): "
          + "; ".join(f"{k}: {s:.1f} ms per env step sampled, {u:.0f} ms per update"
                      for k, (s, u) in overhead.items()))
    per_agent_us = 1e3 * _ms(ma["sample"]) / n
    episodes = ", ".join(f"{r['path']}: {r['episodes']}" for r in rows)
    builds = ", ".join(f"{r['path']}: {r['build_s']:.1f} s" for r in rows)
    print(f"\nmulti-agent sampling: {per_agent_us:.0f} us per agent step "
          f"({n / (_ms(ma['sample']) / 1e3):,.0f} agent steps/s); "
          f"episodes per sample: {episodes}; algorithm build: {builds}")
    print(f"tensor-axis rows run a width-{args.width} dilated 3D CNN (+ confidence net); the "
          "multi-agent row a 16-unit MLP per voxel. The 'of which' columns are separate calls "
          "(random inputs of the same shapes), so under load they can exceed their totals.")
    for r in rows:
        for note in r["notes"]:
            print(f"note: {note}")


if __name__ == "__main__":
    main()
