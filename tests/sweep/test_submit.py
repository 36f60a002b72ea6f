"""Submitting a sweep as a Ray job to a real head started with `ray start --head` on 127.0.0.1,
with token authentication on, then reading its results table."""

import json
import os
import secrets
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from plasticity_ray.submit import SubmitError, entrypoint

pytestmark = pytest.mark.slow

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
CLI = [sys.executable, "-m", "plasticity_ray.cli"]


def _free_ports(count: int) -> list[int]:
    """Distinct free ports (all held open until each is known, so none repeats)."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def _answers(address: str) -> bool:
    try:
        urllib.request.urlopen(address + "/api/version", timeout=5)
    except urllib.error.HTTPError:
        return True  # up, and asking for the token
    except OSError:
        return False
    return True


@pytest.fixture(scope="module")
def head(tmp_path_factory):
    """A separate one-node cluster; `--block` ties its processes to ours, so stopping it leaves the
    session's Ray alone (`ray stop` would not)."""
    tmp_path = tmp_path_factory.mktemp("head")
    port, dashboard, agent, agent_grpc, metrics, runtime_env = _free_ports(6)
    # The job's `python` is the one on the head's PATH: this environment's, as on an activated venv.
    env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(16),
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    ray_cli = Path(sys.executable).parent / "ray"
    # The session's Ray runs on this machine too: every port of the second node must be its own, or
    # its dashboard agent cannot bind and jobs are refused ("No available agent to submit job").
    process = subprocess.Popen(
        [str(ray_cli), "start", "--head", "--block", "--node-ip-address=127.0.0.1", f"--port={port}",
         "--dashboard-host=127.0.0.1", f"--dashboard-port={dashboard}", "--num-cpus=3",
         f"--dashboard-agent-listen-port={agent}", f"--dashboard-agent-grpc-port={agent_grpc}",
         f"--metrics-export-port={metrics}", f"--runtime-env-agent-port={runtime_env}",
         f"--temp-dir={tmp_path / 'ray'}", "--disable-usage-stats"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    address = f"http://127.0.0.1:{dashboard}"
    deadline = time.time() + 120
    while not _answers(address):  # the dashboard comes up a little after the head
        assert process.poll() is None and time.time() < deadline, "the head did not start"
        time.sleep(1)
    yield address, env
    process.terminate()
    process.wait(timeout=60)


def test_submit_runs_the_sweep_as_a_job_and_its_results_are_readable(head, tmp_path):
    address, env = head
    storage = tmp_path / "storage"
    submitted = subprocess.run(
        CLI + ["submit", str(HERE / "tiny_sweep.yaml"), "--address", address, "--storage", str(storage), "--follow"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=600,
    )
    assert submitted.returncode == 0, submitted.stdout[-4000:] + submitted.stderr[-4000:]
    assert "SUCCEEDED" in submitted.stdout
    # The plan's one line: from `submit` before it submits, then from the sweep in the job's logs.
    assert submitted.stdout.startswith("plan: 1 trial(s), ") and submitted.stdout.count("plan: 1 trial(s), ") == 2
    table = subprocess.run(CLI + ["results", str(storage / "tiny_sweep"), "--json"], capture_output=True, text=True,
                           cwd=REPO, check=True)
    result = json.loads(table.stdout)
    assert [t["status"] for t in result["trials"]] == ["complete"]
    assert len(result["probes"]) == 2


def test_submit_with_a_wrong_token_is_refused(head):
    address, env = head
    env = {**env, "RAY_AUTH_TOKEN": secrets.token_hex(16)}
    refused = subprocess.run(CLI + ["submit", str(HERE / "tiny_sweep.yaml"), "--address", address], cwd=REPO, env=env,
                             capture_output=True, text=True, timeout=120)
    assert refused.returncode != 0
    assert refused.stderr.startswith(f"error: cannot submit to {address}"), refused.stderr[-2000:]


def test_a_spec_outside_the_uploaded_project_is_an_error(tmp_path):
    with pytest.raises(SubmitError, match="must lie inside"):
        entrypoint(tmp_path / "spec.yaml", REPO, None, [])
    assert entrypoint(HERE / "tiny_sweep.yaml", REPO, "/shared/runs", ["--resume"]) == (
        "python -m plasticity_ray.cli sweep tests/sweep/tiny_sweep.yaml --storage /shared/runs --resume"
    )
