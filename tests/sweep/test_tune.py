"""Sweeps on a real local Ray Tune: a grid whose trials each lose a worker once and are retried,
an interrupted sweep continued with --resume, and an Optuna search.

The sweeps are shared: each fixture sweeps once and several tests read what it wrote.
"""

import contextlib
import csv
import io
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml

from plasticity_ray.cli import main
from plasticity_ray.spec import with_overrides
from plasticity_ray.spec.protocol import max_concurrent_trials
from plasticity_ray.sweep.tune import run_sweep, run_trial
from plasticity_ray.rundir import COMPLETE_FILE

pytestmark = pytest.mark.slow

QUIET = {"say": lambda line: None}


def _tiny(spec, storage, **overrides):
    """The demo's data (prepared once per session) with tiny models: 3 cycles of 3 languages × 4 steps."""
    base = {
        "storage_path": str(storage), "data.languages": ["en", "de", "fr"], "schedule.cycles": 3,
        "schedule.tokens_per_task": 8192, "batch.global_tokens": 2048, "train.log_every": 2, "train.report_every": 8,
        "train.checkpoint_every": 8, "train.eval_every": 2, "train.eval_sequences": 8,
        "probe.tokens": 4096, "probe.eval_every": 1, "probe.eval_sequences": 8,
        "probe.extended": None, "diagnostics.enabled": ["weight_magnitude"],
        "sweep.grid": {"model.size": ["L1-d64", "L2-d64"]},
    }
    return with_overrides(spec, {**base, **overrides})


def _results_json(experiment_dir: Path) -> dict:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(["results", str(experiment_dir), "--json"]) == 0
    return json.loads(out.getvalue())


BUCKET = "plasticity-sweeps"


@pytest.fixture(scope="module")
def killed_once(demo_spec, tmp_path_factory, s3_server, ray_session):
    """Every trial's worker is SIGKILLed once at step 13; Ray Train may not restart it (max_failures 0),
    so only Tune's retry of the whole trial can finish the sweep. Everything lives in a bucket of the
    tests' local S3 (moto): prepared data, Tune's state, the runs and their checkpoints, results and
    analysis. Both trackers watch: MLflow on a local SQLite store (made first, as a user's would be)
    and W&B in offline mode with no directory named, so its runs go where the README says: `wandb/`
    in the directory the sweep was started from."""
    from mlflow import MlflowClient

    local = tmp_path_factory.mktemp("killed")
    s3_server.create_bucket(Bucket=BUCKET)
    MlflowClient(f"sqlite:///{local}/mlflow.db").search_experiments()  # creates the store's tables
    spec = _tiny(demo_spec, f"s3://{BUCKET}/runs", **{
        "data.train_tokens": 100_000,  # what 3 tasks per language need, and little to upload
        "debug.fail_at_step": 13, "debug.fail_by": "sigkill", "train.max_failures": 0, "sweep.max_failures": 1,
        "tracking.mlflow": {"tracking_uri": f"sqlite:///{local}/mlflow.db"},
        "tracking.wandb": {"project": "plasticity-tests", "mode": "offline"},
    })
    started_in = os.getcwd()
    os.chdir(local)
    try:
        return spec, run_sweep(spec, **QUIET), local
    finally:
        os.chdir(started_in)


def _keys(s3, prefix: str) -> list[str]:
    pages = s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix)
    return [o["Key"] for page in pages for o in page.get("Contents", [])]


def test_the_sweep_lives_in_the_bucket(killed_once, s3_server):
    spec, summary, _ = killed_once
    assert str(summary.experiment_dir) == f"s3://{BUCKET}/runs/{spec.name}"
    keys = _keys(s3_server, "runs/")
    assert any(k.startswith("runs/prepared/") and k.endswith("manifest.json") for k in keys)
    assert any(k.startswith("runs/prepared/") and k.endswith(".parquet") for k in keys)
    assert any(k.startswith(f"runs/{spec.name}/tune/") for k in keys)  # Tune's own state
    assert not [k for k in keys if ".tmp" in k or ".partial" in k]  # objects are written whole, in place
    for run in (p.parent for p in summary.experiment_dir.glob(f"*/{COMPLETE_FILE}")):
        prefix = f"runs/{spec.name}/{run.name}/"
        checkpoints = [k for k in keys if k.startswith(prefix + "checkpoints/") and k.endswith("state.json")]
        assert 1 <= len(checkpoints) <= spec.train.keep_checkpoints
        assert not [k for k in keys if k.startswith(prefix + "probe_points/")]  # released once probed
        assert any(k.startswith(prefix + "tensorboard/") for k in keys)


