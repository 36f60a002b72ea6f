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
        complete.json              written when the last task is done
        checkpoints/, probe_points/, tensorboard/

A job's key is `task-NNNNN` (the task index of its probe point) or `baseline`.
"""

from __future__ import annotations

import json
from pathlib import Path

SPEC_FILE = "spec.json"
METRICS_FILE = "metrics.jsonl"
SIGNALS_FILE = "signals.jsonl"
ALARMS_FILE = "alarms.jsonl"
PROBE_POINTS_FILE = "probe_points.jsonl"
COMPLETE_FILE = "complete.json"
PROBES, DIAGNOSTICS = "probes", "diagnostics"  # the job kinds, and their folders
BASELINE = "baseline"


def point_key(task_index: int) -> str:
    return f"task-{task_index:05d}"


def row_path(run_dir: Path, kind: str, key: str) -> Path:
    """Where a job's row lives: <run_dir>/<probes|diagnostics>/<key>.json (errors: <key>.error.json)."""
    return run_dir / kind / f"{key}.json"


def read_jsonl(path: Path, key: tuple[str, ...] = ("task", "step")) -> list[dict]:
    """The rows of a JSON-lines file, skipping a torn last line, the last row per `key` kept."""
    if not path.exists():
        return []
    rows: dict = {}
    with open(path, encoding="utf-8") as f:
        for line in f:
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line cut by a crash
            rows[tuple(row.get(k) for k in key)] = row
    return sorted(rows.values(), key=lambda r: tuple(r.get(k) for k in key))


def read_job_rows(run_dir: Path, kind: str) -> list[dict]:
    """Every row of one kind in a run directory (error rows included, marked status=failed)."""
    folder = run_dir / kind
    if not folder.exists():
        return []
    return [json.loads(p.read_text()) for p in sorted(folder.glob("*.json"))]


def read_alarms(run_dir: Path) -> list[dict]:
    """The run's alarms, one per (signal, task), in task order."""
    return read_jsonl(run_dir / ALARMS_FILE, key=("task", "signal"))


def run_dirs(experiment_dir: Path) -> list[Path]:
    """The run directories of an experiment: those holding spec.json."""
    return sorted(p.parent for p in experiment_dir.glob(f"*/{SPEC_FILE}"))
