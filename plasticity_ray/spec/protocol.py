"""What a spec's schedule resolves to, with nothing but the spec: the task instances, which of
them are probe points, and how many trials run at once on a cluster. The trainer, the schedule, the
sweep and the planner all ask here (no torch, no Ray: `plan` stays quick)."""

from __future__ import annotations

import math
from dataclasses import dataclass

from plasticity_ray.spec.schema import ExperimentSpec


@dataclass(frozen=True)
class Task:
    index: int
    cycle: int
    position: int  # place in the cycle, 0-based
    language: str | None  # None in stationary mode (a mixture)


def task_info(spec: ExperimentSpec, index: int) -> Task:
    languages = spec.data.languages
    cycle, position = divmod(index, len(languages))
    language = languages[position] if spec.schedule.mode == "continual" else None
    return Task(index, cycle, position, language)


def is_probe_point(spec: ExperimentSpec, task: Task) -> bool:
    """Continual: the end of every `probe.every_cycles`-th cycle, and after each language of
    `probe.extended` in its cycles. Stationary: every `probe.every_tokens` of training."""
    if not spec.probe.enabled:
        return False
    if task.language is None:
        return (task.index + 1) % spec.tasks_per_probe == 0
    if task.position == len(spec.data.languages) - 1:
        return (task.cycle + 1) % spec.probe.every_cycles == 0
    extended = spec.probe.extended
    return extended is not None and task.language in extended.languages and extended.covers(task.cycle)


def is_deferred(spec: ExperimentSpec, task: Task) -> bool:
    """An extended probe point kept unprobed until the group's decisions place it (near_minimum)."""
    extended = spec.probe.extended
    return (extended is not None and extended.near_minimum is not None and is_probe_point(spec, task)
            and task.position != len(spec.data.languages) - 1)


def probe_ordinal(spec: ExperimentSpec, task_index: int) -> int:
    """How many probe points come before task `task_index`'s (the same on every restart)."""
    return sum(is_probe_point(spec, task_info(spec, i)) for i in range(task_index))


def per_trial(spec: ExperimentSpec) -> dict[str, float]:
    r = spec.resources
    return {"CPU": r.workers * r.cpus_per_worker, "GPU": r.workers * r.gpus_per_worker}


def max_concurrent_trials(spec: ExperimentSpec, cluster: dict[str, float]) -> int:
    """The spec's value, else as many trials as the cluster's GPUs (CPU runs: CPUs) hold once the
    probe jobs' share is set aside; at least one."""
    if spec.sweep.max_concurrent_trials:
        return spec.sweep.max_concurrent_trials
    r = spec.resources
    kind, probes = ("GPU", r.probe_gpus) if r.gpus_per_worker else ("CPU", r.probe_cpus)
    free = cluster.get(kind, 0.0) - (r.max_concurrent_probes * probes if spec.probe.enabled else 0.0)
    return max(1, math.floor(free / per_trial(spec)[kind] + 1e-9))
