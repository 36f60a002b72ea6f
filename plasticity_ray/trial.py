"""One trial — a training run on the current Ray and its probe service: prepare data, start a
TorchTrainer whose workers hand probe points to the probe service, show progress, wait for the
probes. This is orchestration: it sits above the training loop and the probes, which never import
each other.

A run lives in ``<storage>/<experiment>/<run id>/``; the id names the size, learning rate and seed
plus a hash of everything else that changes what is trained, so re-running the same command finds
the same directory and continues from its newest checkpoint instead of starting over.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import ray
import ray.train
import ray.train.torch
from ray.train.torch import TorchTrainer

from plasticity_ray.data.prepare import prepare
from plasticity_ray.analysis.adaptive import policy_of
from plasticity_ray.decisions import GroupDecisions, act, measured
from plasticity_ray.mitigations import hooks_for
from plasticity_ray.probe.service import baseline_request, get_service, point_request
from plasticity_ray.rundir import (COMPLETE_FILE, METRICS_FILE, PROBE_POINTS_FILE, SPEC_FILE, ProbePoint, job_key,
                                   read_jsonl, stopped_early)
from plasticity_ray.spec import ExperimentSpec, run_identity, with_overrides
from plasticity_ray.storage import (append_text, as_path, check_storage, is_local, remove_file, set_patience,
                                    storage_dir, uri, write_json_atomic)
from plasticity_ray.train.checkpoint import check, checkpoints
from plasticity_ray.spec.protocol import probe_ordinal
from plasticity_ray.train.hooks import Hooks
from plasticity_ray.train.loop import Trainer
from plasticity_ray.train.recipe import model_config
from plasticity_ray.tracking import RunTracking, finished as tracking_finished


def run_id(spec: ExperimentSpec) -> str:
    """The size, LR and seed, and a hash of everything that changes what is trained (`run_identity`):
    a spec that differs only elsewhere finds the same directory and resumes it."""
    identity = run_identity(spec)
    digest = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:8]
    return f"{spec.model.size}_lr{spec.lr:.3g}_seed{spec.seed}_{digest}"


def experiment_dir(spec: ExperimentSpec) -> Path:
    return storage_dir(spec.storage_path) / spec.name


def run_dir(spec: ExperimentSpec) -> Path:
    return experiment_dir(spec) / run_id(spec)


@dataclass(frozen=True)
class RunSummary:
    run_dir: Path
    complete: bool
    last: dict | None  # the last metrics row


def _format_eta(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m" if seconds >= 3600 else f"{seconds // 60}m{seconds % 60:02d}s"


def progress_line(spec: ExperimentSpec, row: dict, started: float, first_tokens: int) -> str:
    total_tokens = spec.tasks * spec.steps_per_task * spec.batch.global_tokens
    rate = (row["tokens_seen"] - first_tokens) / max(1e-9, time.time() - started)
    eta = _format_eta((total_tokens - row["tokens_seen"]) / rate) if rate > 0 else "?"
    return (
        f"cycle {row['cycle'] + 1}/{spec.schedule.cycles} task {row['task'] + 1}/{spec.tasks} {row['language']:>7} "
        f"step {row['step']}/{spec.steps_per_task}  loss {row['loss']:.4f}  lr {row['lr']:.2e}  "
        f"{row['tokens_per_s']:,.0f} tok/s  ETA {eta}"
    )


FINISH_ATTEMPTS = 3  # rounds of submitting a run's unmeasured probe points, each after its service came back
TRACKED_JOBS_EVERY_S = 15.0  # how often the trackers are sent the probe and diagnostics jobs that finished


class _ProgressTail(threading.Thread):
    """Prints each new metrics row of the run as one progress line (reads storage, not the workers),
    and hands it to the run's trackers."""

    def __init__(self, spec: ExperimentSpec, path: Path, say: Callable[[str], None], interval: float = 2.0,
                 tracking: RunTracking | None = None):
        super().__init__(daemon=True)
        self.spec, self.path, self.say, self.interval, self.tracking = spec, path, say, interval, tracking
        self.jobs_checked = time.time()
        self.stop = threading.Event()
        self.offset = path.stat().st_size if path.exists() else 0
        self.started, self.first_tokens = time.time(), None
        self.last_step = -1
        self.outage = False

    def run(self) -> None:
        while not self.stop.wait(self.interval):
            self._poll_through_outages()
        self._poll_through_outages()

    def _poll_through_outages(self) -> None:
        """A storage outage pauses the progress lines (said once), never ends them: the run itself
        retries its writes and stops on its own if storage stays away."""
        try:
            self.poll()
        except Exception as err:  # whatever the storage client raises; the next poll tries again
            if not self.outage:
                self.say(f"progress: cannot read {self.path} ({type(err).__name__}); waiting for storage")
            self.outage = True
        else:
            self.outage = False

    def poll(self) -> None:
        self._read_rows()
        if self.tracking is not None and time.time() - self.jobs_checked > TRACKED_JOBS_EVERY_S:
            self.tracking.jobs()
            self.jobs_checked = time.time()

    def _read_rows(self) -> None:
        if not self.path.exists():
            return
        if self.path.stat().st_size < self.offset:
            self.offset = 0  # rewritten: a resumed run drops the rows logged after its checkpoint
        with self.path.open(encoding="utf-8") as f:
            f.seek(self.offset)
            for line in f:
                if not line.endswith("\n"):
                    break
                self.offset += len(line.encode())
                try:
                    row = json.loads(line)
                except json.JSONDecodeError:
                    continue  # the rest of a line cut by a rewrite under our offset
                if row.get("global_step", 0) <= self.last_step:
                    continue  # printed before the rewrite
                self.last_step = row.get("global_step", self.last_step)
                if self.tracking is not None:
                    self.tracking.training_row(row)
                if self.first_tokens is None:
                    self.first_tokens, self.started = row["tokens_seen"], row["time"]
                    continue
                self.say(progress_line(self.spec, row, self.started, self.first_tokens))


