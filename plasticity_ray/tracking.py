"""Experiment trackers: each run sent to MLflow and/or Weights & Biases, one tracker run per trial,
from what lands in its run directory — training rows as the trainer writes them, probe AUCs and
diagnostics as their jobs finish, the run's result (Eq. 1 change, onset) when it ends, and each seed
group's verdict when a sweep ends. The run directory stays the record: a tracker is a view of it,
fed by the trial's driver (not by the workers), so a retried or resumed trial continues the same
tracker run (`tracking.json` in the run directory says what was already sent).

Tune's MLflow and W&B logger callbacks see only what is reported to Tune (every `report_every`
steps, and nothing of the probes that finish after training, nor of `train` runs), so this reads
storage instead. A tracker that fails mid-run is dropped with one warning; training goes on.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import math
import time
from pathlib import Path
from typing import Callable, Protocol

from plasticity_ray.analysis.groups import group_row, group_runs
from plasticity_ray.analysis.report import onset_rows
from plasticity_ray.analysis.runs import load_run, load_runs
from plasticity_ray.errors import UserError, first_line
from plasticity_ray.rundir import BASELINE, DIAGNOSTICS, METRICS_FILE, PROBES, read_job_rows, read_jsonl
from plasticity_ray.spec import ExperimentSpec
from plasticity_ray.storage import is_local, uri, write_json_atomic
from plasticity_ray.analysis.tables import trial

STATE_FILE = "tracking.json"
RUN_ID_TAG = "plasticity_ray.run_id"
TRAINING_FIELDS = ("loss", "lr", "grad_norm", "tokens_per_s", "tokens_seen", "val_loss", "task", "cycle")
TRAINING_AXIS, PROBE_AXIS = "global_step", "tasks_trained"


class TrackerError(UserError):
    """A tracker that cannot start; the message names it."""


class Tracker(Protocol):
    name: str

    def log(self, metrics: dict[str, float], axis: str, x: int) -> None: ...

    def summary(self, values: dict[str, float | str]) -> None: ...

    def close(self, ok: bool) -> None: ...


def _flat(values: dict, prefix: str = "") -> dict[str, str]:
    out = {}
    for key, value in values.items():
        if isinstance(value, dict) and value:
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = str(value)
    return out


def _require(package: str):
    try:
        return importlib.import_module(package)
    except ImportError:
        raise TrackerError(f"tracking.{package}: the {package} package is not installed "
                           "(pip install -e '.[tracking]')") from None


class MlflowTracker:
    name = "mlflow"

    def __init__(self, spec: ExperimentSpec, run_dir: Path):
        config = spec.tracking.mlflow
        _require("mlflow")
        from mlflow import MlflowClient
        from mlflow.entities import Metric, Param

        self._metric = Metric
        experiment = config.experiment or spec.name
        try:
            self.client = MlflowClient(tracking_uri=config.tracking_uri)
            found = self.client.get_experiment_by_name(experiment)
            experiment_id = found.experiment_id if found else self.client.create_experiment(experiment)
            runs = self.client.search_runs([experiment_id], f"tags.`{RUN_ID_TAG}` = '{run_dir.name}'", max_results=1)
            if runs:
                self.run_id = runs[0].info.run_id
                self.client.update_run(self.run_id, status="RUNNING")
            else:
                run = self.client.create_run(experiment_id, run_name=run_dir.name,
                                             tags={RUN_ID_TAG: run_dir.name, "run_dir": str(run_dir)})
                self.run_id = run.info.run_id
                params = [Param(k, v[:6000]) for k, v in _flat(spec.model_dump(mode="json")).items()]
                for start in range(0, len(params), 100):  # MLflow takes at most 100 parameters a call
                    self.client.log_batch(self.run_id, params=params[start:start + 100])
        except Exception as err:  # the store or server refused: say which, in one line
            where = self.client.tracking_uri if hasattr(self, "client") else config.tracking_uri
            raise TrackerError(f"tracking.mlflow: {where} (experiment {experiment!r}): {first_line(err)}") from None

    def log(self, metrics: dict[str, float], axis: str, x: int) -> None:
        now = int(time.time() * 1000)
        self.client.log_batch(self.run_id, metrics=[self._metric(k, v, now, x) for k, v in metrics.items()])

    def summary(self, values: dict[str, float | str]) -> None:
        for key, value in values.items():
            if isinstance(value, str):
                self.client.set_tag(self.run_id, key, value[:8000])
            else:
                self.client.log_metric(self.run_id, key, value)

    def close(self, ok: bool) -> None:
        self.client.set_terminated(self.run_id, "FINISHED" if ok else "FAILED")


class WandbTracker:
    name = "wandb"

    def __init__(self, spec: ExperimentSpec, run_dir: Path):
        config = spec.tracking.wandb
        wandb = _require("wandb")
        # The same tracker run whenever this run directory is trained again (W&B ids allow no dots).
        run_id = hashlib.sha256(f"{spec.name}/{run_dir.name}".encode()).hexdigest()[:16]
        try:
            self.run = wandb.init(
                project=config.project, entity=config.entity, mode=config.mode, name=run_dir.name, id=run_id,
                resume="allow", config=spec.model_dump(mode="json"),
                dir=config.dir or (uri(run_dir) if is_local(run_dir) else None),  # W&B writes local files
                reinit="create_new", settings=wandb.Settings(quiet=True, console="off"),
            )
        except wandb.errors.UsageError as err:
            if "API key" in str(err):
                raise TrackerError("tracking.wandb: mode online needs a W&B API key (set WANDB_API_KEY or run "
                                   "`wandb login`), or set tracking.wandb.mode: offline") from None
            raise TrackerError(f"tracking.wandb: project {config.project!r}: {first_line(err)}") from None
        except Exception as err:
            raise TrackerError(f"tracking.wandb: project {config.project!r}: {first_line(err)}") from None
        self.run.define_metric(TRAINING_AXIS)
        self.run.define_metric(PROBE_AXIS)
        self.run.define_metric("train/*", step_metric=TRAINING_AXIS)
        for prefix in ("probe/*", "diagnostics/*"):
            self.run.define_metric(prefix, step_metric=PROBE_AXIS)

    def log(self, metrics: dict[str, float], axis: str, x: int) -> None:
        self.run.log({**metrics, axis: x})

    def summary(self, values: dict[str, float | str]) -> None:
        self.run.summary.update(values)

    def close(self, ok: bool) -> None:
        self.run.finish(exit_code=0 if ok else 1)


def _numbers(values: dict[str, object]) -> dict[str, float]:
    return {k: float(v) for k, v in values.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)}


def _diagnostics(row: dict) -> dict[str, float]:
    entropy, dormant = row.get("attention_entropy") or {}, row.get("dormant_units") or {}
    ranks = row.get("matrix_rank") or {}
    return _numbers({
        "diagnostics/weight_magnitude": row.get("weight_magnitude"), "diagnostics/weight_distance": row.get("weight_distance"),
        "diagnostics/dormant_percent": dormant.get("percent"),
        "diagnostics/lazy_heads_percent": entropy.get("lazy_percent"),
        "diagnostics/collapsed_heads_percent": entropy.get("collapsed_percent"),
        "diagnostics/mean_stable_rank": ranks.get("mean_stable_rank"),
    })


class RunTracking:
    """The trackers of one run, fed from its run directory."""

    def __init__(self, run_dir: Path, trackers: list[Tracker], say: Callable[[str], None]):
        self.run_dir, self.trackers, self.say = run_dir, trackers, say
        self.state = _sent(run_dir)
        self._saved = json.dumps(self.state, sort_keys=True)

    @classmethod
    def open(cls, spec: ExperimentSpec, run_dir: Path, say: Callable[[str], None] = print) -> "RunTracking | None":
        """The spec's trackers for this run (TrackerError when one cannot start); None when tracking is off."""
        kinds = [k for k, on in ((MlflowTracker, spec.tracking.mlflow), (WandbTracker, spec.tracking.wandb)) if on]
        if not kinds:
            return None
        trackers: list[Tracker] = []
        try:
            for kind in kinds:
                trackers.append(kind(spec, run_dir))
        except TrackerError:
            for started in trackers:
                started.close(ok=False)
            raise
        return cls(run_dir, trackers, say)

    def _each(self, call: Callable[[Tracker], None]) -> None:
        for tracker in list(self.trackers):
            try:
                call(tracker)
            except Exception as err:  # a tracker must never stop training
                self.trackers.remove(tracker)
                self.say(f"warning: tracking.{tracker.name} stopped for {self.run_dir.name}: {first_line(err)}; "
                         "training goes on, its rows stay in the run directory")

    def training_row(self, row: dict) -> None:
        """A metrics row (rows already sent are skipped: a resumed run writes some again)."""
        step = row.get("global_step", 0)
        if step <= self.state["global_step"]:
            return
        metrics = _numbers({f"train/{k}": row.get(k) for k in TRAINING_FIELDS})
        self._each(lambda t: t.log(metrics, TRAINING_AXIS, step))
        self.state["global_step"] = step

    def jobs(self) -> None:
        """Probe and diagnostics jobs finished since the last call; then what was sent is saved."""
        for kind in (PROBES, DIAGNOSTICS):
            for row in read_job_rows(self.run_dir, kind):
                key = f"{kind}/{row.get('task_index', BASELINE)}"
                if row.get("status") != "ok" or key in self.state["jobs"]:
                    continue
                self.state["jobs"].append(key)
                if kind == PROBES and row.get("checkpoint") is None:
                    values = {"probe/baseline_auc": row["auc"]}
                    self._each(lambda t: t.summary(values))
                    continue
                metrics = _numbers({"probe/auc": row.get("auc")}) if kind == PROBES else _diagnostics(row)
                self._each(lambda t: t.log(metrics, PROBE_AXIS, row["task_index"] + 1))
        state = json.dumps(self.state, sort_keys=True)
        if state != self._saved:  # called every 15 s: write (on object storage, upload) only what changed
            write_json_atomic(self.run_dir / STATE_FILE, self.state)
            self._saved = state

    def finish(self, ok: bool) -> None:
        """Every row not sent yet, the run's result (trial row, onset) when it ended, the tracker runs closed."""
        for row in read_jsonl(self.run_dir / METRICS_FILE):
            self.training_row(row)
        if ok:
            self.state["finished"] = True
        self.jobs()
        if ok:
            run = load_run(self.run_dir)
            row, _ = trial(run)
            onset = onset_rows([run])[0][0]
            values = {**{f"result/{k}": v for k, v in _numbers(row).items()},
                      "result/onset_tasks": onset["onset_tasks"], "result/onset": onset["message"] or ""}
            self._each(lambda t: t.summary({k: v for k, v in values.items() if v is not None}))
        self._each(lambda t: t.close(ok))


def finished(run_dir: Path) -> bool:
    """Whether the run's trackers already received all of it."""
    return bool(_sent(run_dir).get("finished"))


def _sent(run_dir: Path) -> dict:
    """What was sent to the trackers before: the last training step and the finished jobs."""
    try:
        return json.loads((run_dir / STATE_FILE).read_text())
    except (OSError, ValueError):
        return {"global_step": 0, "jobs": []}


def track_group_verdicts(experiment_dir: Path, say: Callable[[str], None] = print) -> None:
    """Each seed group's verdict (`analyze`'s sentence, onset interval, p-value) added to the tracker
    run of every run in the group."""
    runs = load_runs([experiment_dir])
    for group in group_runs(runs):
        row = group_row(group)
        kept = {**{k: v for k, v in row.items() if isinstance(v, str)}, **_numbers(row)}
        values = {f"group/{k}": v for k, v in kept.items()}
        for run in group.runs:
            spec = ExperimentSpec.model_validate(run.spec)
            tracking = RunTracking.open(spec, run.path, say)
            if tracking is not None:
                tracking._each(lambda t: t.summary(values))
                tracking._each(lambda t: t.close(True))
