"""One local Ray for the whole session (starting Ray costs seconds), and the demo data prepared once."""

import os

os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("RAY_ENABLE_UV_RUN_RUNTIME_ENV", "0")

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


@pytest.fixture(scope="session")
def demo_spec(tmp_path_factory):
    from plasticity_ray.spec import load_spec, with_overrides

    storage = tmp_path_factory.mktemp("storage")
    return with_overrides(load_spec(REPO / "experiments" / "demo.yaml"), {"storage_path": str(storage)})


@pytest.fixture(scope="session")
def demo_prepared(ray_session, demo_spec):
    from plasticity_ray.data.prepare import prepare

    return prepare(demo_spec, say=lambda line: None)
