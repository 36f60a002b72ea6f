"""The trainer's extension points: the gradients of every step, every step's end, every task's start
and end, and probe points.

Gradient hooks run after the step's backward pass (DDP has averaged the gradients) and before
clipping and the optimizer step: a penalty added to the loss adds its gradient there, the same on
every rank (one computed from this rank's rows averages its gradient over the ranks itself). Step, task-start and task-end hooks run on every rank too (a mitigation that changes
weights must do the same thing everywhere); task-start hooks run when a task starts from its first
step (after a continual run's fresh optimizer), task-end hooks before the task-end checkpoint, so a
resumed run never repeats or skips them. A hook with `attach(model)` is attached to the freshly
initialised model before any checkpoint is loaded. Probe-point hooks run on rank 0 after the probe-point checkpoint is written
and get its *path*, never a live model.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field, replace
from typing import Callable, Sequence

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
class Gradients:
    model: torch.nn.Module  # unwrapped; its parameters' .grad hold the step's averaged gradients
    task: Task
    step: int
    global_step: int
    micro_batches: Sequence[torch.Tensor] = ()  # this rank's token rows of the step, as trained
    precision: Callable = contextlib.nullcontext  # the training forward's precision context
    loss: torch.Tensor | None = None  # this rank's mean loss of the step (set once it is known)


@dataclass(frozen=True)
class TaskStart:
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    task: Task
    global_step: int  # steps done so far in the run


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
    gradients: list[Callable[[Gradients], None]] = field(default_factory=list)
    task_start: list[Callable[[TaskStart], dict | None]] = field(default_factory=list)

    def training(self) -> list:
        """The hooks that act on training, in the order their checkpointed states are kept."""
        return self.step_end + self.task_end + self.gradients + self.task_start

    def attachable(self) -> list:
        """The training hooks that watch the model (`attach(model)`), for `recipe.build`."""
        return [hook for hook in self.training() if hasattr(hook, "attach")]

    def penalties(self, event: Gradients) -> Callable[[torch.Tensor], None] | None:
        """What `train_step` runs once the step's gradients are complete, given the step's loss: every
        gradient hook on `event` (None when there is none)."""
        if not self.gradients:
            return None

        def run(loss: torch.Tensor) -> None:
            for hook in self.gradients:
                hook(replace(event, loss=loss))

        return run
    probe_point: list[Callable[[ProbePoint], None]] = field(default_factory=list)
