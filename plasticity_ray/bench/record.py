"""What every benchmark record carries: where, when and how it was measured."""

from __future__ import annotations

import datetime
import os
import platform
import subprocess
import sys
from pathlib import Path


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def checkout() -> dict:
    """The commit this package was run from, and whether tracked files differed from it."""
    repo = Path(__file__).resolve().parents[2]

    def git(*args: str) -> str | None:
        done = subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True)
        return done.stdout.strip() if done.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    return {"commit": commit, "uncommitted_changes": bool(git("status", "--porcelain", "--untracked-files=no"))
            if commit else None}


def header(command: list[str]) -> dict:
    import ray
    import torch

    device = f"{cpu_name()}, {os.cpu_count()} cores"
    if torch.cuda.is_available():
        device = f"{torch.cuda.get_device_name()} + {device}"
    return {
        "device": device,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join(["plasticity-ray", *command]),
        "python": sys.version.split()[0],
        "ray": ray.__version__,
        "torch": torch.__version__,
        **checkout(),
    }
