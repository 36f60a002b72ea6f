"""Object storage that cannot be used stops a run at once, in one line naming the bucket. (A whole
sweep on object storage — prepare, Tune, a crash and resume, results and analyze in a bucket of the
tests' local S3 — is tests/sweep/test_tune.py's shared sweep.)"""

import json

import pytest

from plasticity_ray.spec import with_overrides
from plasticity_ray.storage import StorageError
from plasticity_ray.trial import run_training


def test_a_missing_bucket_is_one_line_naming_it(s3_server, demo_spec):
    spec = with_overrides(demo_spec, {"storage_path": "s3://no-such-bucket/runs"})
    with pytest.raises(StorageError) as err:
        run_training(spec, say=lambda line: None)
    assert str(err.value) == "storage_path: s3://no-such-bucket/runs: bucket s3://no-such-bucket does not exist"


def test_rows_read_while_another_process_appends_are_whole(s3_server):
    """On S3 an append replaces the whole object; a reader that listed the old object and reads
    after the replacement gets s3fs's FileExpired (EBUSY), which stopped a sweep's trial once. Rows
    are fetched in one request instead: 300 reads during 300 appends all succeed."""
    import threading

    from plasticity_ray.rundir import read_jsonl
    from plasticity_ray.storage import append_text, as_path

    s3_server.create_bucket(Bucket="appends")
    path = as_path("s3://appends/run/metrics.jsonl")
    append_text(path, json.dumps({"task": 0, "step": 0}) + "\n")
    done = threading.Event()

    def writer():
        for step in range(1, 301):
            append_text(path, json.dumps({"task": 0, "step": step}) + "\n")
        done.set()

    thread = threading.Thread(target=writer)
    thread.start()
    counts = []
    while not done.is_set() or len(counts) < 300:
        counts.append(len(read_jsonl(path)))
    thread.join()
    assert counts == sorted(counts) and counts[-1] == 301  # every read whole, none lost rows
