"""A node lost mid-trial, mid-probe and mid-sweep, on a real 3-node Ray on this machine
(tests/node_loss_cluster.py runs the scenarios on one shared cluster, in a process of its own):
nothing is lost, nothing is done twice, and a run ends as an uninterrupted run of the same spec does,
bit for bit."""

import json
import subprocess
import sys

import pytest

from conftest import REPO
from plasticity_ray.probe.service import service_name
from plasticity_ray.rundir import COMPLETE_FILE, METRICS_FILE, read_job_rows, read_jsonl
from plasticity_ray.spec import grid_points, with_overrides
from plasticity_ray.trial import run_dir, run_training

pytestmark = pytest.mark.slow

QUIET = {"say": lambda line: None}


def _spec(demo_spec, storage, name, **overrides):
    """The demo's data and model (L2-d128, 8,192-token steps: slow enough to catch mid-task on a
    CPU) through 2 cycles of 3 languages × 4 steps, probed for 2 steps at the cycle ends."""
    return with_overrides(demo_spec, {
        "name": name, "storage_path": str(storage), "model.size": "L2-d128",
        "data.languages": ["en", "de", "fr"], "schedule.cycles": 2, "schedule.tokens_per_task": 32768,
        "batch.global_tokens": 8192, "train.log_every": 2, "train.report_every": 4, "train.checkpoint_every": 8,
        "train.eval_every": 0, "probe.tokens": 16384, "probe.eval_every": 1, "probe.eval_sequences": 8,
        "probe.extended": None, "diagnostics.enabled": ["weight_magnitude"],
        "resources.max_concurrent_probes": 1, "resources.service_resources": {"service_host": 0.01},
        "sweep.grid": {}, **overrides,
    })


@pytest.fixture(scope="module")
def node_loss(demo_prepared, demo_spec, tmp_path_factory):
    """The scenarios on one 3-node cluster, and the same run uninterrupted on the suite's Ray."""
    storage = demo_spec.storage_path  # the prepared data is shared; each scenario has its own name
    trainer = _spec(demo_spec, storage, "node-loss-trainer")
    service = _spec(demo_spec, storage, "node-loss-service")
    sweep = _spec(demo_spec, storage, "node-loss-sweep", **{"sweep.grid": {"seed": [0, 1]}})
    first_trial = with_overrides(sweep, next(iter(grid_points(sweep))))
    # The suite's Ray has no "service_host" resource (placement is not part of what a run trains).
    reference = run_training(_spec(demo_spec, storage, "node-loss-reference", **{"resources.service_resources": {}}),
                             **QUIET)
    scenarios = {
        "trainer": {"kind": "trainer", "spec": trainer.model_dump(mode="json"), "rows": 7},
        # All training rows written: the service is lost while the trial waits for its probes.
        "probe_service": {"kind": "probe_service", "spec": service.model_dump(mode="json"), "jobs": 2,
                          "rows": service.tasks * service.steps_per_task // service.train.log_every},
        "sweep": {"kind": "sweep", "spec": sweep.model_dump(mode="json"),
                  "first_trial": first_trial.model_dump(mode="json"), "rows": 7},
    }
    work = tmp_path_factory.mktemp("node-loss")
    (work / "scenarios.json").write_text(json.dumps(scenarios))
    done = subprocess.run([sys.executable, str(REPO / "tests" / "node_loss_cluster.py"), str(work / "scenarios.json"),
                           str(work / "out.json")], capture_output=True, text=True, timeout=600, cwd=work)
    assert done.returncode == 0, (done.stdout + done.stderr)[-5000:]
    outcome = json.loads((work / "out.json").read_text())
    return {"reference": reference.run_dir, "outcome": outcome, "trainer": trainer, "service": service, "sweep": sweep}


def _training(run):
    """Every metrics line as written (a duplicate would show), and the run's final weights digests."""
    lines = [json.loads(line) for line in (run / METRICS_FILE).read_text().splitlines() if line.strip()]
    return lines, json.loads((run / COMPLETE_FILE).read_text())["replica_digests"]


def _aucs(run):
    return {r["task_index"]: r["auc"] for r in read_job_rows(run, "probes")}


def _same_training(run, reference):
    lines, digests = _training(run)
    reference_lines, reference_digests = _training(reference)
    steps = [row["global_step"] for row in lines]
    assert steps == sorted(set(steps))  # no training row twice
    assert digests == reference_digests  # the same weights, bit for bit
    keep = ("global_step", "loss", "batch_digest", "tokens_seen")
    assert [{k: r.get(k) for k in keep} for r in lines] == [{k: r.get(k) for k in keep} for r in reference_lines]


def test_a_trainer_node_lost_mid_task_resumes_elsewhere_bit_for_bit(node_loss):
    outcome = node_loss["outcome"]["trainer"]
    assert outcome["removed"] and outcome["actors_on_node"]["RayTrainWorker"] == 1
    assert outcome["complete"]
    run = run_dir(node_loss["trainer"])
    _same_training(run, node_loss["reference"])
    assert _aucs(run) == _aucs(node_loss["reference"])  # every probe, once, the same AUC


def test_a_probe_service_node_lost_with_jobs_queued_reruns_each_unfinished_job_once(node_loss):
    outcome = node_loss["outcome"]["probe_service"]
    assert outcome["removed"] and service_name(node_loss["service"]) in outcome["actors_on_node"]["services"]
    assert outcome["complete"]
    run = run_dir(node_loss["service"])
    _same_training(run, node_loss["reference"])
    probes, diagnostics = read_job_rows(run, "probes"), read_job_rows(run, "diagnostics")
    assert all(r["status"] == "ok" for r in probes + diagnostics)
    assert _aucs(run) == _aucs(node_loss["reference"])  # baseline and both cycle ends: none lost
    assert len(diagnostics) == 2
    # Queued jobs ran after the service came back; every job ran to its end once: a finished job
    # writes one TensorBoard file named by its probe point, and there is one per point and kind.
    assert [r for r in probes + diagnostics if r["started"] > outcome["at"]]
    for kind, rows in (("probes", probes), ("diagnostics", diagnostics)):
        files = sorted(p.name.rsplit(".", 1)[1] for p in (run / "tensorboard" / kind).iterdir())
        assert files == sorted(f"task-{r['task_index']:05d}" for r in rows if r["checkpoint"] is not None)


def test_a_node_lost_mid_sweep_leaves_every_trial_complete_and_the_tables_whole(node_loss, capsys):
    from plasticity_ray.cli import main

    outcome = node_loss["outcome"]["sweep"]
    assert outcome["removed"] and outcome["actors_on_node"]["RayTrainWorker"] >= 1
    assert outcome["errors"] == [] and outcome["unfinished"] == 0
    sweep = node_loss["sweep"]
    experiment = run_dir(with_overrides(sweep, next(iter(grid_points(sweep))))).parent
    assert main(["results", str(experiment), "--json"]) == 0
    tables = json.loads(capsys.readouterr().out)
    assert sorted(t["seed"] for t in tables["trials"]) == [0, 1]
    assert all(t["status"] == "complete" and t["probes_done"] == 2 for t in tables["trials"])
    assert len(tables["probes"]) == 4 and len(tables["groups"]) == 1
    first = run_dir(with_overrides(sweep, next(iter(grid_points(sweep)))))
    _same_training(first, node_loss["reference"])  # seed 0 is the reference run
    for trial in tables["trials"]:
        steps = [r["global_step"] for r in read_jsonl(experiment / trial["trial_id"] / METRICS_FILE)]
        assert len(steps) == sweep.tasks * sweep.steps_per_task // sweep.train.log_every
