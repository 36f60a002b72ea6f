"""Each diagnostic on a constructed model or matrix whose answer is known."""

import math

import pytest
import torch

from plasticity_ray.diagnostics.attention import attention_entropy, classify, entropy, max_mean_entropy
from plasticity_ray.diagnostics.dormant import activation_dormancy, gradient_dormancy
from plasticity_ray.diagnostics.weights import average_magnitude, matrix_ranks, model_ranks, relative_distance
from plasticity_ray.model.gpt import GPT, GPTConfig

CFG = GPTConfig(layers=2, hidden=128, vocab_size=61, context=64)


def _model(seed=0):
    torch.manual_seed(seed)
    return GPT(CFG).eval()


def _rows(n=4, length=CFG.context, seed=1):
    return torch.randint(0, CFG.vocab_size, (n, length + 1), generator=torch.Generator().manual_seed(seed))


def test_eq5_max_mean_entropy():
    assert round(max_mean_entropy(256, 2048), 4) == 6.9215
    assert max_mean_entropy(1, 1) == 0.0


def test_entropy_of_uniform_and_one_hot_rows():
    uniform = torch.full((1, 1, 1, 8), 1 / 8)
    one_hot = torch.zeros(1, 1, 1, 8)
    one_hot[..., 3] = 1
    assert entropy(uniform).item() == pytest.approx(math.log(8))
    assert entropy(one_hot).item() == 0.0
    assert classify(torch.tensor([6.5, 3.0, 0.2]), h_max=7.0) == {
        "lazy_percent": 100 / 3, "collapsed_percent": 100 / 3, "lazy": 1, "collapsed": 1, "heads": 3}


def test_uniform_attention_is_lazy():
    model = _model()
    with torch.no_grad():
        for block in model.blocks:  # zero queries: every score is 0, attention is uniform over the past
            block.attn.qkv.weight[: CFG.hidden].zero_()
            block.attn.qkv.bias[: CFG.hidden].zero_()
    result = attention_entropy(model, _rows(), first_query=8)
    assert result["h_max"] == pytest.approx(max_mean_entropy(8, CFG.context))
    assert torch.allclose(torch.tensor(result["per_head"]), torch.tensor(result["h_max"]), atol=1e-4)
    assert result["lazy_percent"] == 100.0 and result["collapsed_percent"] == 0.0


def test_one_hot_attention_is_collapsed():
    model = _model()
    d = CFG.hidden
    with torch.no_grad():
        model.wte.weight.zero_()  # the input is the position embedding alone ...
        model.wpe.weight.zero_()
        model.wpe.weight[0, 0], model.wpe.weight[0, 1] = 1.0, -1.0  # ... and only position 0 is non-zero
        for block in model.blocks:
            block.attn.qkv.weight.zero_()
            block.attn.qkv.bias.zero_()
            block.attn.qkv.bias[: d] = 1000.0  # every query is a large constant
            block.attn.qkv.weight[d : 2 * d, 0] = 1.0  # keys: large at position 0, zero elsewhere
    result = attention_entropy(model, _rows(), first_query=8)
    assert max(max(layer) for layer in result["per_head"]) < 1e-3
    assert result["collapsed_percent"] == 100.0 and result["lazy_percent"] == 0.0


def _silence_unit(model, layer, unit):
    with torch.no_grad():
        model.blocks[layer].mlp.fc.weight[unit].zero_()
        model.blocks[layer].mlp.fc.bias[unit] = 0.0  # GeLU(0) = 0 for every token


def test_a_unit_with_zeroed_weights_is_dormant():
    model = _model()
    _silence_unit(model, 1, 7)
    result = activation_dormancy(model, _rows(), threshold=0.01)
    assert result["dormant"] == [0, 1]
    assert result["units"] == [4 * CFG.hidden] * 2
    assert result["per_layer_percent"][1] == pytest.approx(100 / (4 * CFG.hidden))
    assert result["percent"] == pytest.approx(100 / (8 * CFG.hidden))


def test_a_unit_with_zeroed_weights_has_no_gradient_and_is_grama_dormant():
    model = _model()
    _silence_unit(model, 0, 3)
    with torch.no_grad():
        model.blocks[0].mlp.proj.weight[:, 3].zero_()  # nor any effect downstream
    result = gradient_dormancy(model, _rows(), threshold=0.01)
    assert result["dormant"][0] >= 1
    assert all(p.grad is None for p in model.parameters())  # leaves the model as it was


def test_weight_magnitude_is_one_global_mean():
    model = _model()
    with torch.no_grad():
        for p in model.non_embedding_parameters():
            p.fill_(0.5)
        model.blocks[0].mlp.fc.weight.fill_(2.0)
    big = model.blocks[0].mlp.fc.weight.numel()
    total = sum(p.numel() for p in model.non_embedding_parameters())
    assert average_magnitude(model) == pytest.approx((2.0 * big + 0.5 * (total - big)) / total)


def test_relative_distance():
    model = _model()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    assert relative_distance(model, before) == 0.0
    with torch.no_grad():
        for p in model.non_embedding_parameters():
            p.mul_(1.1)
    assert relative_distance(model, before) == pytest.approx(0.1, rel=1e-5)


def test_ranks_of_known_matrices():
    identity = matrix_ranks(torch.eye(16))
    assert identity["stable_rank"] == pytest.approx(16) and identity["effective_rank"] == pytest.approx(16)
    rank_one = matrix_ranks(torch.outer(torch.arange(1.0, 9.0), torch.ones(5)))
    assert rank_one["stable_rank"] == pytest.approx(1) and rank_one["effective_rank"] == pytest.approx(1, abs=1e-3)
    diag = matrix_ranks(torch.diag(torch.tensor([2.0, 1.0])))
    assert diag["stable_rank"] == pytest.approx(5 / 4)
    assert len(model_ranks(_model())) == 4 * CFG.layers  # qkv, attention out, MLP up, MLP down