def test_every_trial_completes_with_probes_after_a_killed_worker(killed_once):
    spec, summary, _ = killed_once
    assert summary.errors == [] and summary.unfinished == 0
    result = _results_json(summary.experiment_dir)
    assert sorted(t["size"] for t in result["trials"]) == ["L1-d64", "L2-d64"]
    for trial in result["trials"]:
        assert trial["status"] == "complete" and trial["lr"] == spec.lr
        assert trial["tokens_seen"] == spec.tasks * spec.steps_per_task * spec.batch.global_tokens
        probes = [p for p in result["probes"] if p["trial_id"] == trial["trial_id"]]
        assert len(probes) >= 3 and all(p["auc"] > 0 for p in probes)
        assert {p["cycle"] for p in probes} == {0, 1, 2}
        assert {"trial_id", "size", "cycle", "task_index", "auc"} <= set(probes[0])
        run = summary.experiment_dir / trial["trial_id"]
        assert (run / ".debug_failed_at_13").exists()  # the worker really was killed


def test_tune_saw_the_trials_and_their_probe_results(killed_once):
    from ray import tune

    _, summary, _ = killed_once
    results = tune.Tuner.restore(str(summary.experiment_dir / "tune"), trainable=run_trial).get_results()
    assert len(results) == 2
    for result in results:
        assert result.error is None
        assert result.metrics["status"] == "complete" and result.metrics["probes_done"] == 3
        history = result.metrics_dataframe
        # Train reports came first (each with the trial row so far), then the final row.
        assert len(history) >= 2 and history["val_score"].notna().all()


def test_analyze_draws_what_the_sweep_measured_and_names_what_it_did_not(killed_once, capsys):
    _, summary, _ = killed_once
    assert main(["analyze", str(summary.experiment_dir)]) == 0
    out = capsys.readouterr().out
    analysis = summary.experiment_dir / "analysis"
    for stem in ("fig2_auc_change", "fig5_correlates", "fig9_onset"):  # AUCs and weight magnitude were measured
        assert (analysis / f"{stem}.png").exists() and (analysis / f"{stem}.svg").exists()
    assert "skipped fig6_dormant_layers: no dormant_units diagnostics" in out
    assert "skipped fig7_attention: no attention_entropy diagnostics" in out
    with (analysis / "onsets.csv").open() as f:
        assert len(list(csv.DictReader(f))) == 2


def _expected(run: Path) -> tuple[list[int], dict[int, float]]:
    """What the run directory holds: its logged steps and its probe AUCs by tasks trained."""
    from plasticity_ray.rundir import METRICS_FILE, PROBES, read_job_rows, read_jsonl

    steps = [r["global_step"] for r in read_jsonl(run / METRICS_FILE)]
    aucs = {r["task_index"] + 1: r["auc"] for r in read_job_rows(run, PROBES) if r.get("checkpoint")}
    return steps, aucs


def test_mlflow_holds_each_trial_once_through_the_kill_and_retry(killed_once):
    from mlflow import MlflowClient

    spec, summary, _ = killed_once
    client = MlflowClient(spec.tracking.mlflow.tracking_uri)
    experiment = client.get_experiment_by_name(spec.name)
    runs = client.search_runs([experiment.experiment_id])
    run_dirs = sorted(p.parent.name for p in summary.experiment_dir.glob(f"*/{COMPLETE_FILE}"))
    assert sorted(r.data.tags["plasticity_ray.run_id"] for r in runs) == run_dirs  # one tracker run per trial
    for run in runs:
        directory = summary.experiment_dir / run.data.tags["plasticity_ray.run_id"]
        steps, aucs = _expected(directory)
        assert run.info.status == "FINISHED" and run.data.params["model.size"] == directory.name.split("_")[0]
        loss = client.get_metric_history(run.info.run_id, "train/loss")
        assert [m.step for m in loss] == steps == list(range(2, spec.tasks * spec.steps_per_task + 1, 2))
        assert {m.step: m.value for m in client.get_metric_history(run.info.run_id, "probe/auc")} == aucs
        assert len(client.get_metric_history(run.info.run_id, "diagnostics/weight_magnitude")) == len(aucs)
        assert run.data.tags["result/onset"] and run.data.tags["group/verdict"]
        assert "group/message" in run.data.tags and "result/auc_change_percent" in run.data.metrics


