"""One probe, run in-process on the demo data: the curve, its AUC, the baseline, bad checkpoints."""

import json
import math

import pytest
import torch
import yaml

from plasticity_ray.cli import main
from plasticity_ray.model.gpt import GPT
from plasticity_ray.probe.probe import area_under_curve, probe_train_rows, run_probe
from plasticity_ray.spec import with_overrides
from plasticity_ray.train import checkpoint
from plasticity_ray.train.loop import model_config
from plasticity_ray.train.recipe import make_optimizer, train_step


def test_auc_is_the_mean_height_of_the_curve():
    assert area_under_curve([0, 10], [3.0, 3.0]) == 3.0
    assert area_under_curve([0, 5, 10], [4.0, 2.0, 2.0]) == pytest.approx((15 + 10) / 10)
    with pytest.raises(ValueError):
        area_under_curve([0], [1.0])


@pytest.fixture(scope="module")
def probe_spec(demo_spec, demo_prepared):
    return with_overrides(demo_spec, {
        "model.size": "L1-d64", "batch.global_tokens": 2048, "schedule.tokens_per_task": 8192,
        "probe.tokens": 8192, "probe.eval_every": 2, "probe.eval_sequences": 16,
    })


@pytest.fixture(scope="module")
def trained_checkpoint(probe_spec, tmp_path_factory):
    """A checkpoint after a few steps of English, written the way the trainer writes them."""
    spec = probe_spec
    cfg = model_config(spec)
    torch.manual_seed(0)
    model = GPT(cfg)
    optimizer = make_optimizer(model, spec, torch.device("cpu"))
    rows = torch.randint(0, 256, (16, spec.data.seq_len + 1))
    for _ in range(3):
        train_step(model, optimizer, [rows], spec.lr, None)
    state = {"model": checkpoint.model_signature(cfg), "position": {"task": 1, "step": 0},
             "size": spec.model.size, "lr": spec.lr, "seed": spec.seed}
    return checkpoint.save(tmp_path_factory.mktemp("run"), 3, model.state_dict(), optimizer.state_dict(), state, 2)


def test_a_probe_trains_a_copy_and_measures_its_auc(probe_spec, demo_prepared, trained_checkpoint):
    weights = (trained_checkpoint / "model.pt").read_bytes()
    result = run_probe(probe_spec, demo_prepared, trained_checkpoint)
    steps = [p["step"] for p in result["curve"]]
    losses = [p["val_loss"] for p in result["curve"]]
    assert steps == [0, 2, 4] and result["steps"] == 4
    assert losses[-1] < losses[0]  # it learns Vietnamese
    assert min(losses) <= result["auc"] <= max(losses)
    assert (trained_checkpoint / "model.pt").read_bytes() == weights  # nothing written back
    again = run_probe(probe_spec, demo_prepared, trained_checkpoint)
    assert again["auc"] == result["auc"]  # seeded data order: the same probe twice is the same


def test_the_baseline_probes_a_fresh_model(probe_spec, demo_prepared):
    result = run_probe(probe_spec, demo_prepared, None)
    assert result["curve"][0]["val_loss"] == pytest.approx(math.log(320), rel=0.05)
    assert result["checkpoint"] is None


def test_probe_data_is_the_same_at_every_probe_point_unless_asked(probe_spec, demo_prepared):
    same = [probe_train_rows(probe_spec, demo_prepared, i) for i in (0, 3)]
    assert (same[0] == same[1]).all()
    fresh = with_overrides(probe_spec, {"probe.same_data_order": False})
    assert not (probe_train_rows(fresh, demo_prepared, 0) == probe_train_rows(fresh, demo_prepared, 1)).all()


def _spec_file(spec, tmp_path):
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec.model_dump(mode="json")))
    return str(path)


def test_probe_and_diagnose_commands(probe_spec, trained_checkpoint, tmp_path, capsys):
    spec = with_overrides(probe_spec, {"model.size": "5M", "diagnostics.enabled": [
        "weight_magnitude", "dormant_units", "attention_entropy", "matrix_rank", "grama", "weight_distance"]})
    spec_file = _spec_file(spec, tmp_path)  # the checkpoint's own size wins over the spec's
    assert main(["probe", str(trained_checkpoint), "--spec", spec_file, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["steps"] == 4
    assert main(["diagnose", str(trained_checkpoint), "--spec", spec_file, "--previous", str(trained_checkpoint),
                 "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert set(result) == {"weight_magnitude", "dormant_units", "attention_entropy", "matrix_rank", "grama",
                           "weight_distance"}
    assert result["weight_distance"] == 0.0
    assert result["attention_entropy"]["h_max"] > 0


def test_a_probe_of_a_missing_or_corrupted_checkpoint_names_the_file(probe_spec, trained_checkpoint, tmp_path,
                                                                     capsys):
    import shutil

    spec_file = _spec_file(probe_spec, tmp_path)
    assert main(["probe", str(tmp_path / "nowhere"), "--spec", spec_file]) == 2
    assert f"{tmp_path / 'nowhere' / 'state.json'}: missing" in capsys.readouterr().err
    broken = tmp_path / "broken"
    shutil.copytree(trained_checkpoint, broken)
    (broken / "model.pt").write_bytes(b"not a checkpoint")
    assert main(["probe", str(broken), "--spec", spec_file]) == 2
    assert f"{broken / 'model.pt'}: unreadable" in capsys.readouterr().err
    assert (broken / "model.pt").exists()
