"""The model's contract: causal, tied, two attention paths that agree, a loss head that is exact."""

import math

import pytest
import torch
import torch.nn.functional as F

from plasticity_ray.model.gpt import GPT, GPTConfig
from plasticity_ray.model import gpt as gpt_module

CFG = GPTConfig(layers=2, hidden=128, vocab_size=97, context=32)


def _model(seed=0, cfg=CFG):
    torch.manual_seed(seed)
    return GPT(cfg).eval()


def _tokens(batch=2, t=24, seed=1):
    return torch.randint(0, CFG.vocab_size, (batch, t), generator=torch.Generator().manual_seed(seed))


def test_forward_is_causal():
    model = _model()
    idx = _tokens()
    changed = idx.clone()
    t = 10
    changed[:, t] = (changed[:, t] + 1) % CFG.vocab_size
    with torch.no_grad():
        a, b = model(idx), model(changed)
    assert torch.equal(a[:, :t], b[:, :t])
    assert not torch.allclose(a[:, t:], b[:, t:])


def test_input_and_output_embeddings_are_one_tensor():
    model = _model()
    vocab_rows = [n for n, p in model.named_parameters() if p.shape[0] == CFG.vocab_size]
    assert vocab_rows == ["wte.weight"]
    idx = _tokens()
    with torch.no_grad():
        logits = model(idx)
        assert torch.allclose(logits, model.hidden_states(idx) @ model.wte.weight.t(), atol=1e-5)
    # The shared table gets gradient from the output side too: rows of tokens never fed in still move.
    model.train()
    unused = sorted(set(range(CFG.vocab_size)) - set(idx.flatten().tolist()))[0]
    model(idx, targets=idx).backward()
    assert model.wte.weight.grad[unused].abs().sum() > 0


def test_sdpa_and_explicit_attention_paths_agree():
    model = _model()
    idx = _tokens()
    seen = {}
    with torch.no_grad():
        fast = model(idx)
        explicit = model(idx, attention_observer=lambda layer, probs: seen.__setitem__(layer, probs))
    assert torch.allclose(fast, explicit, atol=1e-5)
    assert sorted(seen) == [0, 1]
    probs = seen[0]
    assert probs.shape == (2, CFG.hidden // 64, idx.size(1), idx.size(1))
    assert torch.allclose(probs.sum(-1), torch.ones(probs.shape[:-1]), atol=1e-6)
    assert probs.triu(1).abs().max() == 0  # nothing attends to the future


def test_chunked_loss_head_equals_plain_cross_entropy(monkeypatch):
    monkeypatch.setattr(gpt_module, "LOSS_CHUNK_LOGITS", CFG.vocab_size * 5)  # 5-token chunks, uneven tail
    monkeypatch.setattr(gpt_module, "PLAIN_HEAD_LOGITS", 0)  # the chunked head even for these few logits
    idx, targets = _tokens(t=23), _tokens(t=23, seed=2)
    chunked, plain = _model().train(), _model().train()
    loss = chunked(idx, targets=targets)
    loss.backward()
    logits = plain(idx)
    reference = F.cross_entropy(logits.reshape(-1, CFG.vocab_size), targets.reshape(-1))
    reference.backward()
    assert loss.item() == pytest.approx(reference.item(), rel=1e-6)
    for (name, p), q in zip(chunked.named_parameters(), plain.parameters()):
        assert torch.allclose(p.grad, q.grad, atol=1e-6, rtol=1e-4), name


def test_loss_under_bf16_autocast_tracks_fp32():
    model = _model().train()
    idx, targets = _tokens(), _tokens(seed=2)
    fp32 = model(idx, targets=targets)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        bf16 = model(idx, targets=targets)
    bf16.backward()
    assert bf16.dtype == torch.float32
    assert bf16.item() == pytest.approx(fp32.item(), rel=2e-2)
    assert model.wte.weight.grad.dtype == torch.float32


def test_initial_loss_is_near_uniform_and_adamw_lowers_it():
    model = _model().train()
    idx = _tokens(batch=4, t=32)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3, betas=(0.9, 0.95), weight_decay=0.1)
    losses = []
    for _ in range(30):
        loss = model(idx[:, :-1], targets=idx[:, 1:])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[0] == pytest.approx(math.log(CFG.vocab_size), rel=0.05)
    assert losses[-1] < 0.5 * losses[0]


def test_gpt2_initialisation():
    cfg = GPTConfig(layers=4, hidden=256, vocab_size=64, context=8)
    model = _model(cfg=cfg)
    residual = 0.02 / math.sqrt(2 * cfg.layers)
    for block in model.blocks:
        assert block.attn.proj.weight.std().item() == pytest.approx(residual, rel=0.05)
        assert block.mlp.proj.weight.std().item() == pytest.approx(residual, rel=0.05)
        assert block.mlp.fc.weight.std().item() == pytest.approx(0.02, rel=0.05)
        assert block.attn.qkv.bias.abs().max() == 0
    assert model.wte.weight.std().item() == pytest.approx(0.02, rel=0.1)


def test_longer_than_context_is_a_clear_error():
    with pytest.raises(ValueError, match="context"):
        _model()(torch.zeros(1, CFG.context + 1, dtype=torch.long))
