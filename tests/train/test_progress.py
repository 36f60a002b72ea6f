"""The driver's progress lines follow metrics.jsonl, also when a resumed run rewrites it."""

import json

from plasticity_ray.spec import ExperimentSpec
from plasticity_ray.trial import _ProgressTail


def _row(step):
    return {"task": 0, "cycle": 0, "language": "en", "step": step, "global_step": step, "loss": 3.0, "lr": 1e-3,
            "tokens_per_s": 1000.0, "tokens_seen": step * 100, "time": float(step)}


def test_the_progress_tail_survives_a_rewritten_metrics_file(tmp_path):
    path = tmp_path / "metrics.jsonl"
    said = []
    tail = _ProgressTail(ExperimentSpec(name="x"), path, said.append)
    path.write_text("".join(json.dumps(_row(s)) + "\n" for s in (1, 2, 3, 4, 5)))
    tail.poll()
    assert [line.split("step ")[1].split("/")[0] for line in said] == ["2", "3", "4", "5"]  # the first row starts the clock
    # A resume from the checkpoint at step 2 drops rows 3-5 (a shorter file), then logs 3 and 6 again.
    path.write_text("".join(json.dumps(_row(s)) + "\n" for s in (1, 2)))
    tail.poll()
    with open(path, "a") as f:
        f.write("".join(json.dumps(_row(s)) + "\n" for s in (3, 4, 5, 6)))
    tail.poll()
    assert [line.split("step ")[1].split("/")[0] for line in said] == ["2", "3", "4", "5", "6"]


def test_the_progress_lines_pause_through_a_storage_outage_and_come_back(tmp_path):
    """The metrics file unreadable for a while (here: a directory in its place) is said once; the
    lines go on once it is back (an S3 outage killed the progress thread once)."""
    path = tmp_path / "metrics.jsonl"
    said = []
    tail = _ProgressTail(ExperimentSpec(name="x"), path, said.append)
    path.mkdir()
    tail._poll_through_outages()
    tail._poll_through_outages()
    assert said == [f"progress: cannot read {path} (IsADirectoryError); waiting for storage"]
    path.rmdir()
    path.write_text("".join(json.dumps(_row(s)) + "\n" for s in (1, 2, 3)))
    tail._poll_through_outages()
    assert [line.split("step ")[1].split("/")[0] for line in said[1:]] == ["2", "3"]
