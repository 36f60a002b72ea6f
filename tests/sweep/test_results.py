"""`plasticity-ray results` on an experiment directory written the way runs write it."""

import csv
import json

import pytest

from plasticity_ray.cli import main


@pytest.fixture
def experiment(tmp_path, write_run):
    root = tmp_path / "e"
    write_run(root, "5M_run", "5M", "paper", [3.0, 2.9, 3.1], baseline=3.5)
    write_run(root, "12M_run", "12M", 2e-3, [2.8], baseline=3.2, complete=False, failed_task=15)
    return root


def test_json_has_a_trial_per_run_and_a_row_per_probe(experiment, capsys):
    assert main(["results", str(experiment), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    trials = {t["size"]: t for t in result["trials"]}
    assert trials["5M"]["status"] == "complete" and trials["12M"]["status"] == "incomplete"
    assert trials["5M"]["lr"] == pytest.approx(3e-3)  # "paper" resolved for the size
    assert trials["5M"]["tokens_seen"] == 8000 and trials["5M"]["last_train_loss"] == pytest.approx(4.3)
    assert trials["5M"]["probes_done"] == 3 and trials["12M"]["probes_done"] == 1  # the failed probe is not counted
    assert trials["5M"]["auc_change_percent"] == pytest.approx(100 * (3.1 / 3.0 - 1))
    probes = [p for p in result["probes"] if p["size"] == "5M"]
    assert [p["task_index"] for p in probes] == [7, 15, 23]
    assert probes[1]["normalized_auc"] == pytest.approx(2.9 / 3.5)
    assert probes[1]["auc_change_percent"] == pytest.approx(100 * (2.9 / 3.0 - 1))
    assert probes[2]["weight_magnitude"] == pytest.approx(0.3) and probes[2]["lazy_heads_percent"] == 10.0
    assert {"trial_id", "size", "cycle", "task_index", "auc"} <= set(probes[0])


def test_tables_are_written_as_csv_next_to_the_runs(experiment, capsys):
    assert main(["results", str(experiment)]) == 0
    out = capsys.readouterr().out
    assert "TensorBoard: tensorboard --logdir" in out
    with open(experiment / "probes.csv") as f:
        assert len(list(csv.DictReader(f))) == 4
    with open(experiment / "trials.csv") as f:
        assert {row["size"] for row in csv.DictReader(f)} == {"5M", "12M"}


def test_a_directory_without_runs_is_a_clear_error(tmp_path, capsys):
    assert main(["results", str(tmp_path)]) == 2
    assert "no runs here" in capsys.readouterr().err
