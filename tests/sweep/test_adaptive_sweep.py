"""The adaptive protocol on a real local Ray Tune sweep of two seeds: extended points kept and probed
only near the cycle-end minimum (through the probe service), the others released, and the group
stopped once its onset is confirmed; then the same runs probed at every point (the paper's way) to
compare with."""

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

from plasticity_ray.cli import main
from plasticity_ray.rundir import COMPLETE_FILE, PROBE_POINTS_FILE, PROBES, STOP_FILE, read_job_rows, read_jsonl, run_dirs
from plasticity_ray.spec import with_overrides
from plasticity_ray.sweep.tune import run_sweep

pytestmark = pytest.mark.slow

QUIET = {"say": lambda line: None}
# Confirmed at the 4th cycle end (debug), then 4 margin cycles: 8 cycles of 2 tasks. The decision lands
# when the 4th cycle ends' probes do, 2-3 tasks later on 2 cores: the margin leaves room for it.
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


@pytest.fixture(scope="module")
def adaptive_and_every_point(demo_spec, demo_prepared, tmp_path_factory, ray_session):
    """The adaptive sweep, its driver killed (SIGKILL) once the group's stop is decided, then
    resumed; and the same training probed at every point, uninterrupted."""
    storage = tmp_path_factory.mktemp("adaptive")
    spec = _spec(demo_spec, storage, "adaptive", **{
        "probe.extended": {"languages": ["zh"], "near_minimum": {"cycles": 1}},
        "schedule.stop": {"onset_confirmed": {"margin_cycles": 4}}, "debug.confirm_onset_at_look": 4})
    spec_file = storage / "adaptive.yaml"
    spec_file.write_text(yaml.safe_dump(spec.model_dump(mode="json")))
    env = {**os.environ, "RAY_ADDRESS": ray_session.get_runtime_context().gcs_address}
    command = [sys.executable, "-m", "plasticity_ray.cli", "sweep", str(spec_file)]
    first = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                             start_new_session=True)
    experiment, deadline, killed_at = storage / "adaptive", time.time() + 600, None
    while time.time() < deadline and first.poll() is None:
        runs = run_dirs(experiment) if experiment.exists() else []
        decided = len(runs) == 2 and all((r / STOP_FILE).exists() for r in runs)
        if decided and not all((r / COMPLETE_FILE).exists() for r in runs):
            os.killpg(first.pid, signal.SIGKILL)  # the stop decided, not yet carried out by every run
            killed_at = {r.name: (r / COMPLETE_FILE).exists() for r in runs}
            break
        time.sleep(0.2)
    first.wait()
    resumed = subprocess.run(command + ["--resume"], env=env, capture_output=True, text=True, timeout=900)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    # The same training to the cycle the group stopped at (a task's data depends on its seed,
    # language and cycle, not on how many cycles follow), every point probed live.
    cycles = max(json.loads((run / COMPLETE_FILE).read_text())["tasks"] for run in run_dirs(experiment)) // 2
    every_point = run_sweep(_spec(demo_spec, storage, "every_point", **{"schedule.cycles": cycles}), **QUIET)
    return experiment, every_point.experiment_dir, killed_at


def _aucs(run: Path) -> dict[int, float]:
    return {r["task_index"]: r["auc"] for r in read_job_rows(run, PROBES) if r.get("checkpoint")}


def _onsets(experiment_dir: Path) -> list[dict]:
    assert main(["analyze", str(experiment_dir)]) == 0
    with (experiment_dir / "analysis" / "onsets.csv").open() as f:
        return list(csv.DictReader(f))


def test_the_group_stops_after_its_margin_and_says_why(adaptive_and_every_point, capsys):
    experiment, _, killed_at = adaptive_and_every_point
    assert killed_at is not None  # the driver was killed between the decision and the stop
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
