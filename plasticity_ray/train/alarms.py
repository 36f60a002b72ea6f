"""Online plasticity alarms: cheap signals at the end of every task, from what training already has,
and an alarm row when a signal crosses the threshold the spec sets (`alarms`).

- grad_norm_ratio: the task's mean gradient norm (over its metric rows) ÷ the first task's.
- near_zero_fraction: the fraction of MLP activations with |h| < `near_zero` on the task's last
  training batch (all ranks, averaged).
- adaptation_ratio: how much the loss fell over the task's first `window` steps, ÷ the same
  language's fall on its first visit — how fast the model still adapts when a language returns.

Signals go to `signals.jsonl` and TensorBoard (`signals/...`), alarms to `alarms.jsonl`. The
references (first task, first visits) are re-read from `signals.jsonl` after a restart, so a
resumed run raises the same alarms.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.distributed as dist

from plasticity_ray.spec.protocol import Task
from plasticity_ray.spec import AlarmSpec
from plasticity_ray.rundir import ALARMS_FILE, SIGNALS_FILE, read_jsonl
from plasticity_ray.train.metrics import RunLog


@torch.no_grad()
def near_zero_fraction(model, rows: torch.Tensor, threshold: float) -> float:
    counts = torch.zeros(2, device=rows.device)

    def hook(module, inputs, output) -> None:
        counts[0] += (output.abs() < threshold).sum()
        counts[1] += output.numel()

    handles = [block.mlp.act.register_forward_hook(hook) for block in model.blocks]
    try:
        model.hidden_states(rows[:, :-1])
    finally:
        for h in handles:
            h.remove()
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(counts)
    return (counts[0] / counts[1]).item()


def adaptation_drop(task_rows: list[dict], window: int) -> float | None:
    """Relative fall of the loss from the task's first metric row to its row at `window` steps."""
    if len(task_rows) < 2:
        return None
    later = next((r for r in task_rows if r["step"] >= window), task_rows[-1])
    return (task_rows[0]["loss"] - later["loss"]) / task_rows[0]["loss"]


class AlarmBook:
    """Rank 0's record of signals and alarms for one run."""

    def __init__(self, spec: AlarmSpec, run_dir: Path, keep_until: int | None = None):
        """`keep_until`: as `RunLog`'s: a resumed run measures the tasks after its checkpoint again
        (signals only: one task can raise several alarms, which `RunLog`'s trim would merge)."""
        self.spec = spec
        self.signals = RunLog(run_dir, SIGNALS_FILE, tensorboard="signals", keep_until=keep_until)
        self.alarms = RunLog(run_dir, ALARMS_FILE, tensorboard=None)
        self.history = read_jsonl(run_dir / SIGNALS_FILE, key=("task",))

    def record(self, task: Task, global_step: int, tokens_seen: int, task_rows: list[dict],
               near_zero: float) -> list[dict]:
        self.history = [r for r in self.history if r["task"] < task.index]  # a redone task replaces its row
        first = self.history[0] if self.history else None
        grad_norm = sum(r["grad_norm"] for r in task_rows) / len(task_rows)
        drop = adaptation_drop(task_rows, self.spec.window)
        first_visit = next((r for r in self.history if r["language"] == task.language), None)
        row = {
            "task": task.index, "cycle": task.cycle, "language": task.language, "global_step": global_step,
            "tokens_seen": tokens_seen, "grad_norm_mean": grad_norm, "adaptation_drop": drop,
            "near_zero_fraction": near_zero,
            "grad_norm_ratio": grad_norm / first["grad_norm_mean"] if first else 1.0,
            "adaptation_ratio": (drop / first_visit["adaptation_drop"]
                                 if first_visit and drop is not None and first_visit["adaptation_drop"] else None),
        }
        self.signals.write(row, step=global_step, prefix="signals")
        self.history.append(row)
        raised = []
        checks = (("grad_norm_ratio", self.spec.grad_norm_ratio_above, 1),
                  ("near_zero_fraction", self.spec.near_zero_fraction_above, 1),
                  ("adaptation_ratio", self.spec.adaptation_ratio_below, -1))
        for signal, threshold, direction in checks:
            value = row[signal]
            if threshold is not None and value is not None and direction * (value - threshold) > 0:
                alarm = {"signal": signal, "value": value, "threshold": threshold, "task": task.index,
                         "cycle": task.cycle, "language": task.language, "global_step": global_step,
                         "tokens_seen": tokens_seen}
                self.alarms.write(alarm)
                raised.append(alarm)
        return raised

    def close(self) -> None:
        self.signals.close()
        self.alarms.close()
