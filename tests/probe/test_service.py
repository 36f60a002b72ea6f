"""The probe service on a real local Ray: concurrent with training, outliving its driver, robust."""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest
import ray
import torch

from plasticity_ray.data.prepare import prepared_root
from plasticity_ray.model.gpt import GPT
from plasticity_ray.probe.service import NAMESPACE, baseline_request, close_service, get_service, service_name
from plasticity_ray.rundir import point_key, read_job_rows as read_rows, row_path
from plasticity_ray.spec import with_overrides
from plasticity_ray.train import checkpoint
from plasticity_ray.trial import run_dir, run_training
from plasticity_ray.train.recipe import model_config

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def probed_run(demo_prepared, demo_spec, tmp_path_factory):
    spec = with_overrides(demo_spec, {
        "name": "probed", "storage_path": str(tmp_path_factory.mktemp("probed")), "model.size": "L1-d64",
        "schedule.cycles": 2, "schedule.tokens_per_task": 16384, "schedule.warmup_fraction": 0.25,
        "batch.global_tokens": 2048, "resources.workers": 2, "train.log_every": 2, "train.report_every": 64,
        "probe.tokens": 8192, "probe.eval_sequences": 16, "probe.extended": {"languages": ["de"]},
        "diagnostics.enabled": ["weight_magnitude", "dormant_units", "attention_entropy", "weight_distance"],
        "diagnostics.dormant_sequences": 8, "diagnostics.entropy_sequences": 4,
    })
    summary = run_training(spec, say=lambda line: None)
    close_service(spec)
    return spec, summary


def test_one_probe_row_per_probe_point_and_the_baseline(probed_run):
    spec, summary = probed_run
    probes = {r["task_index"]: r for r in read_rows(summary.run_dir, "probes")}
    assert sorted(probes, key=lambda k: -1 if k is None else k) == [None, 5, 7, 13, 15]  # after de, cycle ends
    assert probes[None]["checkpoint"] is None and probes[None]["status"] == "ok"  # the baseline
    # Each probe point draws its own subsample: the n-th probe point of the run is draw n.
    assert {task: probes[task]["probe_index"] for task in (5, 7, 13, 15)} == {5: 0, 7: 1, 13: 2, 15: 3}
    for task, row in probes.items():
        assert row["auc"] > 0 and len(row["curve"]) >= 2
        if task is not None:
            assert row["language"] == ("de" if task % 8 == 5 else "ru")
    diagnostics = {r["task_index"]: r for r in read_rows(summary.run_dir, "diagnostics")}
    assert sorted(diagnostics) == [5, 7, 13, 15]
    # TensorBoard's own reader: each probe's AUC and each point's diagnostics once, at its task index.
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    for kind, tag in (("probes", "probes/auc"), ("diagnostics", "diagnostics/weight_magnitude")):
        events = EventAccumulator(str(summary.run_dir / "tensorboard" / kind)).Reload().Scalars(tag)
        assert [e.step for e in events] == [5, 7, 13, 15]
    assert [e.value for e in events] == pytest.approx([diagnostics[t]["weight_magnitude"] for t in (5, 7, 13, 15)])
    assert diagnostics[5]["weight_distance"] is None and diagnostics[7]["weight_distance"] > 0
    assert 0 <= diagnostics[15]["dormant_units"]["percent"] <= 100


def test_training_goes_on_while_probes_run(probed_run):
    spec, summary = probed_run
    rows = [json.loads(line) for line in (summary.run_dir / "metrics.jsonl").read_text().splitlines()]
    first = min((r for r in read_rows(summary.run_dir, "probes") if r["task_index"] is not None),
                key=lambda r: r["submitted"])
    during = [r for r in rows if first["submitted"] < r["time"] < first["finished"]]
    assert during and during[-1]["global_step"] > first["global_step"]  # later steps, logged meanwhile


def _assert_service_exits(spec):
    deadline = time.time() + 30
    while time.time() < deadline:
        try:
            ray.get_actor(service_name(spec), namespace=NAMESPACE)
            time.sleep(0.5)
        except ValueError:
            return
    pytest.fail("the probe service did not exit after close")


def test_released_checkpoints_and_a_closed_service(probed_run):
    spec, summary = probed_run
    assert not list((summary.run_dir / "probe_points").glob("task-*"))  # all released after use
    _assert_service_exits(spec)


def _probe_point_checkpoint(spec, task):
    cfg = model_config(spec)
    torch.manual_seed(task)
    model = GPT(cfg)
    state = {"model": checkpoint.model_signature(cfg), "position": {"task": task + 1, "step": 0},
             "size": spec.model.size, "lr": spec.lr, "seed": spec.seed}
    return checkpoint.save_probe_point(run_dir(spec), task, model.state_dict(), state)


