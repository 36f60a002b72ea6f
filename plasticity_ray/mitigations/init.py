"""Fresh initial values for (parts of) parameters, drawn from the model's own initialisation."""

from __future__ import annotations

import torch

from plasticity_ray.model.gpt import GPT


def generator(device: torch.device, *seeds: int) -> torch.Generator:
    """The same stream on every rank and every re-run for the same seeds."""
    g = torch.Generator(device=device)
    g.manual_seed(hash(tuple(seeds)) % (2**63))
    return g


def fresh_like(model: GPT, name: str, shape: torch.Size, like: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    kind, value = model.initialisation(name)
    if kind == "normal":
        return torch.randn(shape, generator=g, device=like.device, dtype=torch.float32).mul_(value).to(like.dtype)
    return torch.full(shape, value, device=like.device, dtype=like.dtype)


def init_scale(model: GPT, name: str) -> float | None:
    """The standard deviation of a normally initialised parameter; None for constants."""
    kind, value = model.initialisation(name)
    return value if kind == "normal" else None
