"""Object storage that cannot be used stops a run at once, in one line naming the bucket. (A whole
sweep on object storage — prepare, Tune, a crash and resume, results and analyze in a bucket of the
tests' local S3 — is tests/sweep/test_tune.py's shared sweep.)"""

import pytest

from plasticity_ray.spec import with_overrides
from plasticity_ray.storage import StorageError
from plasticity_ray.trial import run_training


def test_a_missing_bucket_is_one_line_naming_it(s3_server, demo_spec):
    spec = with_overrides(demo_spec, {"storage_path": "s3://no-such-bucket/runs"})
    with pytest.raises(StorageError) as err:
        run_training(spec, say=lambda line: None)
    assert str(err.value) == "storage_path: s3://no-such-bucket/runs: bucket s3://no-such-bucket does not exist"
