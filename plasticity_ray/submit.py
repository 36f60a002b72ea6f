"""Submitting a sweep to a Ray cluster as a Ray job (the project uploaded as its working_dir).

The job's entrypoint is `python -m plasticity_ray.cli sweep SPEC ...` run on the head node, so the
cluster's storage_path must be shared storage. The upload is capped (about 100 MiB), so prepared
data, checkpoints, results and environments never travel with it.
"""

from __future__ import annotations

import asyncio
import shlex
import time
from pathlib import Path
from typing import Callable

from ray.exceptions import AuthenticationError
from ray.job_submission import JobStatus, JobSubmissionClient

from plasticity_ray.errors import UserError

PROJECT_ROOT = Path(__file__).resolve().parent.parent
UPLOAD_EXCLUDES = [
    ".git", ".venv", ".devcarry", "runs", "results", "**/__pycache__", "*.egg-info", ".pytest_cache",
    "*.pt", "*.parquet", "*.arrow", "events.out.tfevents.*",
]
PENDING_WARNING_S = 15.0
AGENT_WAIT_S = 180.0  # a loaded head can take minutes to start its job agent


class SubmitError(UserError):
    pass


def entrypoint(spec_path: Path, root: Path, storage: str | None, extra: list[str]) -> str:
    spec_path = spec_path.resolve()
    try:
        relative = spec_path.relative_to(root)
    except ValueError:
        raise SubmitError(f"{spec_path}: the spec must lie inside {root}, which is what the job uploads") from None
    args = ["python", "-m", "plasticity_ray.cli", "sweep", relative.as_posix()]
    if storage:
        args += ["--storage", storage]
    return shlex.join(args + list(extra))


def submit(spec_path: Path, address: str, storage: str | None = None, extra: list[str] = (),
           root: Path = PROJECT_ROOT, say: Callable[[str], None] = print) -> tuple[JobSubmissionClient, str]:
    """Submit the sweep; returns the client and the job id. Says so when the job waits in PENDING."""
    command = entrypoint(spec_path, root, storage, list(extra))
    try:
        client = JobSubmissionClient(address)
        job_id = _submit_when_ready(client, command, root, spec_path, say)
    except (ConnectionError, RuntimeError, AuthenticationError) as err:  # unreachable, refused, wrong token
        raise SubmitError(f"cannot submit to {address}: {str(err).strip().splitlines()[0]}") from None
    say(f"submitted {job_id}: {command}")
    say(f"  status: ray job status {job_id} --address {address}; logs: ray job logs {job_id} --address {address} --follow")
    started = time.time()
    while client.get_job_status(job_id) == JobStatus.PENDING:
        if time.time() - started > PENDING_WARNING_S:
            say(f"  {job_id} is still PENDING after {PENDING_WARNING_S:.0f} s: the cluster may be installing the "
                "runtime environment, or it lacks the resources the entrypoint needs (check `ray status`)")
            break
        time.sleep(1.0)
    return client, job_id


def _submit_when_ready(client: JobSubmissionClient, command: str, root: Path, spec_path: Path,
                       say: Callable[[str], None]) -> str:
    deadline = time.time() + AGENT_WAIT_S
    while True:
        try:
            return client.submit_job(
                entrypoint=command,
                runtime_env={"working_dir": str(root), "excludes": UPLOAD_EXCLUDES},
                metadata={"tool": "plasticity-ray", "spec": spec_path.name},
            )
        except RuntimeError as err:  # a head that has just started has no job agent for a few seconds
            if "No available agent" not in str(err) or time.time() > deadline:
                raise
            say("the cluster's job agent is not up yet; trying again")
            time.sleep(2.0)


def follow(client: JobSubmissionClient, job_id: str, say: Callable[[str], None] = print) -> JobStatus:
    """Print the job's logs as they come until it ends; returns its final status."""

    async def tail() -> None:
        async for lines in client.tail_job_logs(job_id):
            say(lines.rstrip("\n"))

    asyncio.run(tail())
    while not (status := client.get_job_status(job_id)).is_terminal():
        time.sleep(1.0)
    return status
