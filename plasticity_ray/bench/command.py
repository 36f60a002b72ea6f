"""`plasticity-ray bench main-command`: the README's main command timed as a whole — set-up
included — on fresh clones of this checkout's last commit, over several runs."""

from __future__ import annotations

import statistics
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Callable

from plasticity_ray.bench.record import header
from plasticity_ray.errors import UserError

# The README's first command; a test checks that the README says exactly this.
MAIN_COMMAND = ("python3 -m venv .venv && .venv/bin/pip install -q torch==2.13.0 -e . && "
                ".venv/bin/plasticity-ray sweep experiments/demo.yaml")
CONCLUSIONS = "conclusions per run group"


def _git(repo: Path, *args: str) -> str:
    result = subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True)
    if result.returncode:
        raise UserError(f"{repo}: not a git checkout ({result.stderr.strip()})")
    return result.stdout.strip()


def conclusions(output: str) -> list[str]:
    """The per-group conclusion lines the command printed at its end."""
    lines = output.splitlines()
    start = next((i for i, line in enumerate(lines) if line.startswith(CONCLUSIONS)), None)
    if start is None:
        return []
    return [line.strip() for line in lines[start + 1 :] if line.startswith("  ")][:50]


def bench_main_command(argv: list[str], runs: int, repo: Path, command: str = MAIN_COMMAND,
                       say: Callable[[str], None] = print) -> dict:
    """Clone `repo` afresh for every run, run `command` there with bash and time it from start to
    exit; the record has every run's wall seconds, exit code and printed conclusions, and the
    minimum, median and maximum."""
    commit = _git(repo, "rev-parse", "HEAD")
    dirty = bool(_git(repo, "status", "--porcelain", "--untracked-files=no"))
    results = []
    for i in range(runs):
        with tempfile.TemporaryDirectory(prefix="plasticity-ray-bench-") as tmp:
            clone = Path(tmp) / "clone"
            subprocess.run(["git", "clone", "--quiet", str(repo), str(clone)], check=True)
            say(f"run {i + 1}/{runs}: {command}  (in a fresh clone of {commit[:10]})")
            start = time.monotonic()
            done = subprocess.run(["bash", "-c", command], cwd=clone, capture_output=True, text=True)
            wall = time.monotonic() - start
            results.append({"wall_s": round(wall, 1), "exit_code": done.returncode,
                            "conclusions": conclusions(done.stdout)})
            say(f"  {wall:.1f} s, exit code {done.returncode}")
    walls = [r["wall_s"] for r in results]
    return {
        **header(argv), "timed": command, "commit": commit,
        "uncommitted_changes_left_out": dirty,
        "runs": results,
        "wall_s": {"min": min(walls), "median": statistics.median(walls), "max": max(walls)},
    }
