"""The trainer's extension points: every step, every task end, and probe points.

Step and task-end hooks run on every rank (a mitigation that changes weights must do the same
thing everywhere); task-end hooks run before the task-end checkpoint, so a resumed run never
repeats or skips them. Probe-point hooks run on rank 0 after the probe-point checkpoint is written
and get its *path*, never a live model.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch

from plasticity_ray.rundir import ProbePoint
from plasticity_ray.spec.protocol import Task


@dataclass(frozen=True)
class StepEnd:
    model: torch.nn.Module  # unwrapped (not the DDP wrapper)
    optimizer: torch.optim.Optimizer
    task: Task
    step: int  # 0-based step within the task that just finished
    global_step: int
    rows: torch.Tensor  # this rank's token rows of the step (B × (seq_len + 1))


@dataclass(frozen=True)
class TaskEnd:
    model: torch.nn.Module
    task: Task
    global_step: int  # steps done so far in the run


@dataclass
class Hooks:
    # Step and task-end hooks may return counts ({"redo_recycled": 3}); the trainer keeps running
    # totals in every metrics row and in its checkpoints.
    step_end: list[Callable[[StepEnd], dict | None]] = field(default_factory=list)
    task_end: list[Callable[[TaskEnd], dict | None]] = field(default_factory=list)
    probe_point: list[Callable[[ProbePoint], None]] = field(default_factory=list)
