"""The yardstick for `bench train`: a plain PyTorch training loop of the same pre-norm GPT shape —
what a researcher would write by hand (nanoGPT-style): SDPA attention, GeLU MLP, tied embeddings,
full logits with ordinary cross-entropy, bf16 autocast and compiled blocks on GPU, fused AdamW
there. Nothing of the trainer is used, so the ratio against it says what the trainer's own code
costs or gains."""

from __future__ import annotations

import contextlib
from typing import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F


class _Block(nn.Module):
    def __init__(self, hidden: int, heads: int):
        super().__init__()
        self.heads = heads
        self.ln1, self.ln2 = nn.LayerNorm(hidden), nn.LayerNorm(hidden)
        self.qkv, self.out = nn.Linear(hidden, 3 * hidden), nn.Linear(hidden, hidden)
        self.fc, self.proj = nn.Linear(hidden, 4 * hidden), nn.Linear(4 * hidden, hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, c = x.shape
        q, k, v = (z.view(b, t, self.heads, c // self.heads).transpose(1, 2) for z in self.qkv(self.ln1(x)).split(c, 2))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.out(y.transpose(1, 2).reshape(b, t, c))
        return x + self.proj(F.gelu(self.fc(self.ln2(x))))


class ReferenceGPT(nn.Module):
    def __init__(self, layers: int, hidden: int, heads: int, vocab: int, context: int):
        super().__init__()
        self.wte, self.wpe = nn.Embedding(vocab, hidden), nn.Embedding(context, hidden)
        self.blocks = nn.ModuleList(_Block(hidden, heads) for _ in range(layers))
        self.ln_f = nn.LayerNorm(hidden)

    def forward(self, idx: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        x = self.wte(idx) + self.wpe(torch.arange(idx.size(1), device=idx.device))
        for block in self.blocks:
            x = block(x)
        logits = F.linear(self.ln_f(x), self.wte.weight)
        return F.cross_entropy(logits.float().view(-1, logits.size(-1)), targets.reshape(-1))


def reference_step(layers: int, hidden: int, heads: int, vocab: int, seq_len: int, rows: int, micro_batch: int,
                   device: torch.device, lr: float = 1e-3) -> Callable[[], torch.Tensor]:
    """One optimizer step of the plain loop over `rows` sequences in micro-batches of `micro_batch`
    (a closure over its own model, optimizer and synthetic batch); returns the last micro-batch's loss."""
    gpu = device.type == "cuda"
    torch.manual_seed(0)
    model = ReferenceGPT(layers, hidden, heads, vocab, seq_len).to(device)
    if gpu:
        for block in model.blocks:
            block.compile()
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.9, 0.95), weight_decay=0.1, fused=gpu)
    precision = (lambda: torch.autocast("cuda", dtype=torch.bfloat16)) if gpu else contextlib.nullcontext
    chunks = torch.randint(0, vocab - 1, (rows, seq_len + 1), device=device).split(micro_batch)

    def step() -> torch.Tensor:
        for chunk in chunks:
            with precision():
                loss = model(chunk[:, :-1], chunk[:, 1:]) / len(chunks)
            loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return loss

    return step
