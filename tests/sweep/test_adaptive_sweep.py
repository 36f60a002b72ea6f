"""The adaptive protocol on a real local Ray Tune sweep of two seeds: extended points kept and probed
only near the cycle-end minimum (through the probe service), the others released, and the group
stopped once its onset is confirmed — across kill -9s of the sweep and its Ray in the middle of a
backfill and of a stop; then the same runs probed at every point (the paper's way) to compare with."""

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from plasticity_ray.analysis.adaptive import decide, policy_of
from plasticity_ray.cli import main
from plasticity_ray.decisions import backfill_request, cycle_end_curves, kept_points
from plasticity_ray.rundir import (COMPLETE_FILE, PROBE_POINTS_FILE, PROBES, STOP_FILE, job_key, read_job_rows, read_jsonl,
                                   row_path, run_dirs)
from plasticity_ray.spec import with_overrides
from plasticity_ray.sweep.tune import run_sweep

pytestmark = pytest.mark.slow

QUIET = {"say": lambda line: None}
# Confirmed at the 4th cycle end (debug), then 4 margin cycles: 8 cycles of 2 tasks. The decision lands
# when the 4th cycle ends' probes do, up to ~10 s later on 2 cores (a probe job waiting for a Ray
# worker, the decisions' 3-s look): tasks of 0.6 s would outrun it, so each task pauses 2 s
# (debug.task_pause_s), and the margin's 8 tasks leave ~20 s.
STOP_AFTER_TASKS = 16


def _spec(demo_spec, storage: Path, name: str, **overrides):
    """The demo's data with a tiny model: cycles of zh and ru, a probe after zh mid-cycle."""
    return with_overrides(demo_spec, {
        "name": name, "storage_path": str(storage), "model.size": "L1-d64", "data.languages": ["zh", "ru"],
        "sweep.grid": {"seed": [0, 1]}, "schedule.cycles": 12, "schedule.tokens_per_task": 16384,
        "batch.global_tokens": 2048, "train.log_every": 4, "train.report_every": 32, "train.checkpoint_every": 64,
        "probe.tokens": 2048, "probe.eval_every": 1, "probe.eval_sequences": 8, "diagnostics.enabled": [],
        "resources.max_concurrent_probes": 2,
        "probe.extended": {"languages": ["zh"]}, **overrides})


# The sweep's driver starting a local Ray of its own, as a user's does (with the suite's CPU count):
# killing its process tree kills that Ray too, and the probe service with it.
OWN_RAY_DRIVER = ("import sys, ray; ray.init(num_cpus=4, include_dashboard=False, log_to_driver=False); "
                  "from plasticity_ray.cli import main; sys.exit(main(sys.argv[1:]))")


def _process_tree(pid: int) -> list[int]:
    """`pid` and its descendants, from /proc."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        try:
            children.setdefault(int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1]), []).append(int(entry.name))
        except (ValueError, OSError):
            continue
    tree, todo = [], [pid]
    while todo:
        tree.append(todo.pop())
        todo += children.get(tree[-1], [])
    return tree


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _command_line(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()[:200]
    except OSError:
        return f"{pid}: gone"


def _stop_decided(experiment: Path) -> dict | None:
    """The group's stop written, not yet carried out by every run."""
    runs = run_dirs(experiment) if experiment.exists() else []
    if len(runs) == 2 and all((r / STOP_FILE).exists() for r in runs) and not all((r / COMPLETE_FILE).exists() for r in runs):
        return {"complete": [(r / COMPLETE_FILE).exists() for r in runs]}
    return None


def _mid_backfill(spec, experiment: Path, since: float) -> dict | None:
    """A kept point of the window the group's decision probes measured by this driver's service,
    another not yet: the backfills were submitted together, so it is queued or running."""
    runs = run_dirs(experiment) if experiment.exists() else []
    kept = []
    for run in runs:
        for point in kept_points(run):
            row = row_path(run, PROBES, job_key(backfill_request(point, spec)))
            kept.append((point, row.stat().st_mtime if row.exists() else None))
    if not any(at is not None and at > since for _, at in kept):
        return None  # no backfill ended yet (looked at first: a decision costs CPU the sweep needs)
    curves = cycle_end_curves(spec, runs)
    window = decide(curves, policy_of(spec), all((r / COMPLETE_FILE).exists() for r in runs)).probe_cycles
    done = [at for point, at in kept if point.cycle in window]
    measured_now = sum(at is not None and at > since for at in done)
    unmeasured = sum(at is None for at in done)
    return {"measured": measured_now, "unmeasured": unmeasured} if measured_now and unmeasured else None


