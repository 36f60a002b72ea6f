"""Weight diagnostics: average magnitude (§V-B), distance travelled, and matrix ranks."""

from __future__ import annotations

import torch

from plasticity_ray.model.gpt import GPT


@torch.no_grad()
def average_magnitude(model: GPT) -> float:
    """Mean |θ| over every non-embedding parameter, weights and biases together: one global mean,
    not a mean of per-layer means (§V-B)."""
    params = model.non_embedding_parameters()
    total = sum(p.abs().sum().item() for p in params)
    return total / sum(p.numel() for p in params)


@torch.no_grad()
def relative_distance(model: GPT, previous: dict[str, torch.Tensor]) -> float:
    """‖θ − θ_prev‖ / ‖θ_prev‖ over the non-embedding parameters, θ_prev a state dict."""
    names = {id(p): n for n, p in model.named_parameters()}
    diff = norm = 0.0
    for p in model.non_embedding_parameters():
        old = previous[names[id(p)]].to(p.device, p.dtype)
        diff += (p - old).pow(2).sum().item()
        norm += old.pow(2).sum().item()
    return (diff / norm) ** 0.5


@torch.no_grad()
def matrix_ranks(matrix: torch.Tensor) -> dict[str, float]:
    """Stable rank ‖W‖²_F / ‖W‖²_2 and effective rank exp(H(σ/Σσ)) (Roy & Vetterli, 2007)."""
    sigma = torch.linalg.svdvals(matrix.float())
    stable = (sigma.pow(2).sum() / sigma[0].pow(2)).item() if sigma[0] > 0 else 0.0
    p = sigma / sigma.sum() if sigma.sum() > 0 else sigma
    p = p[p > 0]
    effective = torch.exp(-(p * p.log()).sum()).item() if len(p) else 0.0
    return {"stable_rank": stable, "effective_rank": effective}


def model_ranks(model: GPT) -> dict[str, dict[str, float]]:
    """Ranks of every weight matrix of the transformer blocks, by parameter name."""
    return {
        name: matrix_ranks(p)
        for name, p in model.named_parameters()
        if p.dim() == 2 and name.startswith("blocks.")
    }
