"""The adaptive protocol on live runs: a group's decisions (`analysis.adaptive`), taken from its
probe rows in storage while it trains, and carried out — kept extended points near the minimum
probed through the probe service, the others released, and a stop written for every run of the
group (`stop.json`, which the trainer reads before each cycle).

A group is the runs of one sweep point that differ only in their seed. Whichever of its trials
looks — each does, every few seconds while it trains and once more when it ends — takes the same
decision from the same rows and does the same things: submitting a probe again is skipped by the
service, releasing a released point does nothing, and a stop is written once. A point any look put
in a window is never released (`Decision.probe_cycles` only grows; `Decision.keeps` covers every
later window), so trials looking at different moments never undo each other.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Callable

import numpy as np

from plasticity_ray.analysis.adaptive import Decision, decide, policy_of
from plasticity_ray.rundir import (COMPLETE_FILE, DIAGNOSTICS, PROBE_POINTS_FILE, PROBES, SPEC_FILE, STOP_FILE, ProbePoint,
                                   StopRecord, job_key, read_jsonl, read_job_rows, row_path)
from plasticity_ray.probe.service import point_request
from plasticity_ray.spec import ExperimentSpec
from plasticity_ray.spec.protocol import probe_ordinal
from plasticity_ray.storage import as_path, read_text, remove_tree, write_json_atomic

LOOK_EVERY_S = 3.0


def cycle_end_curves(spec: ExperimentSpec, runs: list[Path]) -> np.ndarray | None:
    """The group's cycle-end AUCs (seeds × looks), each divided by its run's baseline (Appendix B),
    over the cycle ends every run has measured from the first on; None until every run has its
    baseline (or its first cycle end, without baselines)."""
    last = len(spec.data.languages) - 1
    curves = []
    for run in runs:
        rows = [r for r in read_job_rows(run, PROBES) if r.get("status") == "ok"] if run.exists() else []
        baseline = next((r["auc"] for r in rows if r.get("checkpoint") is None), None)
        if spec.probe.baseline and baseline is None:
            return None
        ends = {r["task_index"] // len(spec.data.languages): r["auc"] / (baseline or 1.0)
                for r in rows if r.get("task_index") is not None and r["task_index"] % len(spec.data.languages) == last}
        curve = []
        while len(curve) in ends:
            curve.append(ends[len(curve)])
        curves.append(curve)
    looks = min(len(c) for c in curves)
    return np.array([c[:looks] for c in curves]) if looks else None


def measured(spec: ExperimentSpec, run: Path, request: dict) -> bool:
    """Whether every job of a probe request has written its row (an error row counts)."""
    key = job_key(request)
    kinds = [PROBES] + ([DIAGNOSTICS] if spec.diagnostics.enabled and request["checkpoint"] is not None else [])
    return all(row_path(run, kind, key).exists() or row_path(run, kind, f"{key}.error").exists() for kind in kinds)


def kept_points(run: Path) -> list[ProbePoint]:
    return [ProbePoint(**row) for row in read_jsonl(run / PROBE_POINTS_FILE, key=("task_index",)) if row.get("deferred")]


def backfill_request(point: ProbePoint, spec: ExperimentSpec) -> dict:
    """The probe request of a kept point: the same as a live probe of it (same checkpoint, same
    ordinal, hence the same probe seed and subsample)."""
    return point_request(point, probe_ordinal(spec, point.task_index))


def act(spec: ExperimentSpec, runs: list[Path], service, say: Callable[[str], None] = print) -> tuple[Decision | None, list[dict]]:
    """Take the group's decision and carry it out; returns it (None: nothing to decide from yet) and
    the backfill requests of `runs[0]` (the caller's run), for it to wait on."""
    policy = policy_of(spec)
    curves = cycle_end_curves(spec, runs) if policy else None
    if curves is None:
        return None, []
    final = all((run / COMPLETE_FILE).exists() for run in runs)
    decision = decide(curves, policy, final)
    own: list[dict] = []
    for run in runs:
        if not (run / SPEC_FILE).exists():
            continue  # not started: nothing kept, nothing to stop yet
        run_spec = ExperimentSpec.model_validate_json(read_text(run / SPEC_FILE))
        spec_json = run_spec.model_dump(mode="json")
        for point in kept_points(run):
            if point.cycle in decision.probe_cycles:
                request = backfill_request(point, run_spec)
                if not measured(run_spec, run, request):
                    service.submit.remote(spec_json, request)
                elif as_path(point.checkpoint).exists():  # its jobs ended, their release lost (a restart)
                    remove_tree(as_path(point.checkpoint))
                if run == runs[0]:
                    own.append(request)
            elif (final or not decision.keeps(point.cycle)) and as_path(point.checkpoint).exists():
                remove_tree(as_path(point.checkpoint))  # never probed, never will be: no job holds it
        if decision.stop_after is not None and not (run / STOP_FILE).exists():
            record: StopRecord = {"stop_after_cycle": decision.stop_after, "reason": decision.reason,
                                  "confirmed_at": decision.confirmed_at, "p_value": decision.p_value,
                                  "threshold": policy.threshold}
            write_json_atomic(run / STOP_FILE, record)
            if run == runs[0]:
                say(f"{run.name}: {decision.reason}")
    return decision, own


class GroupDecisions(threading.Thread):
    """`act` whenever the group's probe rows or kept points change (looked at every LOOK_EVERY_S
    seconds: one listing per run) while the caller's run trains. A failed look is tried again at the
    next one: the run itself never depends on it."""

    def __init__(self, spec: ExperimentSpec, runs: list[Path], service, say: Callable[[str], None]):
        super().__init__(daemon=True)
        self.spec, self.runs, self.service, self.say = spec, runs, service, say
        self.stop = threading.Event()
        self.seen: tuple | None = None
        self.failed = False

    def run(self) -> None:
        while not self.stop.wait(LOOK_EVERY_S):
            try:
                now = _state(self.runs)
                if now != self.seen:
                    act(self.spec, self.runs, self.service, self.say)
                    self.seen = now
            except Exception as err:  # storage away, a row being written: the next look tries again
                if not self.failed:
                    self.say(f"group decisions: {type(err).__name__}: {err}; trying again")
                self.failed = True
            else:
                self.failed = False


def _state(runs: list[Path]) -> tuple:
    """What a decision reads, cheaply: each run's probe rows (names) and kept points (file size)."""
    state = []
    for run in runs:
        rows = tuple(sorted(p.name for p in (run / PROBES).glob("*.json"))) if (run / PROBES).exists() else ()
        points = run / PROBE_POINTS_FILE
        state.append((rows, points.stat().st_size if points.exists() else 0))
    return tuple(state)
