"""Attention entropy per head (§V-B): lazy heads attend almost uniformly, collapsed heads to very few
positions. For query position k (1-based) the attention spreads over k keys, so the largest mean
entropy over query positions first..last is H_max = mean of ln k (Eq. 5: 6.9215 for 256..2048)."""

from __future__ import annotations

import contextlib
import math

import torch

from plasticity_ray.model.gpt import GPT

LAZY_FRACTION = 0.9  # lazy: mean entropy > 0.9 · H_max
COLLAPSED_FRACTION = 0.1  # collapsed: mean entropy < 0.1 · H_max


def max_mean_entropy(first: int, last: int) -> float:
    """Eq. (5): (1 / (last − first + 1)) · Σ_{k=first}^{last} ln k."""
    return sum(math.log(k) for k in range(first, last + 1)) / (last - first + 1)


def entropy(probs: torch.Tensor) -> torch.Tensor:
    """−Σ p ln p over the last dimension, with 0 · ln 0 = 0."""
    return -(probs * torch.where(probs > 0, probs.log(), torch.zeros_like(probs))).sum(-1)


def classify(head_entropy: torch.Tensor, h_max: float) -> dict:
    heads = head_entropy.numel()
    lazy = int((head_entropy > LAZY_FRACTION * h_max).sum().item())
    collapsed = int((head_entropy < COLLAPSED_FRACTION * h_max).sum().item())
    return {"lazy_percent": 100.0 * lazy / heads, "collapsed_percent": 100.0 * collapsed / heads,
            "lazy": lazy, "collapsed": collapsed, "heads": heads}


@torch.no_grad()
def attention_entropy(model: GPT, rows: torch.Tensor, first_query: int = 256, micro_batch: int = 1,
                      precision=contextlib.nullcontext) -> dict:
    """Mean entropy per (layer, head) over the sequences and query positions first_query..T
    (1-based), the lazy/collapsed percentages, and H_max for that range."""
    inputs = rows[:, :-1]
    length = inputs.size(1)
    if not 1 <= first_query <= length:
        raise ValueError(f"first query position {first_query} is outside 1..{length}")
    sums = torch.zeros(len(model.blocks), model.cfg.heads, device=rows.device, dtype=torch.float64)

    def observe(layer: int, probs: torch.Tensor) -> None:
        per_query = entropy(probs[:, :, first_query - 1 :, :])  # B × H × queries
        sums[layer] += per_query.double().sum((0, 2))

    for chunk in inputs.split(micro_batch):
        with precision():
            model.hidden_states(chunk, attention_observer=observe)
    count = len(inputs) * (length - first_query + 1)
    per_head = (sums / count).float()
    h_max = max_mean_entropy(first_query, length)
    return {"h_max": h_max, "per_head": per_head.tolist(), **classify(per_head, h_max)}
