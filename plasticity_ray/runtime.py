"""Connecting to Ray (the cluster named by RAY_ADDRESS when set, else a local Ray started here) and
checking, before anything waits forever, that it has the resources a spec asks for."""

from __future__ import annotations

import logging
import os

import ray

from plasticity_ray.errors import ResourceError
from plasticity_ray.spec import ExperimentSpec


def init_ray() -> None:
    if ray.is_initialized():
        return
    if not on_cluster():
        # A local Ray started here, configured so that its output holds nothing a user must not act
        # on: Ray Train's preemption watcher stays off, because nothing preempts a local node and
        # starting its actor logs an internal "E ... core_worker" line in every trial.
        os.environ.setdefault("RAY_TRAIN_ENABLE_PREEMPTION_WATCHER", "0")
    # Ray turns token authentication on for a new local Ray and says so at WARNING in every
    # command; it stays on, and only that notice is left out.
    notice = logging.getLogger("ray._private.authentication.authentication_token_setup")
    level = notice.level
    notice.setLevel(logging.ERROR)
    try:
        ray.init(logging_level=logging.WARNING)
    finally:
        notice.setLevel(level)


def on_cluster() -> bool:
    return bool(os.environ.get("RAY_ADDRESS"))


def missing_resources(spec: ExperimentSpec, cluster: dict[str, float]) -> list[str]:
    """What one run needs (its Train workers; a probe job) that the whole cluster does not have."""
    r = spec.resources
    needs = [("training", "CPU", r.workers * r.cpus_per_worker), ("training", "GPU", r.workers * r.gpus_per_worker)]
    if spec.probe.enabled:
        needs += [("a probe job", "CPU", r.probe_cpus), ("a probe job", "GPU", r.probe_gpus)]
        needs += [("the probe service", name, amount) for name, amount in r.service_resources.items()]
    return [f"{what} needs {amount:g} {kind}, the cluster has {cluster.get(kind, 0.0):g}"
            for what, kind, amount in needs if amount > cluster.get(kind, 0.0) + 1e-9]


def check_resources(spec: ExperimentSpec, say=print) -> None:
    """Raise ResourceError on a local Ray that lacks them; on a cluster only warn (an autoscaler may
    add nodes, and the work waits for them)."""
    missing = missing_resources(spec, ray.cluster_resources())
    if not missing:
        return
    hint = "; on a machine without GPUs set resources.gpus_per_worker and resources.probe_gpus to 0"
    if not on_cluster():
        raise ResourceError("this local Ray cannot run the spec: " + "; ".join(missing) + hint)
    say("warning: " + "; ".join(missing) + " — the work waits until the cluster grows (autoscaling)")
