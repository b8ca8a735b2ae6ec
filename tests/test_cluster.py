"""A real local Ray cluster (issue 7): ``ray start --head`` on loopback with a temp dir,
``ray job submit`` of a tiny MECCA training job, success and a written checkpoint.

The job-submission server is part of Ray's dashboard, which needs ``ray[default]``
(aiohttp & co.); without it the test is skipped with that reason. The cluster is started
with ``--block`` in its own process group and torn down by signalling that group only
(``ray stop`` would stop every Ray instance of the user on this machine).
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

JOB = textwrap.dedent('''
    import sys

    import ray

    import mecca_rllib  # registers mecca_seg
    from mecca_rllib.train import build_algorithm_config

    ray.init()  # RAY_ADDRESS is set by the job supervisor
    config = build_algorithm_config({
        "env_config": {"dataset": "synthetic", "shape": [8, 16, 16], "num_cases": 4, "steps": 2,
                       "initial_clicks": 4, "clicks_per_step": 2, "hint_kernel": 2},
        "model_config": {"width": 4, "dilations": [1] * 5, "conf_dilations": [1] * 6},
        "training": {"train_batch_size_per_learner": 2},
        "env_runners": {"num_env_runners": 1},
        "seed": 0,
    })
    algo = config.build_algo()
    result = algo.train()
    path = algo.save_to_path(sys.argv[1])
    print("MECCA_JOB_DONE iteration", result["training_iteration"], "checkpoint", path)
    algo.stop()
''')


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ray_cli() -> str:
    return str(Path(sys.executable).with_name("ray"))


def _wait_for_dashboard(url: str, head: subprocess.Popen, timeout_s: float = 120.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if head.poll() is not None:
            raise RuntimeError(f"ray start exited with {head.returncode}")
        try:
            with urllib.request.urlopen(f"{url}/api/version", timeout=5) as response:
                json.load(response)
                return
        except urllib.error.HTTPError:  # the server answers (e.g. 401): it is up
            return
        except OSError:
            time.sleep(1.0)
    raise TimeoutError(f"the job server at {url} did not come up within {timeout_s} s")


@pytest.fixture
def local_cluster():
    """(dashboard URL, environment) of a fresh single-node cluster on 127.0.0.1; always torn down."""
    pytest.importorskip("aiohttp", reason="`ray job submit` needs ray[default] (the dashboard job server)")
    temp_dir = tempfile.mkdtemp(prefix="rayc", dir="/tmp")  # short: Ray's socket paths have a length limit
    dashboard_port = _free_port()
    # Loopback-only test cluster: Ray 2.60's token authentication off for it and its client.
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"} | {"RAY_AUTH_MODE": "disabled"}
    head = subprocess.Popen(
        [_ray_cli(), "start", "--head", "--block", "--node-ip-address=127.0.0.1",
         f"--port={_free_port()}", f"--temp-dir={temp_dir}", "--num-cpus=2", "--num-gpus=0",
         "--include-dashboard=true", "--dashboard-host=127.0.0.1",
         f"--dashboard-port={dashboard_port}", "--disable-usage-stats"],
        env=env, start_new_session=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    url = f"http://127.0.0.1:{dashboard_port}"
    try:
        _wait_for_dashboard(url, head)
        yield url, env
    finally:
        for sig, wait in ((signal.SIGTERM, 10), (signal.SIGKILL, 10)):
            if head.poll() is not None:
                break
            os.killpg(head.pid, sig)  # our cluster's process group only
            try:
                head.wait(timeout=wait)
            except subprocess.TimeoutExpired:
                continue
        try:
            os.killpg(head.pid, signal.SIGKILL)  # stragglers of the group, if any
        except ProcessLookupError:
            pass
        shutil.rmtree(temp_dir, ignore_errors=True)


@pytest.mark.slow
def test_ray_job_submit_trains_and_writes_a_checkpoint(local_cluster, tmp_path):
    script = tmp_path / "train_job.py"
    script.write_text(JOB)
    checkpoint = tmp_path / "checkpoint"
    url, env = local_cluster
    env = {**env, "RAY_ADDRESS": url}
    deadline = time.monotonic() + 240  # the dashboard answers before its job agent is ready
    while True:  # (on a loaded 2-core machine the agent took over a minute once)
        proc = subprocess.run(
            [_ray_cli(), "job", "submit", "--address", url, "--",
             sys.executable, str(script), str(checkpoint)],
            env=env, capture_output=True, text=True, timeout=400,
        )
        output = proc.stdout + proc.stderr
        if "No available agent to submit job" not in output or time.monotonic() > deadline:
            break
        time.sleep(10)
    assert proc.returncode == 0, output
    assert "succeeded" in output, output
    assert "MECCA_JOB_DONE iteration 1" in output, output
    assert (checkpoint / "rllib_checkpoint.json").is_file()
    assert any(checkpoint.rglob("*.pt")) or any(checkpoint.rglob("module_state*"))
