"""Node loss on a real multi-node Ray on this machine, run by tests/test_node_loss.py in a process of
its own (the suite's other tests share a single-node Ray in theirs).

One `ray.cluster_utils.Cluster` for every scenario, as Ray's own fault-tolerance tests use it: a head
node without CPUs (the driver's: Ray Train's controller lives there) and two worker nodes of 2 CPUs.
Each scenario runs the platform's own entry point, removes a worker node without letting it shut
down (its raylet and every worker process on it killed) at a moment it sees in storage, and adds a
replacement node; what it removed, and when, goes into the JSON written at the end.

    python tests/node_loss_cluster.py SCENARIOS.json OUT.json
"""

import json
import sys
import threading
import time
from pathlib import Path

import ray
from ray.cluster_utils import Cluster

from plasticity_ray.probe.service import get_service, service_name
from plasticity_ray.rundir import METRICS_FILE, read_jsonl
from plasticity_ray.spec import ExperimentSpec
from plasticity_ray.sweep.tune import run_sweep
from plasticity_ray.trial import run_dir, run_training

# Every worker node can host the probe service (the specs ask for a little of "service_host"), the
# head cannot: the service lands on a node a scenario can remove.
NODE = {"num_cpus": 2, "resources": {"service_host": 1}, "object_store_memory": 150 * 1024**2}
QUIET = {"say": lambda line: None}


def actors_by_node(class_name: str, name: str | None = None) -> dict[str, int]:
    """Live actors of a class (and `name`, if given) per node id (Ray's actor table)."""
    counts: dict[str, int] = {}
    for actor in ray._private.state.actors().values():
        if actor["ActorClassName"] == class_name and actor["State"] == "ALIVE" and name in (None, actor["Name"]):
            node = actor["Address"]["NodeID"]
            counts[node] = counts.get(node, 0) + 1
    return counts


def remove_when(cluster: Cluster, ready, worker: threading.Thread) -> dict:
    """Once `ready()` names a node, remove it and add a replacement (in the main thread: starting a
    node installs signal handlers); nothing is removed if the work ends first."""
    while worker.is_alive():
        try:
            node_id = ready()
        except Exception:  # storage or the service mid-change: look again
            node_id = None
        if node_id:
            break
        time.sleep(0.2)
    else:
        return {"removed": False}
    node = next(n for n in cluster.worker_nodes if n.node_id == node_id)
    on_node = {name: actors_by_node(name).get(node_id, 0) for name in ("RayTrainWorker", "ProbeService")}
    on_node["services"] = sorted(a["Name"] for a in ray._private.state.actors().values()
                                 if a["ActorClassName"] == "ProbeService" and a["State"] == "ALIVE"
                                 and a["Address"]["NodeID"] == node_id)
    removed_at = time.time()
    cluster.remove_node(node, allow_graceful=False)
    cluster.add_node(**NODE)
    return {"removed": True, "actors_on_node": on_node, "at": removed_at, "replaced_at": time.time()}


def trainer_node_after_rows(spec: ExperimentSpec, rows: int):
    metrics = run_dir(spec) / METRICS_FILE

    def ready():
        if len(read_jsonl(metrics)) < rows:
            return None
        nodes = actors_by_node("RayTrainWorker")
        return next(iter(nodes), None)

    return ready


def service_node_when_queued(spec: ExperimentSpec, jobs: int, rows: int):
    """The probe service's node, once the run has logged `rows` training rows (all of them: the
    trial is waiting for its probes) and has `jobs` jobs pending (one running, the rest queued)."""
    metrics = run_dir(spec) / METRICS_FILE

    def ready():
        nodes = actors_by_node("ProbeService", service_name(spec))  # not an earlier scenario's
        if not nodes or len(read_jsonl(metrics)) < rows:
            return None
        status = ray.get(get_service(spec).status.remote(str(run_dir(spec))), timeout=10)
        return next(iter(nodes)) if status["pending"] >= jobs else None

    return ready


def main(scenarios_path: str, out_path: str) -> None:
    scenarios = json.loads(Path(scenarios_path).read_text())
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "object_store_memory": 150 * 1024**2})
    for _ in range(2):
        cluster.add_node(**NODE)
    ray.init(address=cluster.address, log_to_driver=False)
    results = {}
    for name, scenario in scenarios.items():
        spec = ExperimentSpec.model_validate(scenario["spec"])
        if scenario["kind"] == "trainer":
            ready = trainer_node_after_rows(spec, scenario["rows"])
        elif scenario["kind"] == "probe_service":
            ready = service_node_when_queued(spec, scenario["jobs"], scenario["rows"])
        else:  # a sweep: the node of a training worker, once the first trial has logged `rows` rows
            first = ExperimentSpec.model_validate(scenario["first_trial"])
            ready = trainer_node_after_rows(first, scenario["rows"])
        outcome: dict = {}

        def work(spec=spec, kind=scenario["kind"], outcome=outcome):
            try:
                if kind == "sweep":
                    summary = run_sweep(spec, **QUIET)
                    outcome.update(errors=summary.errors, unfinished=summary.unfinished)
                else:
                    outcome.update(complete=run_training(spec, **QUIET).complete)
            except BaseException as err:  # said in the record, for the test to show
                outcome["error"] = repr(err)

        started = time.time()
        worker = threading.Thread(target=work)
        worker.start()
        removal = remove_when(cluster, ready, worker)
        worker.join()
        results[name] = {**outcome, **removal, "started": started, "ended": time.time()}
        print(name, json.dumps(results[name]), flush=True)
    Path(out_path).write_text(json.dumps(results, indent=2))
    ray.shutdown()
    cluster.shutdown()


if __name__ == "__main__":
    main(*sys.argv[1:])
