"""The penalties and resets of the current plasticity literature, each against its paper's formula on
a tiny real GPT: the expected gradients come from autograd on the penalty as the paper writes it,
not from the code under test."""

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


def _hooks(*mitigations):
    spec = with_overrides(load_spec("experiments/demo.yaml"), {"mitigations": list(mitigations), "seed": 3})
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
