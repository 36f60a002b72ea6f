"""The probe service: a named, detached Ray actor per experiment that runs probes and diagnostics of
probe-point checkpoints as Ray tasks with their own resources, never blocking training.

Requests carry *paths* (the run directory and the probe-point checkpoint), never live objects, so
the service keeps working when the driver that trained is gone; it exits on its own once it has
been told to close (or has been idle for `IDLE_EXIT_S`) and has nothing left to do. Every job writes
its result row atomically into the run directory; a job whose row already exists is skipped, so
submitting again is safe. A job that fails (a missing or corrupted checkpoint, say) writes an error
row naming the file, and the others go on. A probe-point checkpoint is released when the last job
that reads it has finished.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import time
import traceback
from dataclasses import asdict
from pathlib import Path

import ray

from plasticity_ray.errors import first_line
from plasticity_ray.rundir import DIAGNOSTICS, PROBES, JobRow, ProbePoint, job_key, point_key, row_path
from plasticity_ray.spec import ExperimentSpec
from plasticity_ray.storage import as_path, set_patience, uri, write_json_atomic
from plasticity_ray.train.metrics import EventFile

NAMESPACE = "plasticity-ray"
IDLE_EXIT_S = 1800.0
LIVE, BACKFILL = 0, 1  # the jobs' priorities (lower first)


def service_name(spec: ExperimentSpec) -> str:
    return f"probe-service:{spec.name}"


def _job(kind: str, spec_json: dict, point: dict, previous: str | None) -> JobRow:
    """A probe or diagnostics job (runs as a Ray task). Writes its row, or an error row, and returns it."""
    from plasticity_ray.data.prepare import load_prepared

    spec = ExperimentSpec.model_validate(spec_json)
    set_patience(spec.storage_retry_s)
    run_dir = as_path(point["run_dir"])
    key = job_key(point)
    started = time.time()
    try:
        prepared = load_prepared(spec)
        if kind == PROBES:
            from plasticity_ray.probe.probe import run_probe

            result = run_probe(spec, prepared, point["checkpoint"], probe_index=point["probe_index"])
        else:
            from plasticity_ray.diagnostics.run import diagnose_checkpoint

            result = diagnose_checkpoint(spec, prepared, point["checkpoint"], previous)
    except Exception as err:  # a bad checkpoint or data: recorded, named, and the service goes on
        row: JobRow = {**point, "status": "failed", "error": f"{type(err).__name__}: {err}", "started": started,
               "finished": time.time(), "traceback": traceback.format_exc()}
        write_json_atomic(row_path(run_dir, kind, f"{key}.error"), row)
        return row
    row: JobRow = {**point, **result, "status": "ok", "started": started, "finished": time.time()}
    write_json_atomic(row_path(run_dir, kind, key), row)
    _tensorboard(run_dir, kind, row)
    return row


def _tensorboard(run_dir: Path, kind: str, row: dict) -> None:
    if row["checkpoint"] is None:
        return  # the baseline is one number, in its row
    scalars = {"auc": row.get("auc")} if kind == PROBES else {
        "weight_magnitude": row.get("weight_magnitude"),
        "dormant_percent": (row.get("dormant_units") or {}).get("percent"),
        "lazy_heads_percent": (row.get("attention_entropy") or {}).get("lazy_percent"),
        "collapsed_heads_percent": (row.get("attention_entropy") or {}).get("collapsed_percent"),
    }
    # One file per job: jobs of one run finishing in the same second must not share a file name.
    events = EventFile(uri(run_dir / "tensorboard" / kind), suffix=f".{point_key(row['task_index'])}")
    events.add({f"{kind}/{name}": value for name, value in scalars.items() if value is not None}, row["task_index"])
    events.close()


class Slots:
    """At most `size` jobs at once; a waiting job of a lower `priority` number goes first, jobs of one
    priority in the order they came."""

    def __init__(self, size: int):
        self.free = size
        self.waiting: list[tuple[int, int, asyncio.Future]] = []  # a heap
        self.arrivals = itertools.count()

    async def acquire(self, priority: int) -> None:
        if self.free > 0 and not self.waiting:
            self.free -= 1
            return
        turn = asyncio.get_running_loop().create_future()
        heapq.heappush(self.waiting, (priority, next(self.arrivals), turn))
        await turn  # `release` hands its slot over

    def release(self) -> None:
        if self.waiting:
            heapq.heappop(self.waiting)[2].set_result(None)
        else:
            self.free += 1


@ray.remote(num_cpus=0)
class ProbeService:
    """One per experiment: `submit` queues the jobs of a probe point; at most
    `max_concurrent` run at once, each as a Ray task with the spec's probe resources. Points the
    run probes as it goes (and its baseline) go before the adaptive protocol's backfills of kept
    points: the group's next decision waits on them."""

    def __init__(self, max_concurrent: int, cpus: float, gpus: float):
        self.slots = Slots(max_concurrent)
        self.job = ray.remote(_job).options(num_cpus=cpus, num_gpus=gpus, max_retries=0, scheduling_strategy="DEFAULT")
        self.references: dict[str, int] = {}  # probe-point checkpoint → jobs (and holds) still needing it
        self.previous: dict[str, str] = {}  # run dir → the last probe point's checkpoint (for weight_distance)
        self.pending: dict[asyncio.Task, tuple[str, str, str]] = {}  # job → (run dir, kind, key)
        self.closing = False
        self.last_activity = time.time()
        self.done: list[dict] = []
        self.watchdog: asyncio.Task | None = None

    def _watch(self) -> None:
        if self.watchdog is None:  # started from a method: the actor's event loop runs only then
            self.watchdog = asyncio.get_event_loop().create_task(self._exit_when_idle())

    def _hold(self, path: str | None) -> None:
        if path is not None:
            self.references[path] = self.references.get(path, 0) + 1

    def _drop(self, path: str | None) -> None:
        if path is None:
            return
        self.references[path] -= 1
        if self.references[path] == 0:
            from plasticity_ray.train.checkpoint import release

            del self.references[path]
            release(as_path(path))

    async def _run(self, kind: str, spec_json: dict, point: dict, previous: str | None) -> None:
        try:
            await self.slots.acquire(BACKFILL if point.get("deferred") else LIVE)
            try:
                self.done.append(await self.job.remote(kind, spec_json, point, previous))
            finally:
                self.slots.release()
        except Exception as err:  # its row could not be written (storage gone, the job's node lost)
            print(f"probe service: {kind} of {point['run_dir']} at task {point['task_index']} did not finish "
                  f"({first_line(err)}); the run submits it again when it waits for its jobs", flush=True)
        finally:
            self._drop(point["checkpoint"])
            self._drop(previous)
            self.last_activity = time.time()

    def _start(self, kind: str, spec_json: dict, point: dict, previous: str | None = None) -> bool:
        run_dir = as_path(point["run_dir"])
        key = job_key(point)
        if row_path(run_dir, kind, key).exists() or (point["run_dir"], kind, key) in self.pending.values():
            return False  # measured or being measured: submitting again is safe
        self._hold(point["checkpoint"])
        self._hold(previous)
        task = asyncio.get_event_loop().create_task(self._run(kind, spec_json, point, previous))
        self.pending[task] = (point["run_dir"], kind, key)
        task.add_done_callback(lambda done: self.pending.pop(done, None))
        return True

    async def submit(self, spec_json: dict, point: dict) -> int:
        """Queue the probe (and, unless `point` is the baseline, the diagnostics) of a probe point;
        returns how many jobs were started (0 when every row already exists)."""
        spec = ExperimentSpec.model_validate(spec_json)
        self._watch()
        self.last_activity = time.time()
        self.closing = False  # a resumed sweep may reach a service that was told to close
        self._hold(point["checkpoint"])  # held while the jobs are being queued
        try:
            started = self._start(PROBES, spec_json, point) if spec.probe.enabled else False
            if point["checkpoint"] is not None and spec.diagnostics.enabled:
                previous = None
                if "weight_distance" in spec.diagnostics.enabled:
                    previous = self.previous.get(point["run_dir"])
                    self._hold(point["checkpoint"])  # kept for the next point's weight_distance
                    self.previous[point["run_dir"]] = point["checkpoint"]
                started += self._start(DIAGNOSTICS, spec_json, point, previous)
                if previous is not None:
                    self._drop(previous)  # its hold for us passes to the job just started
        finally:
            self._drop(point["checkpoint"])
        return int(started)

    async def close(self) -> None:
        """No more requests will come: release the held last checkpoints and exit when all jobs are done."""
        self._watch()
        self.closing = True
        for path in list(self.previous.values()):
            self._drop(path)
        self.previous.clear()

    def _pending(self, run_dir: str | None) -> list[asyncio.Task]:
        return [task for task, (where, _, _) in self.pending.items() if run_dir is None or where == run_dir]

    async def wait(self, run_dir: str | None = None) -> list[dict]:
        """Block until every queued job (of `run_dir`, if given) has finished; returns the rows written so far."""
        while jobs := self._pending(run_dir):
            await asyncio.gather(*jobs, return_exceptions=True)
        return self.done

    async def status(self, run_dir: str | None = None) -> dict:
        return {"pending": len(self._pending(run_dir)), "done": len(self.done), "closing": self.closing,
                "held_checkpoints": dict(self.references)}

    async def _exit_when_idle(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            idle = time.time() - self.last_activity > IDLE_EXIT_S
            if not self.pending and (self.closing or idle):
                # Every row is already on disk. (exit_actor() raised inside this background task
                # would only print "Task exception was never retrieved".)
                ray.kill(ray.get_runtime_context().current_actor, no_restart=True)


def get_service(spec: ExperimentSpec):
    """The experiment's probe service, started (detached, named) if it is not running. When its node
    is lost Ray starts it again on another node and delivers the calls made meanwhile; what it had
    queued is gone with it, so whoever waits for a run's jobs submits the missing ones again
    (`submit` skips measured and running ones)."""
    return ProbeService.options(
        name=service_name(spec), namespace=NAMESPACE, lifetime="detached", get_if_exists=True,
        max_concurrency=1000, max_restarts=-1, max_task_retries=-1,
        resources=spec.resources.service_resources or None,
        # Not inside the caller's placement group (a Tune trial's captures its children): the
        # service outlives the trial, and its jobs ask for resources of their own.
        scheduling_strategy="DEFAULT",
    ).remote(spec.resources.max_concurrent_probes, spec.resources.probe_cpus, spec.resources.probe_gpus)


def close_service(spec: ExperimentSpec) -> None:
    """Tell the experiment's service that no more requests come; it exits when its jobs are done."""
    try:
        service = ray.get_actor(service_name(spec), namespace=NAMESPACE)
    except ValueError:
        return  # not running
    ray.get(service.close.remote())


def point_request(point: ProbePoint, probe_index: int) -> dict:
    return {**asdict(point), "probe_index": probe_index, "submitted": time.time()}


def baseline_request(spec: ExperimentSpec, run_dir: Path) -> dict:
    """The "probe language alone" probe: a freshly initialised model of the run's size and seed."""
    return {"run_dir": str(run_dir), "checkpoint": None, "size": spec.model.size, "lr": spec.lr,
            "seed": spec.seed, "cycle": None, "task_index": None, "language": None, "global_step": 0,
            "tokens_seen": 0, "probe_index": 0, "submitted": time.time()}
