"""The training recipe and checkpoints, in plain PyTorch (no Ray)."""

import math

import pytest
import torch

from plasticity_ray.model.gpt import GPT, GPTConfig
from plasticity_ray.spec import ExperimentSpec
from plasticity_ray.train import checkpoint
from plasticity_ray.train.recipe import evaluate, lr_at, make_optimizer, train_step

CFG = GPTConfig(layers=2, hidden=64, vocab_size=50, context=16)
SPEC = ExperimentSpec(name="t", optimizer={"lr": 1e-2})


def _model(seed=0):
    torch.manual_seed(seed)
    return GPT(CFG)


def _rows(n=8, seed=1):
    return torch.randint(0, CFG.vocab_size, (n, CFG.context + 1), generator=torch.Generator().manual_seed(seed))


def test_warmup_is_linear_then_constant():
    assert [lr_at(s, 1.0, 4) for s in range(6)] == [0.25, 0.5, 0.75, 1.0, 1.0, 1.0]
    assert lr_at(0, 3e-3, 0) == 3e-3
    # The paper: 5% of 9,537 steps.
    spec = ExperimentSpec(name="t")
    assert spec.warmup_steps == math.ceil(0.05 * 9537) == 477


def test_weight_decay_on_matrices_and_embeddings_only():
    model = _model()
    decayed, plain = make_optimizer(model, SPEC, torch.device("cpu")).param_groups
    assert decayed["weight_decay"] == 0.1 and plain["weight_decay"] == 0.0
    names = {id(p): n for n, p in model.named_parameters()}
    assert {names[id(p)] for p in decayed["params"]} >= {"wte.weight", "wpe.weight", "blocks.0.attn.qkv.weight"}
    assert all(names[id(p)].endswith(("bias", "ln_f.weight")) or ".ln_" in names[id(p)] for p in plain["params"])
    assert decayed["betas"] == (0.9, 0.95)


def test_accumulated_micro_batches_equal_one_batch():
    rows = _rows(8)
    results = []
    for micro in (8, 2):
        model = _model()
        opt = torch.optim.SGD(model.parameters(), lr=1.0)  # the update is the gradient itself
        loss, norm = train_step(model, opt, list(rows.split(micro)), lr=1e-2, grad_clip=None)
        results.append((loss.item(), norm.item(), [p.detach().clone() for p in model.parameters()]))
    assert results[0][0] == pytest.approx(results[1][0], rel=1e-5)
    assert results[0][1] == pytest.approx(results[1][1], rel=1e-4)
    for a, b in zip(results[0][2], results[1][2]):
        assert torch.allclose(a, b, atol=1e-6)


def test_gradient_clipping_reports_the_unclipped_norm():
    model = _model()
    opt = make_optimizer(model, SPEC, torch.device("cpu"))
    _, norm = train_step(model, opt, [_rows()], lr=0.0, grad_clip=1e-6)
    assert norm.item() > 1e-3


def test_evaluate_does_not_train():
    model = _model()
    before = [p.clone() for p in model.parameters()]
    loss = evaluate(model, _rows(6), micro_batch=4)
    assert loss == pytest.approx(math.log(CFG.vocab_size), rel=0.1)
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))


def _save(tmp_path, model, opt, step=10, keep=2):
    state = {"model": checkpoint.model_signature(CFG), "position": {"task": 1, "step": 2}}
    return checkpoint.save(tmp_path, step, model.state_dict(), opt.state_dict(), state, keep=keep)


def test_checkpoint_round_trip_restores_model_and_optimizer(tmp_path):
    model = _model()
    opt = make_optimizer(model, SPEC, torch.device("cpu"))
    train_step(model, opt, [_rows()], lr=1e-2, grad_clip=None)
    path = _save(tmp_path, model, opt)
    fresh = _model(seed=5)
    fresh_opt = make_optimizer(fresh, SPEC, torch.device("cpu"))
    state = checkpoint.load(path, fresh, CFG, fresh_opt)
    assert state["position"] == {"task": 1, "step": 2}
    for a, b in zip(model.parameters(), fresh.parameters()):
        assert torch.equal(a, b)
    assert fresh_opt.state_dict()["state"][0]["step"] == opt.state_dict()["state"][0]["step"]


def test_only_the_newest_checkpoints_are_kept(tmp_path):
    model = _model()
    opt = make_optimizer(model, SPEC, torch.device("cpu"))
    for step in (5, 10, 15, 20):
        _save(tmp_path, model, opt, step=step, keep=2)
    assert [p.name for p in checkpoint.checkpoints(tmp_path)] == ["step-000000015", "step-000000020"]


def test_a_checkpoint_of_another_size_is_refused_by_name(tmp_path):
    model = _model()
    path = _save(tmp_path, model, make_optimizer(model, SPEC, torch.device("cpu")))
    other = GPTConfig(layers=3, hidden=64, vocab_size=50, context=16)
    torch.manual_seed(0)
    with pytest.raises(checkpoint.CheckpointError, match=rf"{path / 'state.json'}: checkpoint of model .*layers.: 2"):
        checkpoint.load(path, GPT(other), other)


def test_a_truncated_checkpoint_is_refused_by_name_and_kept(tmp_path):
    model = _model()
    path = _save(tmp_path, model, make_optimizer(model, SPEC, torch.device("cpu")))
    weights = path / "model.pt"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    with pytest.raises(checkpoint.CheckpointError, match=rf"{weights}: unreadable, truncated or corrupted"):
        checkpoint.load(path, _model(), CFG)
    assert weights.exists() and checkpoint.checkpoints(tmp_path) == [path]


def test_hook_tensors_round_trip_and_a_truncated_hooks_file_is_refused_by_name(tmp_path):
    model = _model()
    opt = make_optimizer(model, SPEC, torch.device("cpu"))
    state = {"model": checkpoint.model_signature(CFG), "position": {"task": 1, "step": 2}}
    tensors = [{"reference": torch.arange(6).view(2, 3)}, {}]
    path = checkpoint.save(tmp_path, 10, model.state_dict(), opt.state_dict(), state, keep=2, hook_tensors=tensors)
    loaded = checkpoint.load_hook_tensors(path, torch.device("cpu"))
    assert torch.equal(loaded[0]["reference"], tensors[0]["reference"]) and loaded[1] == {}
    hooks = path / "hooks.pt"
    hooks.write_bytes(hooks.read_bytes()[:20])
    with pytest.raises(checkpoint.CheckpointError, match=rf"{hooks}: unreadable, truncated or corrupted"):
        checkpoint.check(path, CFG)


@pytest.mark.slow
def test_compiled_blocks_train_like_eager_ones():
    from plasticity_ray.train.recipe import compile_blocks

    compiled, eager = _model(), _model()
    compile_blocks(compiled)
    rows = _rows(4)
    losses = []
    for model in (compiled, eager):
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        losses.append(train_step(model, opt, [rows], lr=0.1, grad_clip=None)[0].item())
    assert losses[0] == pytest.approx(losses[1], rel=1e-5)
    assert list(compiled.state_dict()) == list(eager.state_dict())  # checkpoints keep plain names
    for a, b in zip(compiled.parameters(), eager.parameters()):
        assert torch.allclose(a, b, atol=1e-6)