def _wandb_records(wandb_dir: Path, run_name: str) -> list:
    """Every record W&B wrote offline for the run named `run_name` (each retry of the trial resumed
    the same run): the .wandb files are LevelDB-style logs (7-byte header, then records of checksum,
    length and type in 32 KiB blocks) of W&B's protobuf records."""
    from wandb.proto import wandb_internal_pb2

    records = []
    for path in sorted(wandb_dir.glob("wandb/offline-run-*/run-*.wandb")):
        found = []
        data, position, pending = path.read_bytes(), 7, b""
        assert data[:4] == b":W&B"
        while position + 7 <= len(data):
            if 32768 - position % 32768 < 7:  # a block's zero-filled end
                position += 32768 - position % 32768
                continue
            length, kind = int.from_bytes(data[position + 4:position + 6], "little"), data[position + 6]
            if kind == 0:
                break
            pending += data[position + 7:position + 7 + length]
            position += 7 + length
            if kind in (1, 4):  # a whole record, or the last piece of one
                record = wandb_internal_pb2.Record()
                record.ParseFromString(pending)
                found.append(record)
                pending = b""
        if any(r.WhichOneof("record_type") == "run" and r.run.display_name == run_name for r in found):
            records += found
    return records


def _key(item) -> str:
    return item.key or "/".join(item.nested_key)


def test_wandb_offline_holds_each_trial_once_through_the_kill_and_retry(killed_once):
    spec, summary, started_in = killed_once
    for directory in (p.parent for p in summary.experiment_dir.glob(f"*/{COMPLETE_FILE}")):
        steps, aucs = _expected(directory)
        records = _wandb_records(started_in, directory.name)  # in ./wandb, not in Ray's working directories
        history = [{_key(i): json.loads(i.value_json) for i in r.history.item} for r in records
                   if r.WhichOneof("record_type") == "history"]
        assert [h["global_step"] for h in history if "train/loss" in h] == steps
        assert {h["tasks_trained"]: h["probe/auc"] for h in history if "probe/auc" in h} == aucs
        summary_keys = {_key(i) for r in records if r.WhichOneof("record_type") == "summary" for i in r.summary.update}
        assert {"result/onset", "group/verdict", "probe/baseline_auc"} <= summary_keys
        config = {_key(i): json.loads(i.value_json) for r in records if r.WhichOneof("record_type") == "run"
                  for i in r.run.config.update}  # the spec, as the run's config
        assert config["model"]["size"] == directory.name.split("_")[0]


