"""The cluster launcher config and KubeRay manifests: valid YAML whose fields are the ones Ray and
KubeRay read, with GPU workers, shared storage, the project's image and token authentication."""

import re
import shlex
from pathlib import Path

import ray
import yaml

CLUSTER = Path(__file__).resolve().parent.parent / "cluster"
RAY_MINOR = ".".join(ray.__version__.split(".")[:2])


def _load_all(name):
    return list(yaml.safe_load_all((CLUSTER / name).read_text()))


def _ray_cluster_schema() -> dict:
    """The JSON schema Ray's cluster launcher validates configs against (shipped with Ray)."""
    import json
    from importlib.resources import files

    return json.loads((files("ray.autoscaler") / "ray-schema.json").read_text())


def test_launcher_config_has_a_gpu_worker_type_shared_storage_and_auth():
    import jsonschema

    config = _load_all("aws-gpu.yaml")[0]
    schema = _ray_cluster_schema()
    jsonschema.validate(config, schema)  # Ray's own schema
    try:  # which does catch a misspelled key
        jsonschema.validate({**config, "head_node_typ": "x"}, schema)
        raise AssertionError("Ray's schema accepted a misspelled key")
    except jsonschema.ValidationError as err:
        assert "head_node_typ" in err.message
    assert re.fullmatch(rf"rayproject/ray:{re.escape(RAY_MINOR)}\.\d+-py311-gpu", config["docker"]["image"])
    types = config["available_node_types"]
    assert config["head_node_type"] in types
    gpu_types = [t for t in types.values() if t["resources"].get("GPU", 0) > 0]
    assert gpu_types and all(t["max_workers"] > 0 for t in gpu_types)
    assert "-v /mnt/shared:/mnt/shared" in config["docker"]["run_options"]
    assert "-e RAY_AUTH_MODE=token" in config["docker"]["run_options"]
    assert any("mount" in c and "/mnt/shared" in c for c in config["initialization_commands"])
    head_start = " ".join(config["head_start_ray_commands"])
    assert "--dashboard-host=127.0.0.1" in head_start and "RAY_AUTH_MODE=token" in head_start
    assert "RAY_AUTH_MODE=token" in " ".join(config["worker_start_ray_commands"])
    assert "~/.ray/auth_token" in config["file_mounts"]


def _cluster_specs():
    docs = _load_all("kuberay-raycluster.yaml") + _load_all("kuberay-rayjob.yaml")
    claims = {d["metadata"]["name"] for d in docs if d["kind"] == "PersistentVolumeClaim"}
    clusters = [d["spec"] for d in docs if d["kind"] == "RayCluster"]
    clusters += [d["spec"]["rayClusterSpec"] for d in docs if d["kind"] == "RayJob"]
    return docs, claims, clusters


def test_kuberay_manifests_have_gpu_workers_shared_storage_token_auth_and_a_private_dashboard():
    docs, claims, clusters = _cluster_specs()
    assert {d["apiVersion"] for d in docs if d["kind"] in ("RayCluster", "RayJob")} == {"ray.io/v1"}
    assert len(clusters) == 2
    dockerfile = (CLUSTER / "Dockerfile").read_text()
    assert re.search(rf"^FROM rayproject/ray:{re.escape(RAY_MINOR)}\.\d+-py311-gpu$", dockerfile, re.M)
    for spec in clusters:
        assert spec["rayVersion"].startswith(RAY_MINOR + ".")
        assert spec["authOptions"] == {"mode": "token"}
        assert spec["headGroupSpec"].get("serviceType", "ClusterIP") == "ClusterIP"
        pods = [spec["headGroupSpec"]["template"]["spec"]] + [g["template"]["spec"] for g in spec["workerGroupSpecs"]]
        for pod in pods:
            shared = [v["name"] for v in pod["volumes"] if v.get("persistentVolumeClaim", {}).get("claimName") in claims]
            assert shared, "every pod mounts the shared volume"
            for container in pod["containers"]:
                assert container["image"].endswith("/plasticity-ray:latest")
                assert {"name": shared[0], "mountPath": "/mnt/shared"} in container["volumeMounts"]
        for group in spec["workerGroupSpecs"]:
            limits = group["template"]["spec"]["containers"][0]["resources"]["limits"]
            assert int(limits["nvidia.com/gpu"]) >= 1
            assert group["minReplicas"] <= group["replicas"] <= group["maxReplicas"]


def test_the_rayjob_runs_a_spec_that_exists_with_storage_on_the_shared_volume():
    from plasticity_ray.spec import load_spec

    job = next(d for d in _load_all("kuberay-rayjob.yaml") if d["kind"] == "RayJob")
    args = shlex.split(job["spec"]["entrypoint"])
    assert args[:4] == ["python", "-m", "plasticity_ray.cli", "sweep"]
    spec_path = args[4].replace("/home/ray/plasticity-ray/", "")
    load_spec(CLUSTER.parent / spec_path)
    assert args[args.index("--storage") + 1].startswith("/mnt/shared/")