def record_probe_point(point: ProbePoint) -> None:
    """List the point in the run's probe_points.jsonl."""
    append_text(as_path(point.run_dir) / PROBE_POINTS_FILE, json.dumps(asdict(point)) + "\n")


def submit_to_probe_service(spec: ExperimentSpec) -> Callable[[ProbePoint], None]:
    """Hand the point to the experiment's probe service and go on training (fire and forget)."""
    spec_json = spec.model_dump(mode="json")

    def submit(point: ProbePoint) -> None:
        if point.deferred:
            return  # kept: the group's decisions probe it near the minimum or release it
        get_service(spec).submit.remote(spec_json, point_request(point, probe_ordinal(spec, point.task_index)))

    return submit


def default_hooks(spec: ExperimentSpec) -> Hooks:
    """The spec's mitigations, then recording and probing the probe points."""
    hooks = hooks_for(spec)
    hooks.probe_point += [record_probe_point, submit_to_probe_service(spec)]
    return hooks


class _WithoutReportLines(logging.Filter):
    """Ray Train logs an INFO line for every `ray.train.report` (from a logger named by its source
    file's path, so it is matched by its message); warnings and errors pass."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.WARNING or not record.getMessage().startswith("Reporting training result")


def train_worker(config: dict) -> None:
    """Entry point of each Ray Train worker (a process of its own: its log settings are its own)."""
    # One stream and several reports per task would flood the driver's log with INFO lines.
    logging.getLogger("ray.data").setLevel(logging.WARNING)
    logging.getLogger("ray.data._internal.progress").setLevel(logging.ERROR)  # bars are off on purpose
    for handler in logging.getLogger().handlers:
        handler.addFilter(_WithoutReportLines())
    spec = ExperimentSpec.model_validate(config["spec"])
    set_patience(spec.storage_retry_s)
    context = ray.train.get_context()
    trainer = Trainer(spec, as_path(config["run_dir"]), context.get_world_rank(), context.get_world_size(),
                      ray.train.torch.get_device(), default_hooks(spec))
    trainer.run()


def build_trainer(spec: ExperimentSpec, directory: Path, callbacks: list | None = None) -> TorchTrainer:
    resources = spec.resources
    per_worker = {"CPU": resources.cpus_per_worker}
    if resources.gpus_per_worker:
        per_worker["GPU"] = resources.gpus_per_worker
    return TorchTrainer(
        train_worker,
        train_loop_config={"spec": spec.model_dump(mode="json"), "run_dir": str(directory)},
        scaling_config=ray.train.ScalingConfig(
            num_workers=resources.workers, use_gpu=resources.gpus_per_worker > 0, resources_per_worker=per_worker
        ),
        run_config=ray.train.RunConfig(
            name=directory.name, storage_path=uri(directory.parent),
            failure_config=ray.train.FailureConfig(max_failures=spec.train.max_failures),
            logging_config=ray.train.LoggingConfig(log_level="WARNING"),  # progress comes from our own rows
            callbacks=callbacks,
        ),
    )


def _summary(directory: Path) -> RunSummary:
    rows = [r for r in read_jsonl(directory / METRICS_FILE) if "loss" in r]
    return RunSummary(directory, (directory / COMPLETE_FILE).exists(), rows[-1] if rows else None)


def _probe_requests(spec: ExperimentSpec, directory: Path, before_task: int | None = None) -> dict[str, dict]:
    """The probe requests of the run's baseline and of every point it has recorded to probe live (a
    kept point is probed only by the adaptive protocol's decisions), by job key; with `before_task`,
    only the points of earlier tasks."""
    requests = {job_key(r): r for r in ([baseline_request(spec, directory)] if spec.probe.baseline else [])}
    for point in read_jsonl(directory / PROBE_POINTS_FILE, key=("task_index",)):
        if not point.get("deferred") and (before_task is None or point["task_index"] < before_task):
            request = point_request(ProbePoint(**point), probe_ordinal(spec, point["task_index"]))
            requests[job_key(request)] = request
    return requests


def _finish_probes(spec: ExperimentSpec, directory: Path, say: Callable[[str], None]) -> None:
    """Submit again every probe point of the run (a sweep or service stopped before they ran; the
    service skips measured and running ones), then wait for the run's jobs. A service that lost its
    node comes back without its queue: the points still unmeasured then are submitted again. With
    the adaptive protocol, once the cycle ends are measured the group's decision is taken (it may be
    the last: then the window of its minimum is probed) and its backfills are waited for too."""
    service = get_service(spec)
    spec_json = spec.model_dump(mode="json")
    requests = _probe_requests(spec, directory)
    group = group_runs(spec) if policy_of(spec) else []
    for attempt in range(FINISH_ATTEMPTS):
        for request in requests.values():
            service.submit.remote(spec_json, request)
        pending = ray.get(service.status.remote(str(directory)))["pending"]
        if pending and attempt == 0:
            say(f"training done; waiting for {pending} probe/diagnostics job(s) of this run")
        ray.get(service.wait.remote(str(directory)))
        if group:
            _, backfills = act(spec, group, service, say)
            requests.update((job_key(r), r) for r in backfills)
            for run in group:
                ray.get(service.wait.remote(str(run)))
        missing = [r for r in requests.values() if not measured(spec, directory, r)]
        if not missing:
            return
        if attempt + 1 < FINISH_ATTEMPTS:
            say(f"{len(missing)} probe point(s) still without their rows (the service lost its node, or a job "
                "could not write): submitted again")
    say(f"warning: {len(missing)} probe point(s) of {directory.name} still unmeasured; "
        "running the command again submits them again")


def group_runs(spec: ExperimentSpec) -> list[Path]:
    """The runs that decide together under the adaptive protocol, the caller's first: the same
    point with every seed of `sweep.grid.seed` (just the run when the grid lists no seeds)."""
    seeds = [s for s in spec.sweep.grid.get("seed", []) if s != spec.seed]
    return [run_dir(spec)] + [run_dir(with_overrides(spec, {"seed": s})) for s in seeds]


def open_storage(spec: ExperimentSpec) -> ExperimentSpec:
    """The spec with absolute locations, once its storage is checked writable (one line if not) and
    this process's writes are set to wait out an outage for `storage_retry_s`."""
    spec = with_absolute_locations(spec)
    check_storage(spec.storage_path)
    set_patience(spec.storage_retry_s)
    return spec