def _point(spec, task, path):
    request = baseline_request(spec, run_dir(spec))
    return {**request, "checkpoint": str(path), "task_index": task, "cycle": task // 8, "language": "ru"}


def test_probes_outlive_a_killed_driver_and_a_bad_checkpoint_is_named(ray_session, demo_prepared, demo_spec,
                                                                      tmp_path):
    spec = with_overrides(demo_spec, {
        "name": "orphaned", "storage_path": str(tmp_path), "model.size": "L1-d64", "batch.global_tokens": 2048,
        "schedule.tokens_per_task": 8192, "probe.tokens": 8192, "probe.eval_sequences": 16,
        "diagnostics.enabled": ["weight_magnitude"], "resources.max_concurrent_probes": 1,
    })
    (tmp_path / "prepared").symlink_to(prepared_root(demo_spec).parent)  # the demo data, prepared once
    good = [_probe_point_checkpoint(spec, t) for t in (7, 15)]
    bad = _probe_point_checkpoint(spec, 23)
    (bad / "model.pt").write_bytes(b"truncated")
    existing = row_path(run_dir(spec), "probes", point_key(31))
    existing.parent.mkdir(parents=True, exist_ok=True)
    existing.write_text(json.dumps({"status": "ok", "auc": 1.0, "task_index": 31}))
    requests = [_point(spec, 7, good[0]), _point(spec, 23, bad), _point(spec, 15, good[1]),
                _point(spec, 31, good[1])]  # task 31: its probe row exists already
    script = tmp_path / "driver.py"
    script.write_text(textwrap.dedent(f"""
        import json, time, ray
        from plasticity_ray.spec import ExperimentSpec
        from plasticity_ray.probe.service import get_service
        ray.init()
        spec = ExperimentSpec.model_validate(json.loads({json.dumps(json.dumps(spec.model_dump(mode="json")))}))
        service = get_service(spec)
        for request in json.loads({json.dumps(json.dumps(requests))}):
            ray.get(service.submit.remote(spec.model_dump(mode="json"), request))
        print("submitted", flush=True)
        time.sleep(600)
    """))
    env = {**os.environ, "RAY_ADDRESS": ray_session.get_runtime_context().gcs_address}
    driver = subprocess.Popen([sys.executable, str(script)], env=env, stdout=subprocess.PIPE, text=True,
                              start_new_session=True)
    assert driver.stdout.readline().strip() == "submitted"
    os.killpg(driver.pid, signal.SIGKILL)  # the driver is gone; the detached service is not
    driver.wait()
    service = get_service(spec)
    ray.get(service.wait.remote(), timeout=300)
    rows = {r["task_index"]: r for r in read_rows(run_dir(spec), "probes")}
    assert rows[7]["status"] == rows[15]["status"] == "ok", (rows[7].get("error"), rows[15].get("error"))
    assert rows[23]["status"] == "failed" and f"{bad / 'model.pt'}: unreadable" in rows[23]["error"]
    assert rows[31] == {"status": "ok", "auc": 1.0, "task_index": 31}  # skipped, not overwritten
    close_service(spec)
    _assert_service_exits(spec)


def test_the_results_table_of_a_real_run(probed_run, capsys):
    from plasticity_ray.cli import main

    spec, summary = probed_run
    assert main(["results", str(summary.run_dir.parent), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert [t["status"] for t in result["trials"]] == ["complete"]
    assert result["trials"][0]["probes_done"] == 4
    assert [p["task_index"] for p in result["probes"]] == [5, 7, 13, 15]
    assert all(p["normalized_auc"] > 0 and p["dormant_percent"] is not None for p in result["probes"])


def test_live_probes_go_before_backfills_waiting_for_a_slot(ray_session, demo_prepared, demo_spec, tmp_path):
    """One slot: a backfill (a kept point, `deferred`) takes it, two more wait, then a live point
    comes: it runs next, before the waiting backfills (the group's next decision waits on it)."""
    spec = with_overrides(demo_spec, {
        "name": "prioritised", "storage_path": str(tmp_path), "model.size": "L1-d64", "batch.global_tokens": 2048,
        "probe.tokens": 4096, "probe.eval_sequences": 8, "diagnostics.enabled": [], "probe.baseline": False,
        "resources.max_concurrent_probes": 1,
    })
    (tmp_path / "prepared").symlink_to(prepared_root(demo_spec).parent)
    backfills = [{**_point(spec, t, _probe_point_checkpoint(spec, t)), "deferred": True} for t in (2, 10, 18)]
    live = {**_point(spec, 7, _probe_point_checkpoint(spec, 7)), "deferred": False}
    service = get_service(spec)
    spec_json = spec.model_dump(mode="json")
    for request in [*backfills, live]:
        ray.get(service.submit.remote(spec_json, request))
    ray.get(service.wait.remote(), timeout=300)
    rows = sorted(read_rows(run_dir(spec), "probes"), key=lambda r: r["started"])
    assert [r["task_index"] for r in rows] == [2, 7, 10, 18] and all(r["status"] == "ok" for r in rows)
    close_service(spec)
