"""The trainer on a real local Ray with two CPU workers (DDP over gloo).

The runs are shared: each fixture trains once and several tests read what it wrote.
"""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from plasticity_ray.data.schedule import task_info
from plasticity_ray.spec import with_overrides
from plasticity_ray.train import checkpoint
from plasticity_ray.trial import run_dir, run_training
from plasticity_ray.rundir import COMPLETE_FILE, read_jsonl as read_rows

pytestmark = pytest.mark.slow

QUIET = {"say": lambda line: None}


def _tiny(spec, storage, **overrides):
    """The demo's data (already prepared) with a tiny model and short tasks: 8 tasks of 8 steps."""
    base = {
        "storage_path": str(storage), "model.size": "L1-d64", "schedule.cycles": 1,
        "schedule.tokens_per_task": 16384, "schedule.warmup_fraction": 0.25, "batch.global_tokens": 2048,
        "resources.workers": 2, "train.log_every": 2, "train.checkpoint_every": 4, "train.keep_checkpoints": 100,
        "probe.tokens": 4096, "probe.eval_sequences": 8, "diagnostics.enabled": ["weight_magnitude"],
    }
    return with_overrides(spec, {**base, **overrides})


def _events(folder, tag):
    """A tag's scalar events as TensorBoard itself reads a folder of event files."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    return EventAccumulator(str(folder)).Reload().Scalars(tag)


def _final_weights(spec):
    last = checkpoint.checkpoints(run_dir(spec))[-1]
    return torch.load(last / "model.pt", weights_only=True)


@pytest.fixture(scope="module")
def continual(demo_prepared, demo_spec, tmp_path_factory):
    spec = _tiny(demo_spec, tmp_path_factory.mktemp("continual"))
    return spec, run_training(spec, **QUIET)


def _metrics(spec):
    return [r for r in read_rows(run_dir(spec) / "metrics.jsonl")]


def test_the_run_completes_and_loss_falls(continual):
    spec, summary = continual
    assert summary.complete and (summary.run_dir / COMPLETE_FILE).exists()
    rows = _metrics(spec)
    assert len(rows) == spec.tasks * spec.steps_per_task // spec.train.log_every
    first_task = [r["loss"] for r in rows if r["task"] == 0]
    last_task = [r["loss"] for r in rows if r["task"] == spec.tasks - 1]
    assert first_task[0] > 5.0  # about ln(320) at initialisation
    assert min(r["loss"] for r in rows[-8:]) < first_task[0] - 1.0
    assert summary.last["tokens_seen"] == spec.tasks * spec.steps_per_task * spec.batch.global_tokens
    assert last_task


def test_languages_are_visited_in_the_spec_order(continual):
    spec, _ = continual
    rows = _metrics(spec)
    visited = [r["language"] for r in rows if r["step"] == spec.steps_per_task]
    assert visited == list(spec.data.languages)


def test_warmup_restarts_at_every_task(continual):
    spec, _ = continual
    assert spec.warmup_steps == 2
    for r in _metrics(spec):
        # rows at step 2 report the LR of the task's second step: the end of its warm-up
        expected = spec.lr * min(1.0, r["step"] / spec.warmup_steps)
        assert r["lr"] == pytest.approx(expected)


def test_the_optimizer_is_reset_at_every_task(continual):
    spec, _ = continual
    ends = {int(p.name.split("-")[1]): p for p in checkpoint.checkpoints(run_dir(spec))}
    for task in range(spec.tasks):
        state = torch.load(ends[(task + 1) * spec.steps_per_task] / "optimizer.pt", weights_only=True)
        adam_steps = {int(s["step"].item()) for s in state["state"].values()}
        assert adam_steps == {spec.steps_per_task}  # not (task + 1) * steps: a fresh AdamW per task


def test_probe_points_are_recorded_and_handed_to_the_probe_service(continual):
    spec, summary = continual
    lines = (summary.run_dir / "probe_points.jsonl").read_text().splitlines()
    points = [json.loads(line) for line in lines]
    # After Spanish (the demo's probe.extended; en zh fr ja es ...) and at the end of the only cycle.
    assert [p["task_index"] for p in points] == [4, spec.tasks - 1]
    assert [p["language"] for p in points] == ["es", "ru"] and points[-1]["cycle"] == 0
    row = json.loads((summary.run_dir / "probes" / f"task-{spec.tasks - 1:05d}.json").read_text())
    assert row["status"] == "ok" and row["checkpoint"] == points[-1]["checkpoint"]


def _stationary(spec, storage, **overrides):
    """8 chunks of the mixture, 8 steps each, a metrics row per step, a probe every 2 chunks."""
    return _tiny(spec, storage, **{"schedule.mode": "stationary", "train.log_every": 1,
                                   "probe.every_tokens": 2 * 16384, **overrides})


@pytest.fixture(scope="module")
def stationary(demo_prepared, demo_spec, tmp_path_factory):
    spec = _stationary(demo_spec, tmp_path_factory.mktemp("stationary"))
    return spec, run_training(spec, **QUIET)


def test_stationary_mode_trains_on_the_mixture(stationary):
    spec, summary = stationary
    assert summary.complete
    rows = _metrics(spec)
    assert {r["language"] for r in rows} == {"mixture"}
    assert task_info(spec, 3).language is None
    assert rows[-1]["loss"] < rows[0]["loss"] - 1.0


def test_stationary_mode_warms_up_once_and_never_resets_the_optimizer(stationary):
    spec, summary = stationary
    assert (spec.steps_per_task, spec.warmup_steps) == (8, 2)
    rows = _metrics(spec)
    assert [r["global_step"] for r in rows] == list(range(1, spec.tasks * spec.steps_per_task + 1))
    # One warm-up over the run's first 2 steps, then the peak LR through every chunk boundary.
    assert [r["lr"] for r in rows[:3]] == pytest.approx([spec.lr / 2, spec.lr, spec.lr])
    assert all(r["lr"] == pytest.approx(spec.lr) for r in rows[2:])
    chunk_starts = [r for r in rows if r["step"] == 1 and r["task"] > 0]
    assert len(chunk_starts) == spec.tasks - 1 and all(r["lr"] == pytest.approx(spec.lr) for r in chunk_starts)
    ends = {int(p.name.split("-")[1]): p for p in checkpoint.checkpoints(run_dir(spec))}
    for task in range(spec.tasks):
        global_step = (task + 1) * spec.steps_per_task
        state = torch.load(ends[global_step] / "optimizer.pt", weights_only=True)
        assert {int(s["step"].item()) for s in state["state"].values()} == {global_step}  # one AdamW throughout


def test_stationary_mode_probes_every_every_tokens(stationary):
    spec, summary = stationary
    probes = sorted((json.loads(p.read_text()) for p in (summary.run_dir / "probes").glob("task-*.json")),
                    key=lambda r: r["task_index"])
    assert [p["task_index"] for p in probes] == [1, 3, 5, 7]
    assert [p["tokens_seen"] for p in probes] == [32768, 65536, 98304, 131072]  # every probe.every_tokens
    assert all(p["status"] == "ok" and p["language"] is None for p in probes)


def test_a_stationary_run_resumes_exactly_after_a_crash(stationary, demo_spec, tmp_path):
    reference, _ = stationary
    # Step 21 is mid-chunk 2 (steps 16..23), after the checkpoint at step 20.
    spec = _stationary(demo_spec, tmp_path, **{"debug.fail_at_step": 21, "probe.enabled": False})
    summary = run_training(spec, **QUIET)
    assert summary.complete and (summary.run_dir / ".debug_failed_at_21").exists()
    expected, resumed = _final_weights(reference), _final_weights(spec)
    assert all(torch.equal(expected[k], resumed[k]) for k in expected)  # bitwise
    steps = lambda s: [(r["global_step"], r["lr"], r["batch_digest"]) for r in _metrics(s)]
    assert steps(spec) == steps(reference)
    # Step 21 was logged before the crash and again after resuming from step 20: the file has it once.
    logged = [json.loads(line)["global_step"] for line in (summary.run_dir / "metrics.jsonl").read_text().splitlines()]
    assert logged == list(range(1, spec.tasks * spec.steps_per_task + 1))


def test_killing_the_driver_then_rerunning_continues_from_the_last_checkpoint(ray_session, demo_prepared,
                                                                                demo_spec, tmp_path, continual):
    import yaml

    spec = _tiny(demo_spec, tmp_path, **{"train.checkpoint_every": 2})
    spec_file = tmp_path / "spec.yaml"
    spec_file.write_text(yaml.safe_dump(spec.model_dump(mode="json")))
    env = {**os.environ, "RAY_ADDRESS": ray_session.get_runtime_context().gcs_address, "PYTHONUNBUFFERED": "1"}
    command = [sys.executable, "-m", "plasticity_ray.cli", "train", str(spec_file)]
    first = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                             start_new_session=True)
    deadline = time.time() + 240
    while time.time() < deadline and len(checkpoint.checkpoints(run_dir(spec))) < 10:
        time.sleep(0.5)
    os.killpg(first.pid, signal.SIGKILL)
    first.wait()
    saved = checkpoint.checkpoints(run_dir(spec))
    assert saved and not (run_dir(spec) / COMPLETE_FILE).exists()
    second = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert second.returncode == 0, second.stdout + second.stderr
    assert "resuming from step-" in second.stdout
    resumed_at = int(second.stdout.split("resuming from step-")[1].split()[0])
    assert resumed_at >= int(saved[-1].name.split("-")[1]) > 0
    reference = _final_weights(continual[0])
    finished = _final_weights(spec)
    assert all(torch.equal(reference[k], finished[k]) for k in reference)


def _copy_run(spec, storage):
    import shutil

    other = with_overrides(spec, {"storage_path": str(storage)})
    shutil.copytree(run_dir(spec), run_dir(other))
    (run_dir(other) / COMPLETE_FILE).unlink()
    return other


def test_a_truncated_checkpoint_stops_the_run_naming_the_file(continual, tmp_path):
    spec = _copy_run(continual[0], tmp_path)
    latest = checkpoint.checkpoints(run_dir(spec))[-1] / "model.pt"
    latest.write_bytes(latest.read_bytes()[:100])
    before = sorted(p.name for p in run_dir(spec).rglob("*"))
    with pytest.raises(checkpoint.CheckpointError, match=f"{latest}: unreadable, truncated or corrupted"):
        run_training(spec, **QUIET)
    assert sorted(p.name for p in run_dir(spec).rglob("*")) == before  # nothing deleted


def test_a_checkpoint_of_another_size_stops_the_run_naming_the_file(continual, tmp_path):
    import shutil

    spec = _copy_run(continual[0], tmp_path)
    bigger = with_overrides(spec, {"model.size": "L2-d128"})
    latest = checkpoint.checkpoints(run_dir(spec))[-1]
    shutil.copytree(latest, run_dir(bigger) / "checkpoints" / latest.name)
    with pytest.raises(checkpoint.CheckpointError, match=rf"{run_dir(bigger)}/checkpoints/.*/state.json: checkpoint of model"):
        run_training(bigger, **QUIET)
    assert (run_dir(bigger) / "checkpoints" / latest.name / "model.pt").exists()


GPU_PATH = {
    # What a GPU run switches on, forced on CPU: compiled blocks, bf16 autocast, the attention sink
    # and every mitigation at once (their hooks inside the compiled graph), over DDP with 2 workers.
    "train.compile": True, "train.precision": "bf16", "model.attention_sink": True,
    "optimizer.weight_decay": 1.0, "data.languages": ["en", "zh", "es", "ru"],
    "mitigations": [{"name": "weight_clipping", "kappa": 3.0}, {"name": "shrink_perturb", "shrink": 0.8, "noise": 0.01},
                    {"name": "redo", "every": 4, "threshold": 0.1},
                    {"name": "continual_backprop", "replacement_rate": 1.0e-2, "maturity_threshold": 4}],
    "diagnostics.enabled": ["weight_magnitude", "dormant_units", "attention_entropy"],
    "diagnostics.dormant_sequences": 4, "diagnostics.entropy_sequences": 4, "diagnostics.entropy_first_query": 8,
}


def test_a_worker_crash_on_the_gpu_code_path_resumes_exactly(demo_prepared, demo_spec, tmp_path):
    """A continual run with everything a GPU run switches on, on CPU: 4 tasks of 8 steps; the
    crashed run dies at step 13, after the checkpoint at step 12, restarts its worker group and
    ends bitwise equal to the run that never crashed, having read the same rows step by step.
    (The stationary test above covers the eager path's crash and resume.)"""
    reference = _tiny(demo_spec, tmp_path / "reference", **GPU_PATH)
    crashed = _tiny(demo_spec, tmp_path / "crashed", **GPU_PATH, **{"debug.fail_at_step": 13})
    first, second = run_training(reference, **QUIET), run_training(crashed, **QUIET)
    assert first.complete and second.complete and (second.run_dir / ".debug_failed_at_13").exists()
    expected, resumed = _final_weights(reference), _final_weights(crashed)
    assert "sink" in expected and all(torch.equal(expected[k], resumed[k]) for k in expected)  # bitwise
    digests = lambda s: [(r["task"], r["step"], r["batch_digest"], r["loss"]) for r in _metrics(s)]
    assert digests(crashed) == digests(reference)
    rows = _metrics(reference)
    # The step hooks ran inside the compiled graph's loop: ReDo reported its count every 4 steps,
    # continual backprop replaced mature units (1% of them a step), and no loss is NaN.
    assert "redo_recycled" in rows[-1] and rows[-1]["cbp_replaced"] > 0 and all(r["loss"] == r["loss"] for r in rows)
    # TensorBoard's own reader sees every logged step once in the crashed run, signals too: the
    # resumed writers purged what the crash left after the checkpoint, and each log has its folder.
    steps = lambda folder, tag: [e.step for e in _events(run_dir(crashed) / "tensorboard" / folder, tag)]
    assert steps("train", "train/loss") == [r["global_step"] for r in _metrics(crashed)]
    assert steps("signals", "signals/grad_norm_mean") == [r["global_step"] for r in
                                                          read_rows(run_dir(crashed) / "signals.jsonl", key=("task",))]
    assert len(steps("signals", "signals/grad_norm_mean")) == 4  # one per task
    probe = json.loads((second.run_dir / "probes" / "task-00003.json").read_text())
    diagnostics = json.loads((second.run_dir / "diagnostics" / "task-00003.json").read_text())
    assert probe["status"] == "ok" and probe["device"] == "cpu" and diagnostics["attention_entropy"]["per_head"]


def test_a_group_stop_ends_every_worker_at_a_cycle_start_and_the_full_spec_continues_it(demo_prepared, demo_spec,
                                                                                       tmp_path):
    """stop.json (what the group's decisions write) stops both DDP workers before the next cycle, as
    a complete run that says why; the same spec without `schedule.stop` then trains it to the end,
    first submitting the probe point whose job a lost service took with it (it does not wait for
    the end of training)."""
    import shutil

    from plasticity_ray.rundir import PROBES, STOP_FILE, stopped_early
    from plasticity_ray.storage import write_json_atomic

    full = _tiny(demo_spec, tmp_path, **{"data.languages": ["en", "zh"], "schedule.cycles": 2,
                                         "schedule.tokens_per_task": 8192, "probe.extended": None})
    adaptive = with_overrides(full, {"schedule.stop": {"onset_confirmed": {"margin_cycles": 0}}})
    write_json_atomic(run_dir(adaptive) / STOP_FILE, {
        "stop_after_cycle": 0, "reason": "written by the test", "confirmed_at": 1, "p_value": 0.0, "threshold": 0.1})
    summary = run_training(adaptive, **QUIET)
    record = json.loads((summary.run_dir / COMPLETE_FILE).read_text())
    assert record["tasks"] == 2 and stopped_early(summary.run_dir) == {"after_tasks": 2, "reason": "written by the test"}
    assert len(record["replica_digests"]) == 2 and len(set(record["replica_digests"])) == 1
    assert {r["task"] for r in _metrics(adaptive)} == {0, 1}
    # The cycle end's probe job lost with its service: its row gone, its probe-point checkpoint
    # still there (it holds the weights of the task-end checkpoint).
    lost = summary.run_dir / PROBES / "task-00001.json"
    measured = json.loads(lost.read_text())
    lost.unlink()
    for events in (summary.run_dir / "tensorboard" / PROBES).glob("*task-00001"):
        events.unlink()
    point = summary.run_dir / "probe_points" / "task-00001"
    point.mkdir(parents=True)
    for name in ("model.pt", "state.json"):
        shutil.copy(checkpoint.checkpoints(summary.run_dir)[-1] / name, point / name)
    said = []
    summary = run_training(full, say=said.append)
    assert run_dir(full) == run_dir(adaptive)  # a stop is not part of what a run trains
    assert any("written by the test; continuing it (this spec trains every task)" in line for line in said)
    assert summary.complete and stopped_early(summary.run_dir) is None
    assert [(r["task"], r["step"]) for r in _metrics(full)] == [(t, s) for t in range(4) for s in (2, 4)]
    again, next_point = (json.loads((summary.run_dir / PROBES / f"task-{t:05d}.json").read_text()) for t in (1, 3))
    assert again["submitted"] < next_point["submitted"]  # before the training went on, not after it
    assert again["auc"] == measured["auc"] and not point.exists()
