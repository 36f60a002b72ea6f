"""What every benchmark record carries: where, when and how it was measured."""

from __future__ import annotations

import datetime
import os
import platform
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
    }