def _run_until_killed(command: list[str], env: dict, moments: dict, deadline: float) -> tuple[str, dict, list[int]] | None:
    """Run the sweep's driver until one of `moments` (name → a look at storage given the driver's
    start time: what it saw, or None) arrives; then SIGKILL its process tree, its own Ray with it.
    Returns the moment, what it saw and the processes killed (None if the driver ended first)."""
    started = time.time()
    driver = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              start_new_session=True)
    try:
        while time.time() < deadline and driver.poll() is None:
            for name, look in moments.items():
                try:
                    seen = look(started)
                except (OSError, ValueError):  # a file being written: look again
                    seen = None
                if seen is not None:
                    processes = _process_tree(driver.pid)
                    # Ray's worker processes have process groups of their own: each is killed.
                    for pid in processes:
                        try:
                            os.kill(pid, signal.SIGKILL)
                        except ProcessLookupError:
                            pass
                    return name, seen, processes
            time.sleep(0.2)
        return None
    finally:
        if driver.poll() is None:
            os.killpg(driver.pid, signal.SIGKILL)
        driver.wait()


@pytest.fixture(scope="module")
def adaptive_and_every_point(demo_spec, demo_prepared, tmp_path_factory, ray_session):
    """The adaptive sweep on a local Ray of its driver's, killed (SIGKILL, that Ray and its probe
    service with it) once in the middle of a backfill and once when the group's stop is decided but
    not yet carried out, each time resumed; it ends resumed on the suite's Ray. And the same
    training probed at every point, uninterrupted."""
    storage = tmp_path_factory.mktemp("adaptive")
    spec = _spec(demo_spec, storage, "adaptive", **{
        "probe.extended": {"languages": ["zh"], "near_minimum": {"cycles": 1}},
        "schedule.stop": {"onset_confirmed": {"margin_cycles": 4}}, "debug.confirm_onset_at_look": 4,
        "debug.task_pause_s": 2.0})
    spec_file = storage / "adaptive.yaml"
    spec_file.write_text(yaml.safe_dump(spec.model_dump(mode="json")))
    experiment = storage / "adaptive"
    looks = {"stop decided": lambda since: _stop_decided(experiment),
             "mid-backfill": lambda since: _mid_backfill(spec, experiment, since)}
    own_ray = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    arguments, killed, deadline = ["sweep", str(spec_file)], {}, time.time() + 900
    while looks:
        ended = _run_until_killed([sys.executable, "-c", OWN_RAY_DRIVER, *arguments], own_ray, looks, deadline)
        if ended is None:
            break  # the sweep finished first: the tests say which moment was never reached
        name, seen, processes = ended
        time.sleep(2)
        killed[name] = {**seen, "processes": len(processes),
                        "survivors": [_command_line(p) for p in processes if _alive(p)]}
        del looks[name]
        arguments = ["sweep", str(spec_file), "--resume"]
    env = {**os.environ, "RAY_ADDRESS": ray_session.get_runtime_context().gcs_address}
    resumed = subprocess.run([sys.executable, "-m", "plasticity_ray.cli", *arguments], env=env, capture_output=True,
                             text=True, timeout=900)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    # The same training to the cycle the group stopped at (a task's data depends on its seed,
    # language and cycle, not on how many cycles follow), every point probed live.
    cycles = max(json.loads((run / COMPLETE_FILE).read_text())["tasks"] for run in run_dirs(experiment)) // 2
    every_point = run_sweep(_spec(demo_spec, storage, "every_point", **{"schedule.cycles": cycles}), **QUIET)
    return experiment, every_point.experiment_dir, killed


def _aucs(run: Path) -> dict[int, float]:
    return {r["task_index"]: r["auc"] for r in read_job_rows(run, PROBES) if r.get("checkpoint")}


def _onsets(experiment_dir: Path) -> list[dict]:
    assert main(["analyze", str(experiment_dir)]) == 0
    with (experiment_dir / "analysis" / "onsets.csv").open() as f:
        return list(csv.DictReader(f))


def test_the_sweep_was_killed_mid_backfill_and_between_decision_and_stop_with_its_ray(adaptive_and_every_point):
    _, _, killed = adaptive_and_every_point
    assert set(killed) == {"mid-backfill", "stop decided"}, killed
    for moment in killed.values():
        assert moment["processes"] > 5 and moment["survivors"] == []  # the driver, its Ray, the service's process
    assert killed["mid-backfill"]["measured"] > 0 and killed["mid-backfill"]["unmeasured"] > 0


