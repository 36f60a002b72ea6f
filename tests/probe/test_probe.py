"""One probe, run in-process on the demo data: the curve, its AUC, the baseline, bad checkpoints."""

import asyncio
import json
import math

import pytest
import torch
import yaml

from plasticity_ray.cli import main
from plasticity_ray.model.gpt import GPT
from plasticity_ray.data.schedule import probe_draw, validation_sample
from plasticity_ray.probe.probe import area_under_curve, probe_auc, run_probe
from plasticity_ray.probe.service import BACKFILL, LIVE, Slots
from plasticity_ray.spec import with_overrides
from plasticity_ray.train import checkpoint
from plasticity_ray.train.recipe import model_config
from plasticity_ray.train.recipe import make_optimizer, train_step


def test_auc_is_the_mean_height_of_the_curve():
    assert area_under_curve([0, 10], [3.0, 3.0]) == 3.0
    assert area_under_curve([0, 5, 10], [4.0, 2.0, 2.0]) == pytest.approx((15 + 10) / 10)
    with pytest.raises(ValueError):
        area_under_curve([0], [1.0])


def test_the_auc_leaves_out_step_0_unless_asked():
    # Zero-shot 6.0 at step 0, then 4.0, 3.0, 3.0 while learning (evaluations every 95 steps and the last).
    curve = [(0, 6.0), (95, 4.0), (190, 3.0), (250, 3.0)]
    during = (95 * (4.0 + 3.0) / 2 + 60 * 3.0) / (250 - 95)
    assert probe_auc(curve, includes_step0=False) == pytest.approx(during)
    assert probe_auc(curve, includes_step0=True) == pytest.approx((95 * 5.0 + 95 * 3.5 + 60 * 3.0) / 250)
    # A curve whose zero-shot point alone differs: only the step-0 AUC sees it.
    better_start = [(0, 4.5)] + curve[1:]
    assert probe_auc(better_start, includes_step0=False) == probe_auc(curve, includes_step0=False)
    assert probe_auc(better_start, includes_step0=True) < probe_auc(curve, includes_step0=True)
    assert probe_auc([(0, 6.0), (40, 4.5)], includes_step0=False) == 4.5  # one evaluation while learning


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
    assert result["auc"] == pytest.approx((losses[1] + losses[2]) / 2)  # steps 2 and 4 only, not step 0
    assert result["auc_from_step"] == 2
    with_step0 = run_probe(with_overrides(probe_spec, {"probe.auc_includes_step0": True}), demo_prepared,
                           trained_checkpoint)
    assert with_step0["curve"] == result["curve"]
    assert with_step0["auc"] == pytest.approx((losses[0] + 2 * losses[1] + losses[2]) / 4)
    assert (trained_checkpoint / "model.pt").read_bytes() == weights  # nothing written back
    again = run_probe(probe_spec, demo_prepared, trained_checkpoint)
    assert again["auc"] == result["auc"]  # seeded data order: the same probe twice is the same


def test_replicates_probe_the_same_weights_on_their_own_draws(probe_spec, demo_prepared, trained_checkpoint):
    single = run_probe(probe_spec, demo_prepared, trained_checkpoint)
    spec = with_overrides(probe_spec, {"probe.replicates": 3})
    result = run_probe(spec, demo_prepared, trained_checkpoint)
    aucs = result["replicate_aucs"]
    assert len(aucs) == 3 and len(set(aucs)) == 3  # three draws, three different AUCs
    assert aucs[0] == single["auc"]  # replicate 0 is the single probe: replicates start from the checkpoint
    assert result["auc"] == pytest.approx(sum(aucs) / 3)
    curves = result["replicate_curves"]
    assert [c[0] for c in curves] == [single["curve"][0]["val_loss"]] * 3  # the same weights at step 0
    assert [p["val_loss"] for p in result["curve"]] == pytest.approx([sum(c[i] for c in curves) / 3 for i in range(3)])
    draws = [probe_draw(spec, demo_prepared, 1, r) for r in range(3)]
    assert len({tuple(d.tolist()) for d in draws}) == 3
    assert (probe_draw(spec, demo_prepared, 1, 2) == draws[2]).all()  # seeded by (seed, probe, replicate)


