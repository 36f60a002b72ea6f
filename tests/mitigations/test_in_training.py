"""Mitigations inside real training: 2 CPU workers (DDP over gloo) on a local Ray, with a crash and
restart in the middle. Two groups of mitigations, each trained straight and crashed; the runs are
shared by the tests."""

import json

import pytest
import torch

from plasticity_ray.spec import with_overrides
from plasticity_ray.train import checkpoint
from plasticity_ray.trial import run_dir, run_training
from plasticity_ray.rundir import COMPLETE_FILE, read_jsonl as read_rows

pytestmark = pytest.mark.slow

MITIGATIONS = [
    {"name": "weight_clipping", "kappa": 3.0},
    {"name": "shrink_perturb", "shrink": 0.8, "noise": 0.01},
    {"name": "redo", "every": 3, "threshold": 0.5},  # a generous threshold: some units are recycled
    {"name": "continual_backprop", "replacement_rate": 0.01, "maturity_threshold": 4},  # state in checkpoints
]
# The penalties (gradient hooks; spectral regularization's vectors in checkpoints, C-CHAIN's previous
# weights and batch in hooks.pt, its λ rule past its warm-up), the projection and the resets (an
# embedding reset every 3 updates, between checkpoints of every 4; the reset control at every task
# start, before and after the crash), on the Fourier-feature model with normalized activations.
PENALTIES_AND_RESETS = [
    {"name": "l2_init", "strength": 0.01},
    {"name": "spectral_regularization", "strength": 0.01},
    {"name": "c_chain", "warmup_steps": 3, "window": 4},
    {"name": "normalize_and_project"},
    {"name": "active_forgetting", "every": 3},
    {"name": "reset_control"},
]
GROUPS = {"classic": {"mitigations": MITIGATIONS},
          "penalties_and_resets": {"mitigations": PENALTIES_AND_RESETS, "model.activation": "fourier",
                                   "model.normalize_activations": True}}


def _spec(demo_spec, storage, **overrides):
    base = {
        "storage_path": str(storage), "model.size": "L1-d64", "data.languages": ["en", "zh", "es", "ru"],
        "schedule.cycles": 1, "schedule.tokens_per_task": 16384,
        "batch.global_tokens": 2048, "resources.workers": 2, "train.log_every": 2, "train.checkpoint_every": 4,
        "probe.enabled": False, "mitigations": MITIGATIONS,
    }
    return with_overrides(demo_spec, {**base, **overrides})


@pytest.fixture(scope="module")
def trained(demo_prepared, demo_spec, tmp_path_factory):
    """Per group: the straight run and the crashed one, as (spec, summary) pairs."""
    out = {}
    for group, overrides in GROUPS.items():
        straight = _spec(demo_spec, tmp_path_factory.mktemp("straight"), **overrides)
        crashed = _spec(demo_spec, tmp_path_factory.mktemp("crashed"), **overrides, **{"debug.fail_at_step": 21})
        out[group] = [(spec, run_training(spec, say=lambda line: None)) for spec in (straight, crashed)]
    return out


@pytest.fixture
def runs(trained):
    return trained["classic"]


@pytest.fixture(params=list(GROUPS))
def each_group(trained, request):
    return trained[request.param]


def _final(spec):
    return torch.load(checkpoint.checkpoints(run_dir(spec))[-1] / "model.pt", weights_only=True)


def test_mitigations_acted(runs):
    (spec, summary), _ = runs
    assert summary.complete
    rows = read_rows(run_dir(spec) / "metrics.jsonl")
    assert rows[-1]["redo_recycled"] > 0  # ReDo recycled units during the run
    assert rows[-1]["cbp_replaced"] > 0
    weights = _final(spec)
    fc = weights["blocks.0.mlp.fc.weight"]
    # Clipping bounds every normally initialised weight; shrink-perturb ran last (end of the last task).
    assert fc.abs().max() <= 3 * 0.02 * 0.8 + 0.01 * 0.02 * 8


def test_the_penalties_projection_and_resets_acted_on_the_fourier_model(trained):
    from plasticity_ray.model.gpt import GPT
    from plasticity_ray.train.recipe import model_config

    (spec, summary), _ = trained["penalties_and_resets"]
    assert summary.complete
    final = _final(spec)
    assert final["blocks.0.mlp.fc.weight"].shape == (128, 64)  # Fourier features: 2d pre-activations
    last = read_rows(run_dir(spec) / "metrics.jsonl")[-1]
    assert last["embeddings_reset"] == spec.tasks * spec.steps_per_task // 3
    assert last["model_resets"] == spec.tasks - 1
    torch.manual_seed(spec.seed)  # the model as the run initialised it
    initial = GPT(model_config(spec)).state_dict()
    for name in ("weight", "bias"):  # normalized activations; the MLP's up projection back at its initial norm
        assert f"blocks.0.mlp.ln_pre.{name}" in final and f"blocks.0.attn.ln_q.{name}" in final
    norm = lambda w: torch.cat([w["blocks.0.mlp.fc.weight"].flatten(), w["blocks.0.mlp.fc.bias"]]).norm()  # noqa: E731
    assert torch.allclose(norm(final), norm(initial), rtol=1e-5)
    tensors = checkpoint.load_hook_tensors(checkpoint.checkpoints(run_dir(spec))[-1], torch.device("cpu"))
    (churn,) = tensors  # C-CHAIN's θ₋ (the weights before the last update) and the last batch
    assert churn["reference"].shape == (spec.global_sequences, spec.data.seq_len + 1)  # both ranks' rows
    assert not torch.equal(churn["previous.wpe.weight"], final["wpe.weight"])


def test_ddp_replicas_stay_identical_through_resets(each_group):
    for spec, _ in each_group:
        digests = json.loads((run_dir(spec) / COMPLETE_FILE).read_text())["replica_digests"]
        assert len(digests) == 2 and digests[0] == digests[1]


def test_a_crash_and_resume_ends_bitwise_equal_to_the_uninterrupted_run(each_group):
    (straight, _), (crashed, summary) = each_group
    assert summary.complete and (run_dir(crashed) / ".debug_failed_at_21").exists()
    a, b = _final(straight), _final(crashed)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    rows_a = read_rows(run_dir(straight) / "metrics.jsonl")
    rows_b = read_rows(run_dir(crashed) / "metrics.jsonl")
    assert [(r["global_step"], r["loss"]) for r in rows_a] == [(r["global_step"], r["loss"]) for r in rows_b]
    assert rows_a[-1] == {**rows_b[-1], "time": rows_a[-1]["time"], "tokens_per_s": rows_a[-1]["tokens_per_s"]}


def test_alarm_signals_are_measured_every_task_and_repeat_exactly_after_a_resume(runs):
    from plasticity_ray.rundir import SIGNALS_FILE

    (straight, _), (crashed, _) = runs
    a = read_rows(run_dir(straight) / SIGNALS_FILE, key=("task",))
    b = read_rows(run_dir(crashed) / SIGNALS_FILE, key=("task",))
    assert [r["task"] for r in a] == list(range(straight.tasks))
    assert all(0.0 <= r["near_zero_fraction"] <= 1.0 and r["grad_norm_mean"] > 0 for r in a)
    assert a == b
