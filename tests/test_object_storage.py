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


def _closed_port() -> int:
    import socket

    with socket.socket() as free:
        free.bind(("127.0.0.1", 0))
        return free.getsockname()[1]  # nothing listens there once the socket is closed


def test_missing_credentials_are_one_line_saying_what_to_set(s3_server, demo_spec, monkeypatch, tmp_path):
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    spec = with_overrides(demo_spec, {"storage_path": "s3://runs/x"})
    with pytest.raises(StorageError) as err:
        run_training(spec, say=lambda line: None)
    assert str(err.value) == ("storage_path: s3://runs/x: no credentials for object storage (set AWS_ACCESS_KEY_ID "
                              "and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE naming a profile in ~/.aws/credentials)")


def test_a_wrong_endpoint_is_one_line(demo_spec, monkeypatch, capsys):
    from plasticity_ray.cli import main

    endpoint = f"http://127.0.0.1:{_closed_port()}"
    monkeypatch.setenv("AWS_ENDPOINT_URL", endpoint)
    with pytest.raises(StorageError) as err:
        run_training(with_overrides(demo_spec, {"storage_path": "s3://runs/x"}), say=lambda line: None)
    assert str(err.value) == (f"storage_path: s3://runs/x: cannot reach the object store at {endpoint} "
                              "(check AWS_ENDPOINT_URL or the network)")
    assert main(["results", "s3://runs/x"]) == 2
    assert capsys.readouterr().err == (f"error: s3://runs/x: cannot reach the object store at {endpoint} "
                                       "(check AWS_ENDPOINT_URL or the network)\n")


def test_results_of_a_gone_bucket_say_so(s3_server, capsys):
    from plasticity_ray.cli import main

    assert main(["results", "s3://gone-bucket/experiment"]) == 2
    assert capsys.readouterr().err == "error: s3://gone-bucket/experiment: bucket s3://gone-bucket does not exist\n"
    s3_server.create_bucket(Bucket="empty-bucket")
    assert main(["analyze", "s3://empty-bucket/experiment"]) == 2
    assert capsys.readouterr().err == "error: s3://empty-bucket/experiment: nothing stored here\n"


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
