"""Object storage that cannot be used stops a run at once, in one line naming the bucket. (A whole
sweep on object storage — prepare, Tune, a crash and resume, results and analyze in a bucket of the
tests' local S3 — is tests/sweep/test_tune.py's shared sweep.)"""

import contextlib
import json
import threading
import time

import pytest
import yaml

from plasticity_ray.rundir import COMPLETE_FILE, METRICS_FILE, read_jsonl
from plasticity_ray.spec import with_overrides
from plasticity_ray.storage import StorageError, as_path
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
    from plasticity_ray.storage import append_text

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


def test_a_write_waits_out_a_short_outage_and_gives_up_on_a_long_one_naming_the_bucket(s3_endpoint, s3_server):
    from plasticity_ray.storage import set_patience, write_bytes_atomic

    s3_server.create_bucket(Bucket="patience")
    path = as_path("s3://patience/row.json")
    back = threading.Timer(3, s3_endpoint.start)
    try:
        set_patience(60)
        s3_endpoint.stop()
        back.start()
        write_bytes_atomic(path, b"{}")  # retried until the server is back
        back.join()
        assert s3_server.get_object(Bucket="patience", Key="row.json")["Body"].read() == b"{}"
        set_patience(1)
        s3_endpoint.stop()
        with pytest.raises(StorageError, match=r"^s3://patience: not answering for \d+ s \(\w+; storage_retry_s: 1\)$"):
            write_bytes_atomic(path, b"{}")
    finally:
        set_patience(120)
        back.join()
        if not s3_endpoint.running:
            s3_endpoint.start()


def _outage_spec(demo_spec, storage, name):
    """The demo's model (L2-d128: slow enough to stop mid-run) for 2 cycles of 3 languages × 4 steps."""
    return with_overrides(demo_spec, {
        "name": name, "storage_path": storage, "model.size": "L2-d128", "data.languages": ["en", "de", "fr"],
        "data.train_tokens": 100_000, "schedule.cycles": 2, "schedule.tokens_per_task": 32768,
        "batch.global_tokens": 8192, "train.log_every": 2, "train.report_every": 4, "train.checkpoint_every": 4,
        "train.eval_every": 0, "train.max_failures": 0, "probe.tokens": 16384, "probe.eval_every": 1,
        "probe.eval_sequences": 8, "probe.extended": None, "diagnostics.enabled": ["weight_magnitude"],
        "storage_retry_s": 3, "sweep.grid": {},
    })


@contextlib.contextmanager
def _server_stopped_after_rows(s3_endpoint, metrics, rows=5):
    """The S3 server stopped once the run has logged `rows` rows, and started again on leaving."""
    stopped = threading.Event()

    def stop_after_rows():
        while not stopped.is_set():
            if len(read_jsonl(metrics)) >= rows:
                s3_endpoint.stop()
                stopped.set()
            time.sleep(0.2)

    watcher = threading.Thread(target=stop_after_rows, daemon=True)
    watcher.start()
    try:
        yield
    finally:
        stopped.set()
        watcher.join()
        if not s3_endpoint.running:
            s3_endpoint.start()


def _spec_file(spec, folder):
    path = folder / f"{spec.name}.yaml"
    path.write_text(yaml.safe_dump(spec.model_dump(mode="json")))
    return path


@pytest.mark.slow
def test_storage_that_stops_answering_stops_the_run_in_one_line_and_it_resumes_bit_for_bit(
        s3_endpoint, s3_server, demo_prepared, demo_spec, tmp_path, capsys):
    """The S3 server stops mid-run and stays away past `storage_retry_s`: `train` ends with one
    line naming the bucket and what to do. With the server back, the same command continues from
    the last checkpoint that reached the bucket (an unfinished one, without its state.json, is
    never taken for one) and the run ends as an uninterrupted run does, bit for bit."""
    from plasticity_ray.cli import main
    from plasticity_ray.trial import run_dir

    s3_server.create_bucket(Bucket="outage")
    spec = _outage_spec(demo_spec, "s3://outage/runs", "outage")
    path, run = _spec_file(spec, tmp_path), as_path(str(run_dir(spec)))
    with _server_stopped_after_rows(s3_endpoint, run / METRICS_FILE):
        assert main(["train", str(path)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and "s3://outage" in err[0]
    assert err[0].endswith(f"run `plasticity-ray train {path}` again once it answers: the run continues from its "
                           "last checkpoint there")
    before = read_jsonl(run / METRICS_FILE)
    assert 5 <= len(before) < spec.tasks * spec.steps_per_task // spec.train.log_every
    # What an outage in the middle of a checkpoint leaves: its weights, no state.json.
    s3_server.put_object(Bucket="outage", Key=f"{run.path.split('/', 1)[1]}/checkpoints/step-000000099/model.pt",
                         Body=b"half")

    assert main(["train", str(path)]) == 0
    after = read_jsonl(run / METRICS_FILE)
    assert (run / COMPLETE_FILE).exists()
    keep = ("global_step", "loss", "batch_digest")
    trained = lambda rows: [{k: r[k] for k in keep} for r in rows]
    # Nothing written before the outage was lost (rows after the last checkpoint were trained again,
    # to the same losses on the same batches).
    assert trained(after)[:len(before)] == trained(before)
    reference = run_training(_outage_spec(demo_spec, str(tmp_path / "local"), "outage"), say=lambda line: None)
    assert trained(after) == trained(read_jsonl(reference.run_dir / METRICS_FILE))
    complete = json.loads((run / COMPLETE_FILE).read_text())
    assert complete["replica_digests"] == json.loads((reference.run_dir / COMPLETE_FILE).read_text())["replica_digests"]
    probes = sorted(p.name for p in (run / "probes").iterdir())
    assert probes == ["baseline.json", "task-00002.json", "task-00005.json"]  # every probe measured


@pytest.mark.slow
def test_a_sweep_whose_storage_stays_away_ends_in_one_line_and_resumes(s3_endpoint, s3_server, demo_prepared,
                                                                       demo_spec, tmp_path, capsys):
    """The same outage under `sweep`: one line naming the bucket with the `--resume` command, no
    traceback; `--resume` once the server is back ends with the trial complete."""
    from plasticity_ray.cli import main
    from plasticity_ray.trial import run_dir

    s3_server.create_bucket(Bucket="outage")  # the prepared data of the test above is there (us-east-1: no error)
    spec = with_overrides(_outage_spec(demo_spec, "s3://outage/runs", "sweep-outage"), {"sweep.max_failures": 0})
    path, run = _spec_file(spec, tmp_path), as_path(str(run_dir(spec)))
    with _server_stopped_after_rows(s3_endpoint, run / METRICS_FILE):
        assert main(["sweep", str(path)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and "s3://outage" in err[0], err
    assert err[0].endswith(f"continue with `plasticity-ray sweep {path} --resume`")
    assert main(["sweep", str(path), "--resume"]) == 0
    assert (run / COMPLETE_FILE).exists()
    steps = [r["global_step"] for r in read_jsonl(run / METRICS_FILE)]
    assert steps == list(range(2, spec.tasks * spec.steps_per_task + 1, 2))
