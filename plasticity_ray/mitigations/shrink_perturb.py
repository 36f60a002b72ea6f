"""Shrink and Perturb (Ash and Adams 2020): at the end of every task, θ ← λ·θ + σ·θ₀, with θ₀ a
fresh draw from the model's initialisation. λ = 1, σ = 0 is the identity."""

from __future__ import annotations

import torch

from plasticity_ray.mitigations.init import fresh_like, generator
from plasticity_ray.spec import ShrinkPerturb
from plasticity_ray.train.hooks import TaskEnd


def shrink_perturb(model, shrink: float, noise: float, g: torch.Generator) -> None:
    with torch.no_grad():
        for name, param in model.named_parameters():
            param.mul_(shrink)
            if noise:
                param.add_(fresh_like(model, name, param.shape, param, g), alpha=noise)


def hook(spec: ShrinkPerturb, seed: int):
    def on_task_end(event: TaskEnd) -> None:
        device = next(event.model.parameters()).device
        shrink_perturb(event.model, spec.shrink, spec.noise, generator(device, seed, 1, event.task.index))

    return on_task_end