def test_the_group_stops_after_its_margin_and_says_why(adaptive_and_every_point, capsys):
    experiment, _, _ = adaptive_and_every_point
    runs = run_dirs(experiment)
    assert len(runs) == 2
    for run in runs:
        complete = json.loads((run / COMPLETE_FILE).read_text())
        assert complete["tasks"] == STOP_AFTER_TASKS and complete["stopped"]["after_tasks"] == STOP_AFTER_TASKS
        assert complete["stopped"]["reason"] == ("onset taken as confirmed at the end of cycle 4 "
                                                 "(debug.confirm_onset_at_look); stopped after cycle 8")
        assert json.loads((run / STOP_FILE).read_text())["stop_after_cycle"] == 7
        assert max(r["task"] for r in read_jsonl(run / "metrics.jsonl")) == STOP_AFTER_TASKS - 1
    capsys.readouterr()
    assert main(["results", str(experiment), "--json"]) == 0
    trials = json.loads(capsys.readouterr().out)["trials"]
    assert {t["stopped_after_tasks"] for t in trials} == {STOP_AFTER_TASKS}
    assert all(t["stop_reason"].startswith("onset taken as confirmed") for t in trials)
    assert main(["analyze", str(experiment)]) == 0
    assert f"stopped early after {STOP_AFTER_TASKS} tasks: onset taken as confirmed" in capsys.readouterr().out
    report = (experiment / "analysis" / "report.md").read_text()
    assert "## Runs stopped early (schedule.stop)" in report


def test_tune_shows_which_trials_stopped_and_why(adaptive_and_every_point):
    from ray import tune

    from plasticity_ray.sweep.tune import run_trial

    experiment, _, _ = adaptive_and_every_point
    results = tune.Tuner.restore(str(experiment / "tune"), trainable=run_trial).get_results()
    assert len(results) == 2
    for result in results:
        assert result.metrics["stopped_after_tasks"] == STOP_AFTER_TASKS
        assert result.metrics["stop_reason"].startswith("onset taken as confirmed at the end of cycle 4")


def test_kept_points_are_probed_only_near_the_minimum_and_the_others_released(adaptive_and_every_point):
    experiment, _, _ = adaptive_and_every_point
    windows = []
    for run in run_dirs(experiment):
        kept = [p for p in read_jsonl(run / PROBE_POINTS_FILE, key=("task_index",)) if p.get("deferred")]
        assert len(kept) == STOP_AFTER_TASKS // 2  # after zh in each cycle trained
        probed = {p["task_index"] for p in kept} & set(_aucs(run))
        assert 0 < len(probed) < len(kept)  # the minimum's windows (K = 1: its cycle and the next)
        windows.append(probed)
        assert not list((run / "probe_points").glob("task-*"))  # every kept point probed or released
    assert windows[0] == windows[1]  # one decision for the group: the same points in every run


def test_a_backfilled_probe_is_the_live_probe_of_the_same_point_bit_for_bit(adaptive_and_every_point):
    experiment, every_point, _ = adaptive_and_every_point
    for run, same in zip(run_dirs(experiment), run_dirs(every_point)):
        assert json.loads((run / "spec.json").read_text())["seed"] == json.loads((same / "spec.json").read_text())["seed"]
        backfilled, live = _aucs(run), _aucs(same)
        assert set(backfilled) < set(live)
        for task_index, auc in backfilled.items():
            assert auc == live[task_index], task_index


def test_the_killed_and_resumed_sweep_trained_and_probed_each_thing_once(adaptive_and_every_point):
    """Across the kill: every step as in the uninterrupted training (once each), and every probe
    job ran to its end once (one TensorBoard file per job)."""
    experiment, every_point, _ = adaptive_and_every_point
    for run, same in zip(run_dirs(experiment), run_dirs(every_point)):
        rows = [(r["task"], r["step"], r["loss"], r["batch_digest"]) for r in read_jsonl(run / "metrics.jsonl")]
        assert rows == [(r["task"], r["step"], r["loss"], r["batch_digest"]) for r in read_jsonl(same / "metrics.jsonl")]
        logged = [json.loads(line)["global_step"] for line in (run / "metrics.jsonl").read_text().splitlines()]
        assert len(logged) == len(set(logged))
        files = sorted(p.name.rsplit(".", 1)[-1] for p in (run / "tensorboard" / "probes").glob("*tfevents*"))
        assert files == sorted(f"task-{t:05d}" for t in _aucs(run))


def test_analyze_finds_the_onset_the_paper_protocol_finds(adaptive_and_every_point):
    experiment, every_point, _ = adaptive_and_every_point
    (group,), (full,) = _onsets(experiment), _onsets(every_point)
    assert group["onset_tasks"] == full["onset_tasks"] and group["onset_tasks"]
    probed = set(_aucs(run_dirs(experiment)[0]))
    assert int(full["onset_tasks"]) - 1 in probed  # the paper's onset lies in the probed window