def test_tensorboard_reads_every_step_probe_and_diagnostics_row_once_from_the_bucket(killed_once, tmp_path):
    """TensorBoard's own reader on each run's event objects, fetched from the bucket: every training
    step once through the kill and retry (the retried trial purged what followed its checkpoint),
    every probe AUC and diagnostics row once, at its task index."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from plasticity_ray.storage import as_path

    def events(folder, tag):
        return EventAccumulator(str(folder)).Reload().Scalars(tag)

    _, summary, _ = killed_once
    for directory in (p.parent for p in summary.experiment_dir.glob(f"*/{COMPLETE_FILE}")):
        steps, aucs = _expected(directory)
        remote, local = as_path(directory / "tensorboard"), tmp_path / directory.name
        remote.fs.get(remote.path, str(local), recursive=True)
        assert [e.step for e in events(local / "train", "train/loss")] == steps
        probes = events(local / "probes", "probes/auc")
        assert {e.step + 1: e.value for e in probes} == pytest.approx(aucs)
        assert [e.step for e in events(local / "diagnostics", "diagnostics/weight_magnitude")] == [e.step for e in probes]


def test_the_probe_service_is_closed_after_the_sweep(killed_once, ray_session):
    from plasticity_ray.probe.service import NAMESPACE, service_name

    spec, _, _ = killed_once
    deadline = time.time() + 30
    while time.time() < deadline:
        try:
            ray_session.get_actor(service_name(spec), namespace=NAMESPACE)
        except ValueError:
            return
        time.sleep(0.5)
    pytest.fail("the probe service is still alive 30 s after the sweep")


def test_an_interrupted_sweep_resumes_without_rerunning_finished_trials(demo_prepared, demo_spec, tmp_path, ray_session):
    # Two named variants instead of a grid: they go through Tune as a grid search over their names.
    spec = _tiny(demo_spec, tmp_path, **{"sweep.max_concurrent_trials": 1, "probe.enabled": False,
                                         "schedule.cycles": 2, "name": "resumed", "sweep.grid": {},
                                         "sweep.variants": {"small": {"model.size": "L1-d64"},
                                                            "wider": {"model.size": "L2-d64"}}})
    spec_file = tmp_path / "spec.yaml"
    spec_file.write_text(yaml.safe_dump(spec.model_dump(mode="json")))
    env = {**os.environ, "RAY_ADDRESS": ray_session.get_runtime_context().gcs_address}
    command = [sys.executable, "-m", "plasticity_ray.cli", "sweep", str(spec_file)]
    experiment = tmp_path / "resumed"
    driver = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    watchdog = threading.Timer(300, driver.kill)
    watchdog.start()
    output = []
    for line in driver.stdout:  # Ctrl-C once Tune has recorded the first trial as finished
        output.append(line)
        if re.search(r"Trial run_trial_\w+ completed after", line):
            driver.send_signal(signal.SIGINT)
            break
    rest, _ = driver.communicate(timeout=120)
    watchdog.cancel()
    first_output = "".join(output) + rest
    assert driver.returncode == 130, first_output
    assert "--resume" in first_output
    finished = [p.parent for p in experiment.glob(f"*/{COMPLETE_FILE}")]
    assert len(finished) == 1
    finished_metrics = (finished[0] / "metrics.jsonl").read_bytes()

    resumed = subprocess.run(command + ["--resume"], env=env, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert "resuming the sweep" in resumed.stdout
    assert "already complete" not in resumed.stdout  # Tune did not even start the finished trial
    assert len(list(experiment.glob(f"*/{COMPLETE_FILE}"))) == 2
    assert (finished[0] / "metrics.jsonl").read_bytes() == finished_metrics
    trials = _results_json(experiment)["trials"]
    assert {(t["label"], t["size"]) for t in trials} == {("small", "L1-d64"), ("wider", "L2-d64")}


def test_optuna_searches_the_learning_rate_per_size(demo_prepared, demo_spec, tmp_path):
    spec = _tiny(demo_spec, tmp_path, **{
        "name": "optuna", "probe.enabled": False, "schedule.cycles": 1, "data.languages": ["en"],
        "sweep.grid": {"model.size": ["L1-d64"]}, "sweep.variants": {"plain": {}},
        "sweep.search": {"parameter": "optimizer.lr", "low": 1e-4, "high": 1e-2, "samples": 2},
    })
    summary = run_sweep(spec, **QUIET)
    assert summary.errors == [] and summary.trials == 2
    trials = _results_json(summary.experiment_dir)["trials"]
    lrs = [t["lr"] for t in trials]
    assert len(set(lrs)) == 2 and all(1e-4 <= lr <= 1e-2 for lr in lrs)
    assert all(t["val_score"] is not None and t["status"] == "complete" for t in trials)
    assert {t["label"] for t in trials} == {"plain"}  # Optuna trials keep their variant's name


def test_concurrent_trials_follow_the_cluster_and_leave_room_for_probes(demo_spec):
    gpu = with_overrides(demo_spec, {"resources.gpus_per_worker": 1, "resources.probe_gpus": 1,
                                      "resources.max_concurrent_probes": 2})
    assert max_concurrent_trials(gpu, {"CPU": 64, "GPU": 8}) == 6
    assert max_concurrent_trials(gpu, {"CPU": 64, "GPU": 1}) == 1
    cpu = with_overrides(demo_spec, {"resources.cpus_per_worker": 2, "resources.probe_cpus": 1})
    assert max_concurrent_trials(cpu, {"CPU": 9}) == 4
    assert max_concurrent_trials(with_overrides(cpu, {"sweep.max_concurrent_trials": 2}), {"CPU": 9}) == 2


def test_a_local_ray_without_gpus_refuses_a_gpu_spec_at_once(demo_spec):
    from plasticity_ray.runtime import missing_resources

    gpu = with_overrides(demo_spec, {"resources.gpus_per_worker": 1})
    assert missing_resources(gpu, {"CPU": 2}) == ["training needs 1 GPU, the cluster has 0"]
    assert missing_resources(demo_spec, {"CPU": 2}) == []
