"""The penalties and resets of the current plasticity literature, each against its paper's formula on
a tiny real GPT: the expected gradients come from autograd on the penalty as the paper writes it,
not from the code under test."""

import json

import pytest
import torch

from plasticity_ray.mitigations import hooks_for
from plasticity_ray.model.gpt import GPT, GPTConfig
from plasticity_ray.spec import load_spec, with_overrides
from plasticity_ray.train.hooks import Gradients, StepEnd, TaskStart
from plasticity_ray.spec.protocol import task_info


def _model():
    torch.manual_seed(0)
    return GPT(GPTConfig(layers=2, hidden=64, vocab_size=320, context=32))


def _hooks(*mitigations, **model):
    overrides = {"mitigations": list(mitigations), "seed": 3, **{f"model.{k}": v for k, v in model.items()}}
    spec = with_overrides(load_spec("experiments/demo.yaml"), overrides)
    return spec, hooks_for(spec)


def _trained(model, steps=3):
    """A few real AdamW steps away from the initialisation; returns the optimizer."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    rows = torch.randint(0, 320, (4, 33), generator=torch.Generator().manual_seed(1))
    for _ in range(steps):
        model(rows[:, :-1], targets=rows[:, 1:]).backward()
        optimizer.step()
        optimizer.zero_grad()
    return optimizer


def _zero_grads(model):
    for p in model.parameters():
        p.grad = torch.zeros_like(p)


def test_l2_init_adds_the_gradient_of_lambda_times_the_squared_distance_to_the_initial_weights():
    _, hooks = _hooks({"name": "l2_init", "strength": 0.05})
    (penalty,) = hooks.gradients
    model = _model()
    initial = [p.detach().clone() for p in model.parameters()]
    penalty.attach(model)
    _trained(model)
    _zero_grads(model)
    penalty(Gradients(model, None, 0, 0))
    expected = torch.autograd.grad(0.05 * sum(((p - p0) ** 2).sum() for p, p0 in zip(model.parameters(), initial)),
                                   list(model.parameters()))
    assert all(torch.allclose(p.grad, e, rtol=1e-5, atol=1e-9) for p, e in zip(model.parameters(), expected))
    assert any(p.grad.abs().sum() > 0 for p in model.parameters())


@pytest.mark.parametrize("exponent", [1, 2])
def test_spectral_regularization_adds_the_gradient_of_its_penalty_on_the_largest_singular_values(exponent):
    _, hooks = _hooks({"name": "spectral_regularization", "strength": 0.1, "exponent": exponent,
                       "power_iterations": 200})  # converged: σ, u, v as the SVD's
    (penalty,) = hooks.gradients
    model = _model()
    names = [n for n, p in model.named_parameters() if n.startswith("blocks.") and p.dim() == 2]
    initial = {n: torch.linalg.svdvals(p.detach())[0] for n, p in model.named_parameters() if n in names}
    penalty.attach(model)
    _trained(model)
    with torch.no_grad():  # stretch one matrix well away from its initial spectrum
        model.blocks[1].mlp.fc.weight.mul_(3.0)
    _zero_grads(model)
    penalty(Gradients(model, None, 0, 0))
    params = dict(model.named_parameters())
    loss = 0.1 * sum((torch.linalg.svdvals(params[n])[0] ** exponent - initial[n] ** exponent) ** 2 for n in names)
    expected = dict(zip(names, torch.autograd.grad(loss, [params[n] for n in names])))
    for name, param in model.named_parameters():
        if name in names:
            assert torch.allclose(param.grad, expected[name], rtol=1e-3, atol=1e-6), name
        else:  # embeddings, biases and LayerNorm gains are left alone
            assert param.grad.abs().sum() == 0, name
    assert expected["blocks.1.mlp.fc.weight"].abs().sum() > 0


def test_spectral_regularization_carries_its_singular_vectors_through_a_checkpoint():
    from plasticity_ray.mitigations.spectral import SpectralRegularizationHook

    _, hooks = _hooks({"name": "spectral_regularization"})
    (penalty,) = hooks.gradients
    model = _model()
    penalty.attach(model)
    _trained(model)
    _zero_grads(model)
    penalty(Gradients(model, None, 0, 0))
    restored = SpectralRegularizationHook(penalty.spec, seed=3)
    restored.attach(_model())
    restored.load_state_dict(penalty.state_dict(), torch.device("cpu"))
    assert all(torch.equal(restored.u[n], penalty.u[n]) and torch.equal(restored.v[n], penalty.v[n]) for n in penalty.u)
    assert restored.initial == penalty.initial


def test_active_forgetting_redraws_the_token_embeddings_and_their_optimizer_state_every_k_updates():
    _, hooks = _hooks({"name": "active_forgetting", "every": 5})
    (on_step,) = hooks.step_end
    model = _model()
    optimizer = _trained(model)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    assert on_step(StepEnd(model, optimizer, None, 3, 3, None)) is None  # the 4th update: not yet
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert on_step(StepEnd(model, optimizer, None, 4, 4, None)) == {"embeddings_reset": 1}  # the 5th
    wte = model.wte.weight
    assert not torch.equal(wte, before["wte.weight"]) and wte.std().item() == pytest.approx(0.02, rel=0.05)
    assert wte.mean().abs().item() < 0.002
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items() if k != "wte.weight")
    assert wte not in optimizer.state and model.wpe.weight in optimizer.state
    assert torch.equal(model.logits(torch.eye(64)[:1]), wte[:, :1].t())  # the tied head is the new embedding


def test_the_reset_control_reinitialises_everything_at_every_task_start_but_the_first():
    spec, hooks = _hooks({"name": "reset_control"})
    (on_start,) = hooks.task_start
    model = _model()
    optimizer = _trained(model)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    assert on_start(TaskStart(model, optimizer, task_info(spec, 0), 0)) is None
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert on_start(TaskStart(model, optimizer, task_info(spec, 1), 10)) == {"model_resets": 1}
    assert len(optimizer.state) == 0
    fresh = _model()  # how GPT-2 initialises each parameter, independently of the hook
    for name, param in model.named_parameters():
        init = dict(fresh.named_parameters())[name]
        assert not torch.equal(param, before[name]) or init.std() == 0, name
        if init.std() == 0:  # constants: zero biases, unit LayerNorm gains
            assert torch.equal(param, init), name
        else:
            assert param.std().item() == pytest.approx(init.std().item(), rel=0.15), name
    again = _model()
    (on_start_again,) = hooks_for(spec).task_start
    on_start_again(TaskStart(again, torch.optim.AdamW(again.parameters()), task_info(spec, 1), 10))
    assert all(torch.equal(a, b) for a, b in zip(model.parameters(), again.parameters()))  # seeded by seed and task


def test_fourier_features_are_sine_and_cosine_pairs_at_the_width_gelu_has_and_counted_as_sizes_says():
    from plasticity_ray.model.sizes import resolve_size

    torch.manual_seed(0)
    model = GPT(GPTConfig(layers=2, hidden=64, vocab_size=320, context=32, activation="fourier"))
    mlp = model.blocks[0].mlp
    assert (mlp.fc.out_features, mlp.proj.in_features) == (128, 256)
    z = torch.randn(2, 3, 64)
    pre = z @ mlp.fc.weight.t() + mlp.fc.bias
    expected = torch.cat([pre.sin(), pre.cos()], -1) @ mlp.proj.weight.t() + mlp.proj.bias
    assert torch.allclose(mlp(z), expected, atol=1e-6)
    non_embedding = sum(p.numel() for p in model.non_embedding_parameters())
    assert non_embedding == resolve_size("L2-d64").fourier_non_embedding_params
    gelu = GPT(GPTConfig(layers=2, hidden=64, vocab_size=320, context=32))
    assert sum(p.numel() for p in gelu.non_embedding_parameters()) == resolve_size("L2-d64").non_embedding_params
    rows = torch.randint(0, 320, (2, 33))
    model(rows[:, :-1], targets=rows[:, 1:]).backward()
    assert mlp.fc.weight.grad.abs().sum() > 0


def test_fourier_features_refuse_the_mitigations_that_reinitialise_gelu_units():
    from plasticity_ray.spec import SpecError

    with pytest.raises(SpecError, match="mitigations: redo re-initialise GeLU units"):
        with_overrides(load_spec("experiments/demo.yaml"), {"model.activation": "fourier", "mitigations": [{"name": "redo"}]})


def _normalized_model():
    torch.manual_seed(0)
    return GPT(GPTConfig(layers=2, hidden=64, vocab_size=320, context=32, normalize_activations=True))


def test_normalized_activations_put_a_layer_norm_before_gelu_and_before_the_softmax():
    import math

    import torch.nn.functional as F

    model = _normalized_model()
    with torch.no_grad():  # gains and offsets away from 1 and 0, so each would show if it were skipped
        for name, p in model.named_parameters():
            if ".ln_" in name:
                p.add_(torch.randn_like(p) * 0.3)
    block, x = model.blocks[0], torch.randn(2, 5, 64)

    def layer_norm(z, ln):  # by hand: standardise over the last dim, then gain and offset
        return (z - z.mean(-1, keepdim=True)) / torch.sqrt(z.var(-1, unbiased=False, keepdim=True) + ln.eps) * ln.weight + ln.bias

    mlp = block.mlp
    expected = F.gelu(layer_norm(x @ mlp.fc.weight.t() + mlp.fc.bias, mlp.ln_pre)) @ mlp.proj.weight.t() + mlp.proj.bias
    assert torch.allclose(mlp(x), expected, atol=1e-5)
    attn = block.attn
    q, k, v = (x @ attn.qkv.weight.t() + attn.qkv.bias).split(64, dim=-1)  # one head of 64
    q, k = layer_norm(q, attn.ln_q), layer_norm(k, attn.ln_k)
    scores = (q @ k.transpose(-2, -1)) / math.sqrt(64)
    scores = scores.masked_fill(torch.ones(5, 5, dtype=torch.bool).triu(1), float("-inf"))
    expected = scores.softmax(-1) @ v @ attn.proj.weight.t() + attn.proj.bias
    assert torch.allclose(attn(x), expected, atol=1e-5)


def test_normalize_and_project_returns_each_normalized_layer_to_its_initial_norm_without_changing_the_function():
    _, hooks = _hooks({"name": "normalize_and_project"}, normalize_activations=True)
    (project,) = hooks.step_end
    model = _normalized_model()
    d = 64

    def layers(m):  # the layers that feed a normalization, weight rows and bias together
        out = []
        for b in m.blocks:
            out.append(torch.cat([b.mlp.fc.weight.flatten(), b.mlp.fc.bias]))
            for rows in (slice(0, d), slice(d, 2 * d)):
                out.append(torch.cat([b.attn.qkv.weight[rows].flatten(), b.attn.qkv.bias[rows]]))
        return [t.detach().clone() for t in out]

    initial_norms = [t.norm() for t in layers(model)]
    project.attach(model)
    _trained(model, steps=5)
    with torch.no_grad():  # grow one layer well beyond its initial norm
        model.blocks[1].mlp.fc.weight.mul_(4.0)
        model.blocks[1].mlp.fc.bias.mul_(4.0)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    unprojected = layers(model)
    rows = torch.randint(0, 320, (2, 17), generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        logits_before = model(rows)
    project(StepEnd(model, None, None, 0, 0, rows))
    after = layers(model)
    for moved, projected, radius in zip(unprojected, after, initial_norms):
        assert torch.allclose(projected.norm(), radius, rtol=1e-5)
        assert torch.allclose(projected, moved * (radius / moved.norm()), rtol=1e-5, atol=1e-8)
    assert unprojected[3].norm() > 3 * initial_norms[3]  # block 1's MLP up projection was far off
    for name, p in model.named_parameters():  # everything else is untouched
        if not (name.endswith(("mlp.fc.weight", "mlp.fc.bias")) or ".qkv." in name):
            assert torch.equal(p, before[name]), name
    assert torch.equal(model.blocks[0].attn.qkv.weight[2 * d:], before["blocks.0.attn.qkv.weight"][2 * d:])  # values
    with torch.no_grad():  # scale-invariant layers: the same function (up to LayerNorm's epsilon)
        assert torch.allclose(model(rows), logits_before, atol=1e-3)


def test_normalize_and_project_needs_the_normalizations():
    from plasticity_ray.spec import SpecError

    with pytest.raises(SpecError, match="set model.normalize_activations: true"):
        with_overrides(load_spec("experiments/demo.yaml"), {"mitigations": [{"name": "normalize_and_project"}]})


def test_the_chunked_logit_mse_equals_the_plain_one_in_value_and_gradients(monkeypatch):
    import torch.nn.functional as F

    from plasticity_ray.model import gpt

    g = torch.Generator().manual_seed(2)
    hidden, weight = torch.randn(6, 5, 8, generator=g, requires_grad=True), torch.randn(40, 8, generator=g, requires_grad=True)
    other_hidden, other_weight = torch.randn(6, 5, 8, generator=g), torch.randn(40, 8, generator=g)
    plain = F.mse_loss(hidden @ weight.t(), other_hidden @ other_weight.t())
    expected = torch.autograd.grad(plain, [hidden, weight])
    monkeypatch.setattr(gpt, "PLAIN_HEAD_LOGITS", 0)
    monkeypatch.setattr(gpt, "LOSS_CHUNK_LOGITS", 7 * 40)  # chunks of 7 of the 30 tokens
    chunked = gpt.linear_logit_mse(hidden, weight, other_hidden, other_weight)
    assert torch.allclose(chunked, plain, rtol=1e-6)
    for got, want in zip(torch.autograd.grad(chunked, [hidden, weight]), expected):
        assert torch.allclose(got, want, rtol=1e-5, atol=1e-7)


def _churn_steps(hook, model, batches, losses):
    """The hook at successive updates: each batch trained by a real AdamW step after the hook saw it;
    returns, per update, the gradient the hook added and the weights it saw."""
    import copy

    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    task = task_info(load_spec("experiments/demo.yaml"), 0)
    added, seen = [], []
    for step, (rows, loss) in enumerate(zip(batches, losses)):
        _zero_grads(model)
        seen.append(copy.deepcopy(model))
        hook(Gradients(model, task, step, step, [rows], loss=torch.tensor(loss)))
        added.append([p.grad.clone() for p in model.parameters()])
        model(rows[:, :-1], targets=rows[:, 1:]).backward()
        optimizer.step()
    return added, seen


def test_c_chain_adds_the_gradient_of_its_churn_penalty_and_sets_lambda_by_the_authors_rule():
    _, hooks = _hooks({"name": "c_chain", "relative_scale": 0.05, "initial_strength": 100.0, "warmup_steps": 2,
                       "window": 2})
    (penalty,) = hooks.gradients
    model = _model()
    penalty.attach(model)
    g = torch.Generator().manual_seed(4)
    batches = [torch.randint(0, 320, (3, 17), generator=g) for _ in range(3)]
    added, seen = _churn_steps(penalty, model, batches, losses=[5.0, 4.0, 3.0])

    def churn(now, before, rows):  # mean over every token and vocabulary entry of the squared logit change
        return ((now(rows[:, :-1]) - before(rows[:, :-1]).detach()) ** 2).mean()

    assert all(g.abs().sum() == 0 for g in added[0])  # the task's first update has no update before it
    # Update 2: λ = 100, the previous batch, the weights before update 1.
    expected = torch.autograd.grad(100.0 * churn(seen[1], seen[0], batches[0]), list(seen[1].parameters()))
    assert all(torch.allclose(a, e, rtol=1e-4, atol=1e-6) for a, e in zip(added[1], expected))
    assert expected[0].abs().sum() > 0
    # After 2 updates λ = 0.05 · mean(|5|, |4|) / (the churn at update 2).
    lam = 0.05 * 4.5 / churn(seen[1], seen[0], batches[0]).item()
    expected = torch.autograd.grad(lam * churn(seen[2], seen[1], batches[1]), list(seen[2].parameters()))
    assert all(torch.allclose(a, e, rtol=1e-4, atol=1e-6) for a, e in zip(added[2], expected))


def test_c_chain_resumes_from_its_checkpointed_state_and_tensors():
    from plasticity_ray.mitigations.churn import ChurnReductionHook
    from plasticity_ray.spec import ChurnReduction

    spec = ChurnReduction(name="c_chain", warmup_steps=2, window=2)
    g = torch.Generator().manual_seed(6)
    batches = [torch.randint(0, 320, (3, 17), generator=g) for _ in range(4)]
    straight, resumed = ChurnReductionHook(spec), ChurnReductionHook(spec)
    model = _model()
    straight.attach(model)
    _churn_steps(straight, model, batches[:3], losses=[5.0, 4.0, 3.0])
    state, tensors = json.loads(json.dumps(straight.state_dict())), straight.tensors()
    assert tensors["reference"].shape == (3, 17) and "previous.wte.weight" in tensors
    resumed.attach(_model())
    resumed.load_state_dict(state, torch.device("cpu"))
    resumed.load_tensors(tensors)
    twin = _model()
    twin.load_state_dict(model.state_dict())
    (a,), _ = _churn_steps(straight, model, batches[3:], losses=[2.0])
    (b,), _ = _churn_steps(resumed, twin, batches[3:], losses=[2.0])
    assert all(torch.equal(x, y) for x, y in zip(a, b)) and any(x.abs().sum() > 0 for x in a)
