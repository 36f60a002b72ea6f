"""One local Ray for the whole session (starting Ray costs seconds), and the demo data prepared once."""

import os
import socket
import tempfile

os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("RAY_ENABLE_UV_RUN_RUNTIME_ENV", "0")
# No test reaches the Hugging Face Hub, and `datasets` caches what the tests load in a folder of theirs.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_CACHE", tempfile.mkdtemp(prefix="hf-datasets-"))
# The S3 the object-storage tests use: a moto server on 127.0.0.1 (`s3_server`), on a port chosen now
# so that every process Ray starts for the session knows the endpoint.
with socket.socket() as _free:
    _free.bind(("127.0.0.1", 0))
    S3_PORT = _free.getsockname()[1]
os.environ.update({"AWS_ENDPOINT_URL": f"http://127.0.0.1:{S3_PORT}", "AWS_ACCESS_KEY_ID": "testing",
                   "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"})

import json
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def ray_session():
    import ray

    # More logical CPUs than cores: Ray Data, Train workers and probe actors need room to coexist.
    ray.init(num_cpus=4, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


# The tests' base spec: the demo's recipe on all eight training languages (so the prepared data
# serves every test), with the demo's earlier probe schedule that the tests' expectations count on.
TEST_OVERRIDES = {
    "data.languages": ["en", "zh", "fr", "ja", "es", "de", "pt", "ru"], "schedule.tokens_per_task": "128K",
    "probe.extended": {"languages": ["es"]}, "probe.tokens": "64K", "probe.eval_every": 2,
    "train.report_every": 64, "train.checkpoint_every": 64, "sweep.grid": {"model.size": ["L1-d64", "L2-d128"]},
}


class LocalS3:
    """The tests' S3: moto's server on the session's port, which a test may stop and start again
    (an outage); the buckets stay, since moto keeps them in this process."""

    def start(self) -> None:
        from moto.server import ThreadedMotoServer

        self.server = ThreadedMotoServer(ip_address="127.0.0.1", port=S3_PORT, verbose=False)
        self.server.start()
        self.running = True

    def stop(self) -> None:
        self.server.stop()
        self.running = False


@pytest.fixture(scope="session")
def s3_endpoint():
    s3 = LocalS3()
    s3.start()
    yield s3
    s3.stop()


@pytest.fixture(scope="session")
def s3_server(s3_endpoint):
    """A boto3 client of the local S3."""
    import boto3

    return boto3.client("s3")


@pytest.fixture(scope="session")
def demo_spec(tmp_path_factory):
    from plasticity_ray.spec import load_spec, with_overrides

    storage = tmp_path_factory.mktemp("storage")
    return with_overrides(load_spec(REPO / "experiments" / "demo.yaml"), {**TEST_OVERRIDES, "storage_path": str(storage)})


@pytest.fixture(scope="session")
def demo_prepared(ray_session, demo_spec):
    from plasticity_ray.data.prepare import prepare

    return prepare(demo_spec, say=lambda line: None)


def _write_run(experiment, run_id, size, lr, aucs, baseline, complete=True, failed_task=None, languages=8,
               label=None, loss_offset=0.0, seed=0, replicates=None):
    """A run directory as a run writes it: spec, metrics (with a torn last line), probe and
    diagnostics rows after every `languages`-th task; `replicates[i]`: probe i's replicate AUCs
    (their mean is its AUC)."""
    run = experiment / run_id
    run.mkdir(parents=True)
    from plasticity_ray.spec import ExperimentSpec

    spec = ExperimentSpec(name="e", model={"size": size}, optimizer={"lr": lr}, label=label, seed=seed)
    (run / "spec.json").write_text(json.dumps(spec.model_dump(mode="json")))
    rows = [{"task": t, "cycle": t // languages, "step": 16, "loss": 5.0 - t / 10 + loss_offset, "tokens_seen": (t + 1) * 1000, "time": t}
            for t in range(8)]
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows) + '{"task": 9, "st')  # torn line
    if complete:
        (run / "complete.json").write_text("{}")
    (run / "probes").mkdir()
    (run / "diagnostics").mkdir()
    (run / "probes" / "baseline.json").write_text(json.dumps({"status": "ok", "auc": baseline, "checkpoint": None,
                                                             "task_index": None}))
    for i, auc in enumerate(aucs if aucs is not None else [None] * len(replicates)):
        task = languages * i + languages - 1
        point = {"status": "ok", "auc": auc, "checkpoint": f"x/{task}", "task_index": task, "cycle": i, "language": "ru"}
        if replicates is not None:
            point.update(replicate_aucs=replicates[i], auc=sum(replicates[i]) / len(replicates[i]))
        (run / "probes" / f"task-{task:05d}.json").write_text(json.dumps(point))
        diag = {**point, "weight_magnitude": 0.1 * (i + 1), "dormant_units": {"percent": 2.0, "per_layer_percent": [1.0, 3.0]},
                "attention_entropy": {"lazy_percent": 10.0, "collapsed_percent": 5.0, "h_max": 4.0,
                                      "per_head": [[1.0, 2.0], [0.0, 4.0]]}}
        (run / "diagnostics" / f"task-{task:05d}.json").write_text(json.dumps(diag))
    if failed_task is not None:
        (run / "probes" / f"task-{failed_task:05d}.error.json").write_text(
            json.dumps({"status": "failed", "error": "model.pt: unreadable", "task_index": failed_task}))


@pytest.fixture
def write_run():
    return _write_run
