"""The run directory: where a run's files live and how they are read back. Every writer (the
trainer, the probe service, the alarms) and every reader (results, analysis, the CLI) goes through
these names; nothing here imports torch or Ray, so reading results needs neither.

    <experiment>/<run id>/
        spec.json                  the run's validated spec
        metrics.jsonl              training rows (one per `train.log_every` steps)
        signals.jsonl, alarms.jsonl   online plasticity signals and the alarms they raised
        probe_points.jsonl         every probe point handed to the probe service
        probes/<key>.json          one row per probe job (<key>.error.json when it failed)
        diagnostics/<key>.json     one row per diagnostics job
        complete.json              written when the last task is done (or the run stopped early)
        stop.json                  the group's decision to stop (schedule.stop), read by the trainer
        checkpoints/, probe_points/, tensorboard/

A job's key is `task-NNNNN` (the task index of its probe point) or `baseline`. The rows' fields
are the TypedDicts below.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TypedDict

from plasticity_ray.storage import read_text

SPEC_FILE = "spec.json"
METRICS_FILE = "metrics.jsonl"
SIGNALS_FILE = "signals.jsonl"
ALARMS_FILE = "alarms.jsonl"
PROBE_POINTS_FILE = "probe_points.jsonl"
COMPLETE_FILE = "complete.json"
STOP_FILE = "stop.json"
PROBES, DIAGNOSTICS = "probes", "diagnostics"  # the job kinds, and their folders
BASELINE = "baseline"


class MetricRow(TypedDict, total=False):
    """A line of metrics.jsonl: the steps since the previous row (means over steps and workers).
    Mitigations add their running counts (e.g. `redo_recycled`)."""

    task: int
    cycle: int
    language: str  # "mixture" in stationary mode
    step: int  # steps done in the task
    global_step: int  # steps done in the run
    loss: float
    lr: float
    grad_norm: float
    tokens_per_s: float
    tokens_seen: int
    batch_digest: int  # which token rows the steps saw
    time: float
    val_loss: float  # with train.eval_every


@dataclass(frozen=True)
class ProbePoint:
    """A line of probe_points.jsonl: where the model of a probe point is and what it had trained."""

    run_dir: str
    checkpoint: str  # path of the probe-point checkpoint; released when its jobs are done
    size: str
    lr: float
    seed: int
    cycle: int
    task_index: int
    language: str | None  # the language trained just before (None: stationary mixture)
    global_step: int
    tokens_seen: int
    # An extended point kept unprobed (probe.extended.near_minimum): probed only if the group's
    # decisions put it near the minimum, else released.
    deferred: bool = False


class JobRow(TypedDict, total=False):
    """probes/<key>.json and diagnostics/<key>.json: a ProbePoint's fields (the baseline's with no
    checkpoint, cycle, task_index or language), then the request, the outcome and the result."""

    probe_index: int
    submitted: float
    status: str  # "ok", or "failed" in <key>.error.json with `error` and `traceback`
    started: float
    finished: float
    device: str
    error: str
    traceback: str
    # probes: auc (over the evaluations from `auc_from_step`; the mean of `probe.replicates`
    # replicates, each in replicate_aucs), the mean curve [{step, val_loss}] and each replicate's
    # losses at those steps, steps, eval_sequences, final_val_loss; diagnostics: one entry per
    # diagnostic (weight_magnitude, ...)
    auc: float
    replicate_aucs: list[float]
    auc_from_step: int
    curve: list[dict]
    replicate_curves: list[list[float]]
    steps: int
    eval_sequences: int
    final_val_loss: float


class StopRecord(TypedDict):
    """stop.json: the group's decision (`analysis.adaptive.Decision`) to stop after a cycle."""

    stop_after_cycle: int  # 0-based: the last cycle trained (a run past it stops before its next cycle)
    reason: str
    confirmed_at: int  # cycle ends measured when the rise was confirmed
    p_value: float
    threshold: float


class CompleteRecord(TypedDict, total=False):
    """complete.json."""

    tasks: int  # tasks trained
    time: float
    replica_digests: list[int]  # every rank's checksum of its final weights: DDP replicas agree
    stopped: dict  # a run stopped early: {"after_tasks", "reason"} (its stop.json's)


def point_key(task_index: int) -> str:
    return f"task-{task_index:05d}"


def job_key(point: dict) -> str:
    """The key of a probe request's rows: the baseline's, or its probe point's."""
    return BASELINE if point["checkpoint"] is None else point_key(point["task_index"])


def row_path(run_dir: Path, kind: str, key: str) -> Path:
    """Where a job's row lives: <run_dir>/<probes|diagnostics>/<key>.json (errors: <key>.error.json)."""
    return run_dir / kind / f"{key}.json"


def read_jsonl(path: Path, key: tuple[str, ...] = ("task", "step")) -> list[dict]:
    """The rows of a JSON-lines file, skipping a torn last line, the last row per `key` kept."""
    if not path.exists():
        return []
    rows: dict = {}
    for line in read_text(path).splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line cut by a crash
        rows[tuple(row.get(k) for k in key)] = row
    return sorted(rows.values(), key=lambda r: tuple(r.get(k) for k in key))


_WARNED: set[str] = set()


def read_job_rows(run_dir: Path, kind: str) -> list[JobRow]:
    """Every row of one kind in a run directory (error rows included, marked status=failed). A
    damaged row (half a document: a full disk, an interrupted copy) is skipped with one warning."""
    folder = run_dir / kind
    if not folder.exists():
        return []
    rows = []
    for path in sorted(folder.glob("*.json")):
        try:
            rows.append(json.loads(path.read_text()))
        except ValueError:
            if str(path) not in _WARNED:
                _WARNED.add(str(path))
                print(f"warning: {path}: damaged row (not a JSON document), skipped", file=sys.stderr)
    return rows


def stopped_early(run_dir: Path) -> dict | None:
    """complete.json's `stopped` ({"after_tasks", "reason"}) of a run its group stopped early; None
    for a run that trained every task or is not complete."""
    path = run_dir / COMPLETE_FILE
    return json.loads(read_text(path)).get("stopped") if path.exists() else None


def read_alarms(run_dir: Path) -> list[dict]:
    """The run's alarms, one per (signal, task), in task order."""
    return read_jsonl(run_dir / ALARMS_FILE, key=("task", "signal"))


def run_dirs(experiment_dir: Path) -> list[Path]:
    """The run directories of an experiment: those holding spec.json."""
    return sorted(p.parent for p in experiment_dir.glob(f"*/{SPEC_FILE}"))
