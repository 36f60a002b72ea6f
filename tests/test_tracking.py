"""Trackers that cannot start are one line naming them; one that fails mid-run is dropped with a
warning and the run goes on. (What trackers receive from a real sweep is tested with the sweep,
tests/sweep/test_tune.py.)"""

import json

import pytest

from plasticity_ray.rundir import METRICS_FILE
from plasticity_ray.spec import ExperimentSpec, SpecError, load_spec
from plasticity_ray.tracking import RunTracking, TrackerError


def test_wandb_online_without_an_api_key_says_what_to_do(tmp_path, monkeypatch):
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "netrc"))  # no key saved by `wandb login` either
    spec = ExperimentSpec(name="x", tracking={"wandb": {"project": "p"}})
    with pytest.raises(TrackerError) as err:
        RunTracking.open(spec, tmp_path / "run")
    assert str(err.value) == ("tracking.wandb: mode online needs a W&B API key (set WANDB_API_KEY or run "
                              "`wandb login`), or set tracking.wandb.mode: offline")


def test_an_unreachable_mlflow_server_is_named(tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")  # MLflow's own retries, off for the test
    spec = ExperimentSpec(name="x", tracking={"mlflow": {"tracking_uri": "http://127.0.0.1:9", "experiment": "e"}})
    with pytest.raises(TrackerError, match=r"^tracking\.mlflow: http://127\.0\.0\.1:9 \(experiment 'e'\): .*refused"):
        RunTracking.open(spec, tmp_path / "run")


def test_a_tracker_section_without_its_project_is_a_spec_error(tmp_path):
    path = tmp_path / "spec.yaml"
    path.write_text("name: x\ntracking:\n  wandb: {mode: offline}\n")
    with pytest.raises(SpecError, match="tracking.wandb.project: required"):
        load_spec(str(path))


def test_a_tracker_that_fails_mid_run_is_dropped_and_the_rows_stay(tmp_path):
    from mlflow import MlflowClient

    run_dir = tmp_path / "run"
    run_dir.mkdir()
    store = tmp_path / "mlflow.db"
    spec = ExperimentSpec(name="x", tracking={"mlflow": {"tracking_uri": f"sqlite:///{store}"}})
    said = []
    tracking = RunTracking.open(spec, run_dir, say=said.append)
    rows = [{"global_step": step, "loss": 5.0 - step / 10} for step in (10, 20)]
    (run_dir / METRICS_FILE).write_text("".join(json.dumps(r) + "\n" for r in rows))
    for row in rows:
        tracking.training_row(row)
    history = MlflowClient(f"sqlite:///{store}").get_metric_history(tracking.trackers[0].run_id, "train/loss")
    assert [(m.step, m.value) for m in history] == [(10, 4.0), (20, 3.0)]
    store.unlink()  # the store goes away under the run
    tracking.training_row({"global_step": 30, "loss": 2.0})
    assert tracking.trackers == [] and len(said) == 1
    assert said[0].startswith("warning: tracking.mlflow stopped for run: ") and "training goes on" in said[0]
    tracking.finish(ok=False)  # nothing left to send to: no error
    assert json.loads((run_dir / "tracking.json").read_text())["global_step"] == 30
    assert (run_dir / METRICS_FILE).read_text().count("\n") == 2  # the run directory was not touched