def test_the_baseline_probes_a_fresh_model(probe_spec, demo_prepared):
    result = run_probe(probe_spec, demo_prepared, None)
    assert result["curve"][0]["val_loss"] == pytest.approx(math.log(320), rel=0.05)
    assert result["checkpoint"] is None


def test_each_probe_trains_on_its_own_random_subsample_unless_asked(probe_spec, demo_prepared):
    assert not probe_spec.probe.same_data_order  # the paper's protocol is the default
    pool = demo_prepared.unit("vi", "train").rows
    count = probe_spec.probe_steps * probe_spec.global_sequences
    draws = [probe_draw(probe_spec, demo_prepared, i) for i in range(4)]
    assert count < pool / 4
    for rows in draws:
        assert len(rows) == count and len(set(rows.tolist())) == count and rows.min() >= 0 and rows.max() < pool
    assert len({tuple(rows.tolist()) for rows in draws}) == 4  # a fresh sample per probe point
    spread = set(draws[0].tolist()) | set(draws[1].tolist())
    assert len(spread) > count  # not the same rows in another order
    assert (probe_draw(probe_spec, demo_prepared, 1) == draws[1]).all()  # a re-run probe: the same rows
    reseeded = with_overrides(probe_spec, {"seed": 1})
    assert not (probe_draw(reseeded, demo_prepared, 1) == draws[1]).all()
    same = with_overrides(probe_spec, {"probe.same_data_order": True})
    assert (probe_draw(same, demo_prepared, 0) == probe_draw(same, demo_prepared, 3)).all()


def test_evaluation_sets_are_seeded_random_samples_of_the_validation_pool(probe_spec, demo_prepared):
    unit = demo_prepared.unit("vi", "validation")
    everything = unit.read_all()
    sample = validation_sample(probe_spec, demo_prepared, "vi", 16)
    assert unit.rows > 16 and sample.shape == (16, unit.row_len)
    picked = [next(i for i, row in enumerate(everything) if (row == s).all()) for s in sample]
    assert picked != list(range(16))  # not the first rows of the pool
    assert (validation_sample(probe_spec, demo_prepared, "vi", 16) == sample).all()  # the same at every probe
    smaller = validation_sample(probe_spec, demo_prepared, "vi", 4)
    assert all(any((row == s).all() for s in sample) for row in smaller)  # nested: dormant rows ⊂ eval rows
    assert len(validation_sample(probe_spec, demo_prepared, "vi", 10 * unit.rows)) == unit.rows


def test_probes_and_diagnostics_run_on_the_device_they_are_given(probe_spec, demo_prepared, trained_checkpoint):
    from plasticity_ray.diagnostics.run import diagnose_checkpoint

    cpu = torch.device("cpu")
    assert run_probe(probe_spec, demo_prepared, trained_checkpoint, device=cpu)["device"] == "cpu"
    result = diagnose_checkpoint(probe_spec, demo_prepared, trained_checkpoint, trained_checkpoint, device=cpu)
    assert result["device"] == "cpu" and result["weight_magnitude"] > 0


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
                           "weight_distance", "device"}
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


def test_the_service_slots_serve_live_jobs_before_waiting_backfills_each_kind_in_arrival_order():
    async def scenario():
        slots, order, everyone_waits = Slots(1), [], asyncio.Event()

        async def job(name, priority):
            await slots.acquire(priority)
            order.append(name)
            if name == "backfill 1":
                await everyone_waits.wait()  # holds the slot while the others queue
            slots.release()

        first = asyncio.create_task(job("backfill 1", BACKFILL))
        rest = [asyncio.create_task(job(name, priority)) for name, priority in
                [("backfill 2", BACKFILL), ("backfill 3", BACKFILL), ("live 1", LIVE), ("live 2", LIVE)]]
        while len(slots.waiting) < len(rest):
            await asyncio.sleep(0)
        everyone_waits.set()
        await asyncio.gather(first, *rest)
        return order, slots.free

    order, free = asyncio.run(scenario())
    assert order == ["backfill 1", "live 1", "live 2", "backfill 2", "backfill 3"] and free == 1
