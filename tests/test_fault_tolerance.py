"""Fault tolerance (issue 7): a killed env runner is replaced and training continues; a
checkpointed run resumes with its iteration count and optimizer state intact."""
from __future__ import annotations

import os
import time

import numpy as np
import pytest
import torch

SHAPE = [8, 16, 16]


def _config(num_env_runners: int):
    from mecca_rllib.train import build_algorithm_config

    config = build_algorithm_config({
        "env_config": {"dataset": "synthetic", "shape": SHAPE, "num_cases": 4, "steps": 2,
                       "initial_clicks": 4, "clicks_per_step": 2, "hint_kernel": 2},
        "model_config": {"width": 4, "dilations": [1] * 5, "conf_dilations": [1] * 6},
        "training": {"lr": 1e-3, "confidence_lr": 1e-3, "train_batch_size_per_learner": 2},
        "env_runners": {"num_env_runners": num_env_runners},
        "seed": 0,
    })
    # RLlib 2.60 names: restart (not ignore) failed runners, without the default 60 s delay.
    return config.fault_tolerance(restart_failed_env_runners=True, delay_between_env_runner_restarts_s=0.0)



@pytest.fixture(scope="module")
def ray_local():
    import ray

    import mecca_rllib  # noqa: F401  (registers mecca_seg)

    ray.init(num_cpus=2, include_dashboard=False, ignore_reinit_error=True)
    yield ray
    ray.shutdown()


def _assert_same(a, b, path="optimizer"):
    """Nested optimizer states (dicts/lists of tensors, arrays, numbers) are equal."""
    if isinstance(a, dict):
        assert a.keys() == b.keys(), path
        for key in a:
            _assert_same(a[key], b[key], f"{path}/{key}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b)):
            _assert_same(x, y, f"{path}/{i}")
    elif isinstance(a, (torch.Tensor, np.ndarray)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b), err_msg=path)
    else:
        assert a == b, path


def _runner_pids(group) -> list[int]:
    return list(group.foreach_env_runner(lambda runner: os.getpid(), local_env_runner=False))


@pytest.mark.slow
def test_killed_env_runner_is_replaced_and_training_continues(ray_local):
    ray = ray_local
    algo = _config(num_env_runners=1).build_algo()
    try:
        algo.train()
        group = algo.env_runner_group
        (old_pid,) = _runner_pids(group)
        (actor,) = group._worker_manager.actors().values()
        ray.kill(actor, no_restart=False)  # a crash: Ray restarts the actor (max_restarts)
        results, deadline = [], time.monotonic() + 120.0
        while time.monotonic() < deadline:  # probed back at the start of an iteration
            results.append(algo.train())
            if group.num_healthy_remote_workers() == 1 and results[-1]["env_runners"].get(
                    "num_env_steps_sampled", 0) > 0:
                break
        assert group.num_healthy_remote_workers() == 1
        (new_pid,) = _runner_pids(group)
        assert new_pid != old_pid  # a new process, not the killed one
        assert results[-1]["training_iteration"] == 1 + len(results)
        # The replacement samples with synced weights and the learner trains on its episodes.
        assert results[-1]["env_runners"]["num_env_steps_sampled"] > 0
        assert np.isfinite(results[-1]["learners"]["default_policy"]["policy_loss"])
    finally:
        algo.stop()


def _values_of(tree, key: str) -> list:
    """All values stored under ``key`` anywhere in a nested dict/list."""
    if isinstance(tree, dict):
        return [v for k, v in tree.items() if k == key] + [
            x for v in tree.values() for x in _values_of(v, key)]
    if isinstance(tree, (list, tuple)):
        return [x for v in tree for x in _values_of(v, key)]
    return []


def _learner_state(algo) -> dict:
    return algo.learner_group.get_state()["learner"]


@pytest.mark.slow
def test_resume_from_checkpoint_keeps_iteration_and_optimizer_state(ray_local, tmp_path):
    from ray.rllib.algorithms.algorithm import Algorithm

    algo = _config(num_env_runners=0).build_algo()
    try:
        for _ in range(2):
            algo.train()
        checkpoint = algo.save_to_path(str(tmp_path / "ckpt"))
        saved = _learner_state(algo)
    finally:
        algo.stop()  # the "interruption"

    resumed = Algorithm.from_checkpoint(checkpoint)
    try:
        assert resumed.iteration == 2
        state = _learner_state(resumed)
        assert set(state["optimizer"]) == {"default_policy_segmentation", "default_policy_confidence"}
        _assert_same(saved["optimizer"], state["optimizer"])
        for name, optim_state in state["optimizer"].items():  # Adam moments, not fresh optimizers
            steps = _values_of(optim_state, "step")
            assert steps and min(float(np.asarray(s)) for s in steps) > 0, name
        result = resumed.train()
        assert result["training_iteration"] == 3
    finally:
        resumed.stop()