def with_absolute_locations(spec: ExperimentSpec) -> ExperimentSpec:
    """The spec with the places it names made absolute where the command was started: trials and
    workers run in working directories of Ray's own. That is the storage path, and the directory W&B
    keeps its local files in — a relative `tracking.wandb.dir`, or with object storage (where W&B
    cannot write) the command's own directory (its `wandb/`) instead of the run directory."""
    root = storage_dir(spec.storage_path)
    changes: dict = {"storage_path": uri(root)}
    wandb = spec.tracking.wandb
    if wandb is not None and (wandb.dir or not is_local(root)):
        changes["tracking.wandb"] = {**wandb.model_dump(), "dir": os.path.abspath(os.path.expanduser(wandb.dir or "."))}
    return with_overrides(spec, changes)


def run_training(spec: ExperimentSpec, say: Callable[[str], None] = print, callbacks: list | None = None) -> RunSummary:
    """Train one run of `spec` to the end (or continue it) and wait for its probes; data is prepared
    first if needed. `callbacks` go to Ray Train (a sweep passes Tune's report callback)."""
    spec = open_storage(spec)
    directory = run_dir(spec)
    metrics = directory / METRICS_FILE
    stopped = stopped_early(directory)
    if stopped is not None and spec.onset_stop is None:
        say(f"{directory}: {stopped['reason']}; continuing it (this spec trains every task)")
        remove_file(directory / COMPLETE_FILE)  # no longer complete: the rest of its tasks follow
    if (directory / COMPLETE_FILE).exists():
        say(f"{directory}: already complete")
        tracking = None if tracking_finished(directory) else RunTracking.open(spec, directory, say)
        if spec.probe.enabled:
            _finish_probes(spec, directory, say)
        if tracking is not None:
            tracking.finish(ok=True)
        return _summary(directory)
    saved = checkpoints(directory)  # checked first: a bad checkpoint stops us before any work
    position = check(saved[-1], model_config(spec))["position"] if saved else None
    prepare(spec, say=say)
    write_json_atomic(directory / SPEC_FILE, spec.model_dump(mode="json"))
    say(
        f"training {spec.model.size} (lr {spec.lr:.3g}, seed {spec.seed}) on {spec.resources.workers} worker(s): "
        f"{spec.tasks} tasks × {spec.steps_per_task} steps → {directory}"
    )
    if position is not None:
        say(f"resuming from {saved[-1].name} (task {position['task'] + 1}, step {position['step']})")
    tracking = RunTracking.open(spec, directory, say)  # a tracker that cannot start stops us here
    service = get_service(spec) if spec.probe.enabled else None
    if service is not None:
        # The baseline, and on a resumed run the points of the tasks it will not train again: the
        # jobs a lost service had queued run now, not after training (the adaptive protocol decides
        # from them while the run trains). The service skips measured and running ones; the points
        # of the tasks trained again are written again, and submitted then.
        spec_json = spec.model_dump(mode="json")
        for request in _probe_requests(spec, directory, before_task=position["task"] if position else 0).values():
            service.submit.remote(spec_json, request)
    tail = _ProgressTail(spec, metrics, say, tracking=tracking)
    tail.start()
    decisions = GroupDecisions(spec, group_runs(spec), service, say) if service and policy_of(spec) else None
    if decisions is not None:
        decisions.start()
    complete = False
    try:
        try:
            build_trainer(spec, directory, callbacks).fit()
        finally:
            for thread in (tail, decisions):
                if thread is not None:
                    thread.stop.set()
                    thread.join()
        if service is not None:
            _finish_probes(spec, directory, say)
        summary = _summary(directory)
        complete = summary.complete
    finally:
        if tracking is not None:  # a failed or interrupted run's tracker run is closed as failed
            tracking.finish(ok=complete)
    return summary
