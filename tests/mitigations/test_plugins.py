"""Each mitigation on a constructed case, on a real (tiny) GPT and a real AdamW."""

import pytest
import torch

from plasticity_ray.analysis.runs import mitigations_label as label
from plasticity_ray.mitigations import hooks_for
from plasticity_ray.mitigations.init import generator
from plasticity_ray.mitigations.redo import dormant_masks, recycle
from plasticity_ray.mitigations.shrink_perturb import shrink_perturb
from plasticity_ray.mitigations.weight_clipping import clip
from plasticity_ray.model.gpt import GPT, GPTConfig
from plasticity_ray.spec import SpecError, load_spec, with_overrides
from plasticity_ray.train.hooks import StepEnd


def _model(sink=False):
    torch.manual_seed(0)
    return GPT(GPTConfig(layers=2, hidden=64, vocab_size=320, context=32, attention_sink=sink))


def _rows(n=4, t=33):
    return torch.randint(0, 320, (n, t), generator=torch.Generator().manual_seed(1))


def _state(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


def test_weight_clipping_bounds_weights_by_their_init_scale_and_leaves_constants_alone():
    model = _model()
    fc = model.blocks[0].mlp.fc
    with torch.no_grad():
        fc.weight[0, 0], fc.weight[0, 1], fc.bias[0] = 1.0, -1.0, 5.0
        model.blocks[0].mlp.proj.weight[0, 0] = 1.0
    clip(model, kappa=3.0)
    assert fc.weight[0, 0].item() == pytest.approx(0.06) and fc.weight[0, 1].item() == pytest.approx(-0.06)
    residual_std = 0.02 / 2  # 0.02 / sqrt(2 · layers)
    assert model.blocks[0].mlp.proj.weight[0, 0].item() == pytest.approx(3 * residual_std)
    assert fc.bias[0].item() == 5.0 and torch.equal(model.ln_f.weight, torch.ones(64))
    assert fc.weight.abs().max().item() <= 0.06 + 1e-7


def test_shrink_one_and_noise_zero_is_the_identity():
    model = _model()
    before = _state(model)
    shrink_perturb(model, 1.0, 0.0, generator(torch.device("cpu"), 0, 1, 3))
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_shrink_perturb_is_lambda_theta_plus_sigma_fresh_init_and_reproducible():
    a, b = _model(), _model()
    before = _state(a)
    shrink_perturb(a, 0.5, 0.0, generator(torch.device("cpu"), 0, 1, 3))
    assert torch.equal(a.blocks[1].attn.qkv.weight, before["blocks.1.attn.qkv.weight"] * 0.5)
    shrink_perturb(b, 0.0, 1.0, generator(torch.device("cpu"), 0, 1, 3))  # nothing kept: a fresh draw
    assert b.blocks[0].mlp.fc.weight.std().item() == pytest.approx(0.02, rel=0.05)
    assert torch.equal(b.ln_f.weight, torch.ones(64)) and torch.equal(b.blocks[0].mlp.fc.bias, torch.zeros(256))
    c = _model()
    shrink_perturb(c, 0.0, 1.0, generator(torch.device("cpu"), 0, 1, 3))
    assert torch.equal(b.blocks[0].mlp.fc.weight, c.blocks[0].mlp.fc.weight)  # same seeds, same draw


def test_redo_recycles_a_dead_unit_without_changing_the_function():
    model = _model()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    rows = _rows()
    model(rows[:, :-1], targets=rows[:, 1:]).backward()
    optimizer.step()
    fc, proj = model.blocks[1].mlp.fc, model.blocks[1].mlp.proj
    with torch.no_grad():  # unit 7 of layer 1 receives nothing: GeLU(0) = 0, score 0
        fc.weight[7] = 0.0
        fc.bias[7] = 0.0
    masks = dormant_masks(model, rows, threshold=0.0)
    assert masks[1].nonzero().flatten().tolist() == [7] and not masks[0].any()
    logits_before = model(rows[:, :-1])
    other_before = fc.weight[8].clone()
    assert recycle(model, optimizer, masks, generator(torch.device("cpu"), 0, 2, 5)) == 1
    assert fc.weight[7].abs().sum() > 0 and fc.weight[7].std().item() == pytest.approx(0.02, rel=0.3)
    assert torch.equal(proj.weight[:, 7], torch.zeros(64)) and torch.equal(fc.weight[8], other_before)
    state = optimizer.state
    assert state[fc.weight]["exp_avg"][7].abs().sum() == 0 and state[fc.weight]["exp_avg_sq"][7].abs().sum() == 0
    assert state[proj.weight]["exp_avg"][:, 7].abs().sum() == 0 and state[fc.weight]["exp_avg"][8].abs().sum() > 0
    assert torch.allclose(model(rows[:, :-1]), logits_before, atol=1e-6)


def test_redo_runs_every_n_steps_from_the_hook():
    spec = with_overrides(load_spec("experiments/demo.yaml"), {"mitigations": [{"name": "redo", "every": 4}]})
    (on_step,) = hooks_for(spec).step_end
    model = _model()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    fc = model.blocks[0].mlp.fc
    with torch.no_grad():
        fc.weight[3], fc.bias[3] = 0.0, 0.0
    before = _state(model)
    on_step(StepEnd(model, optimizer, None, step=2, global_step=2, rows=_rows()))  # the 3rd step: not yet
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    on_step(StepEnd(model, optimizer, None, step=3, global_step=3, rows=_rows()))  # the 4th: unit 3 is recycled
    assert fc.weight[3].abs().sum() > 0 and torch.equal(model.blocks[0].mlp.proj.weight[:, 3], torch.zeros(64))
    assert torch.equal(before["blocks.0.mlp.fc.weight"][4:], fc.weight[4:])


def _train_step(model, optimizer, rows):
    model(rows[:, :-1], targets=rows[:, 1:]).backward()
    optimizer.step()
    optimizer.zero_grad()


def test_continual_backprop_replaces_the_least_useful_mature_unit():
    from plasticity_ray.mitigations.continual_backprop import ContinualBackpropHook
    from plasticity_ray.spec import ContinualBackprop

    model = _model()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    # 1/256 of the 256 units of a layer per step: exactly one unit is due once all are mature.
    hook = ContinualBackpropHook(ContinualBackprop(name="continual_backprop", replacement_rate=1 / 256,
                                                   maturity_threshold=1, decay_rate=0.5), seed=0)
    hook.attach(model)
    fc, proj = model.blocks[0].mlp.fc, model.blocks[0].mlp.proj
    with torch.no_grad():
        proj.weight[:, 5] = 0.0  # unit 5 of layer 0 contributes nothing: the lowest utility
    rows = _rows()
    _train_step(model, optimizer, rows)
    assert hook(StepEnd(model, optimizer, None, 0, 0, rows)) == {"cbp_replaced": 0}  # age 1: not yet mature
    proj.weight.data[:, 5] = 0.0  # keep it useless through the optimizer step
    _train_step(model, optimizer, rows)
    incoming_before = fc.weight[5].clone()
    assert hook(StepEnd(model, optimizer, None, 1, 1, rows)) == {"cbp_replaced": 2}  # one per layer
    assert not torch.equal(fc.weight[5], incoming_before) and torch.equal(proj.weight[:, 5], torch.zeros(64))
    assert optimizer.state[fc.weight]["exp_avg"][5].abs().sum() == 0
    assert hook.age[0][5] == 0 and hook.age[0][4] == 2 and hook.utility[0][5] == 0
    restored = ContinualBackpropHook(hook.spec, seed=0)
    restored.load_state_dict(hook.state_dict(), torch.device("cpu"))
    assert all(torch.equal(a, b) for a, b in zip(restored.utility + restored.age, hook.utility + hook.age))
    assert restored.due == hook.due


def test_continual_backprop_ignores_evaluation_forwards():
    from plasticity_ray.mitigations.continual_backprop import ContinualBackpropHook
    from plasticity_ray.spec import ContinualBackprop
    from plasticity_ray.train.recipe import evaluate

    model = _model()
    hook = ContinualBackpropHook(ContinualBackprop(name="continual_backprop"), seed=0)
    hook.attach(model)
    evaluate(model, _rows(), micro_batch=2)
    assert hook._forwards == 0 and all(s.sum() == 0 for s in hook._sums)


def test_the_attention_sink_keeps_the_model_causal_and_learns():
    model = _model(sink=True)
    rows = _rows()
    logits = model(rows[:, :-1])
    assert logits.shape == (4, 32, 320)
    changed = rows.clone()
    changed[:, 20:] = (changed[:, 20:] + 1) % 320
    assert torch.allclose(model(changed[:, :-1])[:, :20], logits[:, :20], atol=1e-5)
    model(rows[:, :-1], targets=rows[:, 1:]).backward()
    assert model.sink.grad is not None and model.sink.grad.abs().sum() > 0
    seen = []
    model.hidden_states(rows[:1, :-1], attention_observer=lambda layer, p: seen.append(p))
    assert seen[0].shape == (1, 1, 32, 33) and torch.allclose(seen[0].sum(-1), torch.ones(1, 1, 32))
    assert (seen[0][..., 0] > 0).all()  # every query can attend to the sink


def test_labels_name_what_a_run_changes():
    assert label({"mitigations": []}) == "none"
    assert label({"mitigations": [{"name": "shrink_perturb", "every": "task", "shrink": 0.8, "noise": 0.01}],
                  "model": {"attention_sink": True}}) == "shrink_perturb(shrink=0.8,noise=0.01)+attention_sink"
    assert label({"mitigations": [{"name": "active_forgetting", "every": 1000}], "model": {"activation": "fourier"}}) == (
        "active_forgetting(every=1000)+fourier_features")
    assert label({"mitigations": [{"name": "reset_control"}], "model": {"activation": "gelu"}}) == "reset_control"
    assert label({"mitigations": [{"name": "normalize_and_project"}], "model": {"normalize_activations": True}}) == (
        "normalize_and_project+normalized_activations")


@pytest.mark.parametrize("entry, message", [
    ({"name": "shrink_and_perturb"}, "mitigations[0].name: unknown 'shrink_and_perturb' (did you mean 'shrink_perturb'?"),
    ({"name": "shrink_perturb", "shrink": 1.5}, "mitigations[0].shrink: must be less than or equal to 1"),
    ({"name": "redo", "evrey": 10}, "mitigations[0].evrey: unknown field (did you mean 'every'?)"),
    ({"name": "weight_clipping", "kappa": -1}, "mitigations[0].kappa: must be greater than 0"),
])
def test_a_misspelled_mitigation_or_bad_parameter_is_a_spec_error_naming_the_field(entry, message):
    with pytest.raises(SpecError) as err:
        with_overrides(load_spec("experiments/demo.yaml"), {"mitigations": [entry]})
    assert message in str(err.value)
