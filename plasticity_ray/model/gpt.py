"""The paper's GPT: a pre-LayerNorm decoder (§IV-B, Appendix A, Figure 8), in one plain-PyTorch file.

Causal self-attention with learned absolute positions, LayerNorm before attention and MLP plus a
final LayerNorm, MLP expansion 4 with GeLU, biases on every linear layer and LayerNorm, head
dimension 64, and one token-embedding tensor shared by input and output. GPT-2 initialisation.
Three options beyond the paper: an attention sink, deep Fourier features in place of GeLU, and a
LayerNorm before each nonlinearity (Normalize-and-Project's "normalize").

Two attention paths: `scaled_dot_product_attention` (fast, used for training) and an explicit one
that materialises the attention probabilities and hands them to an observer (diagnostics).
The loss head never holds logits for more than one chunk of tokens (vocabulary 151,680).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

from plasticity_ray.model.sizes import HEAD_DIM, ModelSize

# Called once per layer on the explicit path with (layer index, probabilities of shape B×H×T×T).
AttentionObserver = Callable[[int, torch.Tensor], None]

# Logit elements per chunk of the loss head (1 GiB in fp32): 1,770 tokens at vocabulary 151,680.
LOSS_CHUNK_LOGITS = 2**28
# Up to this many logit elements (64 MiB in fp32: a CPU batch of the byte vocabulary) the loss head
# is PyTorch's own cross-entropy over all logits at once, which is faster than the chunked one there.
PLAIN_HEAD_LOGITS = 2**24


@dataclass(frozen=True)
class GPTConfig:
    layers: int
    hidden: int
    vocab_size: int
    context: int
    attention_sink: bool = False  # a learnable token before every sequence (Xiao et al. 2024)
    activation: str = "gelu"  # the MLP's: "gelu" (the paper's) or "fourier" (FourierFeatures)
    # A LayerNorm on the MLP's pre-activations and on each head's queries and keys (before the softmax):
    # the layers feeding them become scale-invariant, which Normalize-and-Project's projection needs.
    normalize_activations: bool = False

    @property
    def heads(self) -> int:
        return self.hidden // HEAD_DIM

    @classmethod
    def from_size(cls, size: ModelSize, vocab_size: int, context: int, attention_sink: bool = False,
                  activation: str = "gelu", normalize_activations: bool = False) -> "GPTConfig":
        return cls(layers=size.layers, hidden=size.hidden, vocab_size=vocab_size, context=context,
                   attention_sink=attention_sink, activation=activation, normalize_activations=normalize_activations)


def causal_attention_probs(q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """softmax(q kᵀ / sqrt(d_head)) under a causal mask, in fp32; shapes B×H×T×d → B×H×T×T."""
    t = q.size(-2)
    scores = (q.float() @ k.float().transpose(-2, -1)) / math.sqrt(q.size(-1))
    future = torch.ones(t, t, dtype=torch.bool, device=q.device).triu(1)
    return scores.masked_fill(future, float("-inf")).softmax(dim=-1)


class CausalSelfAttention(nn.Module):
    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.heads = cfg.heads
        self.qkv = nn.Linear(cfg.hidden, 3 * cfg.hidden)
        self.proj = nn.Linear(cfg.hidden, cfg.hidden)
        self.ln_q = nn.LayerNorm(HEAD_DIM) if cfg.normalize_activations else None
        self.ln_k = nn.LayerNorm(HEAD_DIM) if cfg.normalize_activations else None

    def forward(self, x: torch.Tensor, observe: Callable[[torch.Tensor], None] | None = None) -> torch.Tensor:
        b, t, c = x.shape
        q, k, v = (z.view(b, t, self.heads, HEAD_DIM).transpose(1, 2) for z in self.qkv(x).split(c, dim=2))
        if self.ln_q is not None:
            q, k = self.ln_q(q), self.ln_k(k)
        if observe is None:
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        else:
            probs = causal_attention_probs(q, k)
            observe(probs)
            y = probs.to(v.dtype) @ v
        return self.proj(y.transpose(1, 2).reshape(b, t, c))


class FourierFeatures(nn.Module):
    """Deep Fourier features (Lewandowski, Schuurmans and Machado, "Plastic Learning with Deep
    Fourier Features", ICLR 2025): each pre-activation z gives the pair [sin z, cos z]."""

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return torch.cat([torch.sin(z), torch.cos(z)], dim=-1)


class MLP(nn.Module):
    def __init__(self, cfg: GPTConfig):
        super().__init__()
        width = 4 * cfg.hidden  # the activations the down projection reads
        fourier = cfg.activation == "fourier"
        # Fourier features at equal width: half as many pre-activations, each giving a sine and a cosine.
        self.fc = nn.Linear(cfg.hidden, width // 2 if fourier else width)
        self.ln_pre = nn.LayerNorm(self.fc.out_features) if cfg.normalize_activations else None
        self.act = FourierFeatures() if fourier else nn.GELU()  # a module, so diagnostics can hook the activations
        self.proj = nn.Linear(width, cfg.hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.fc(x)
        return self.proj(self.act(z if self.ln_pre is None else self.ln_pre(z)))


class Block(nn.Module):
    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.ln_attn = nn.LayerNorm(cfg.hidden)
        self.attn = CausalSelfAttention(cfg)
        self.ln_mlp = nn.LayerNorm(cfg.hidden)
        self.mlp = MLP(cfg)

    def forward(self, x: torch.Tensor, observe: Callable[[torch.Tensor], None] | None = None) -> torch.Tensor:
        x = x + self.attn(self.ln_attn(x), observe)
        return x + self.mlp(self.ln_mlp(x))


class GPT(nn.Module):
    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.cfg = cfg
        self.wte = nn.Embedding(cfg.vocab_size, cfg.hidden)  # also the output projection (tied)
        self.wpe = nn.Embedding(cfg.context, cfg.hidden)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.layers))
        self.ln_f = nn.LayerNorm(cfg.hidden)
        self.sink = nn.Parameter(torch.empty(1, 1, cfg.hidden)) if cfg.attention_sink else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """GPT-2 init: N(0, 0.02) weights, zero biases, residual projections scaled by 1/sqrt(2·layers)."""
        for name, param in self.named_parameters():
            kind, value = self.initialisation(name)
            if kind == "normal":
                nn.init.normal_(param, mean=0.0, std=value)
            else:
                nn.init.constant_(param, value)

    def initialisation(self, name: str) -> tuple[str, float]:
        """How parameter `name` is initialised: ("normal", std) or ("constant", value)."""
        if name.endswith(".bias"):
            return "constant", 0.0
        if ".ln_" in name or name.startswith("ln_"):
            return "constant", 1.0
        if name.endswith(".proj.weight"):
            return "normal", 0.02 / math.sqrt(2 * self.cfg.layers)
        return "normal", 0.02

    def embedding_parameters(self) -> list[nn.Parameter]:
        return [self.wte.weight, self.wpe.weight]

    def non_embedding_parameters(self) -> list[nn.Parameter]:
        embedding = {id(p) for p in self.embedding_parameters()}
        return [p for p in self.parameters() if id(p) not in embedding]

    def hidden_states(self, idx: torch.Tensor, attention_observer: AttentionObserver | None = None) -> torch.Tensor:
        """Token ids B×T → final-LayerNorm outputs B×T×hidden."""
        t = idx.size(1)
        if t > self.cfg.context:
            raise ValueError(f"sequence of {t} tokens is longer than the model's context of {self.cfg.context}")
        positions = torch.arange(t, device=idx.device)
        x = self.wte(idx) + self.wpe(positions)
        skip = 0
        if self.sink is not None:  # every token can attend to the sink; its own output is dropped
            x = torch.cat([self.sink.to(x.dtype).expand(x.size(0), 1, -1), x], dim=1)
            skip = 1
        for layer, block in enumerate(self.blocks):
            # The observer sees the real tokens' queries (over the sink and the tokens as keys).
            observe = None if attention_observer is None else (
                lambda p, layer=layer: attention_observer(layer, p[:, :, skip:, :]))
            x = block(x, observe)
        return self.ln_f(x[:, skip:])

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        return F.linear(hidden, self.wte.weight)

    def forward(
        self,
        idx: torch.Tensor,
        targets: torch.Tensor | None = None,
        attention_observer: AttentionObserver | None = None,
    ) -> torch.Tensor:
        """Logits B×T×V when no targets are given, else the mean next-token cross-entropy."""
        hidden = self.hidden_states(idx, attention_observer)
        if targets is None:
            return self.logits(hidden)
        return linear_cross_entropy(hidden, self.wte.weight, targets)


def linear_cross_entropy(hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """mean CE(hidden @ weightᵀ, targets) without ever holding more than one chunk of logits."""
    flat_hidden = hidden.reshape(-1, hidden.size(-1))
    if flat_hidden.size(0) * weight.size(0) <= PLAIN_HEAD_LOGITS:
        return F.cross_entropy(F.linear(flat_hidden, weight).float(), targets.reshape(-1))
    chunk = max(1, LOSS_CHUNK_LOGITS // weight.size(0))
    return _ChunkedLinearCrossEntropy.apply(flat_hidden, weight, targets.reshape(-1), chunk)


def linear_logit_mse(hidden: torch.Tensor, weight: torch.Tensor, other_hidden: torch.Tensor,
                     other_weight: torch.Tensor) -> torch.Tensor:
    """mean((hidden @ weightᵀ − other_hidden @ other_weightᵀ)²) over every token and vocabulary entry,
    differentiable in `hidden` and `weight` only, without ever holding more than one chunk of logits."""
    flat_hidden = hidden.reshape(-1, hidden.size(-1))
    flat_other = other_hidden.reshape(-1, other_hidden.size(-1)).detach()
    if flat_hidden.size(0) * weight.size(0) <= PLAIN_HEAD_LOGITS:
        return F.mse_loss(F.linear(flat_hidden, weight).float(), F.linear(flat_other, other_weight.detach()).float())
    chunk = max(1, LOSS_CHUNK_LOGITS // weight.size(0))
    return _ChunkedLogitMSE.apply(flat_hidden, weight, flat_other, other_weight.detach(), chunk)


def _over_chunks(hidden, weight, chunk: int, loss_of, want_hidden: bool, want_weight: bool):
    """A loss on the logits `hidden @ weightᵀ` summed over chunks of positions and, in the same pass,
    its gradients with respect to `hidden` and `weight`, never more than one chunk of logits in memory.
    `loss_of(start, logits)` gives a chunk's loss sum and its gradient with respect to the chunk's fp32
    logits (None when no gradient is wanted)."""
    grad_hidden = torch.empty_like(hidden) if want_hidden else None
    grad_weight = torch.zeros_like(weight, dtype=torch.float32) if want_weight else None
    total = torch.zeros((), dtype=torch.float32, device=hidden.device)
    for start in range(0, hidden.size(0), chunk):
        h = hidden[start : start + chunk]
        loss, dlogits = loss_of(start, (h @ weight.t()).float())
        total += loss
        if dlogits is not None:
            dlogits = dlogits.to(h.dtype)  # under autocast the matmuls below run in bf16
            if want_hidden:
                grad_hidden[start : start + chunk] = dlogits @ weight
            if want_weight:
                grad_weight += (dlogits.t() @ h).float()
    return total, grad_hidden, grad_weight


class _ChunkedHead(torch.autograd.Function):
    """The gradients `_over_chunks` computed, handed back (scaled by the incoming one)."""

    @staticmethod
    def backward(ctx, grad_loss):
        grad_hidden, grad_weight = ctx.saved_tensors
        gh = grad_hidden * grad_loss if grad_hidden is not None else None
        gw = (grad_weight * grad_loss).to(ctx.weight_dtype) if grad_weight is not None else None
        return (gh, gw) + (None,) * ctx.other_inputs


class _ChunkedLogitMSE(_ChunkedHead):
    """`linear_logit_mse` chunk by chunk, its gradients computed in the same pass (as the loss head)."""

    @staticmethod
    def forward(ctx, hidden, weight, other_hidden, other_weight, chunk):
        n = hidden.size(0) * weight.size(0)

        def loss_of(start, logits):
            diff = logits - (other_hidden[start : start + chunk] @ other_weight.t()).float()
            return diff.pow(2).sum(), diff * (2.0 / n)

        total, grad_hidden, grad_weight = _over_chunks(hidden, weight, chunk, loss_of, True, True)
        ctx.save_for_backward(grad_hidden, grad_weight)
        ctx.weight_dtype, ctx.other_inputs = weight.dtype, 3
        return total / n


class _ChunkedLinearCrossEntropy(_ChunkedHead):
    """Computes the loss and, in the same pass over each chunk, its gradients (as Liger's fused
    linear cross-entropy does): the same FLOPs as the plain head, one chunk of logits in memory."""

    @staticmethod
    def forward(ctx, hidden, weight, targets, chunk):
        n = hidden.size(0)
        want_hidden, want_weight = ctx.needs_input_grad[0], ctx.needs_input_grad[1]

        def loss_of(start, logits):
            t = targets[start : start + chunk]
            lse = torch.logsumexp(logits, dim=-1)
            loss = (lse - logits.gather(1, t[:, None]).squeeze(1)).sum()
            if not (want_hidden or want_weight):
                return loss, None
            dlogits = (logits - lse[:, None]).exp_()  # softmax
            dlogits[torch.arange(logits.size(0), device=logits.device), t] -= 1.0
            return loss, dlogits / n

        loss_sum, grad_hidden, grad_weight = _over_chunks(hidden, weight, chunk, loss_of, want_hidden, want_weight)
        ctx.save_for_backward(grad_hidden, grad_weight)
        ctx.weight_dtype, ctx.other_inputs = weight.dtype, 2
        return loss_sum / n
