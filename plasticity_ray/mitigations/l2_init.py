"""L2 Init, regenerative regularization (Kumar, Marklund and Van Roy 2024): the loss gets
λ·‖θ − θ₀‖² over every parameter, θ₀ the run's initial weights; its gradient 2λ(θ − θ₀) is added to
the step's averaged gradients (the same on every DDP rank). θ₀ is the model as `build` initialised
it from the run's seed, so a resumed run regularises towards the same weights without storing them."""

from __future__ import annotations

import torch

from plasticity_ray.spec import L2Init
from plasticity_ray.train.hooks import Gradients


class L2InitHook:
    def __init__(self, spec: L2Init):
        self.strength = spec.strength
        self.initial: list[torch.Tensor] = []

    def attach(self, model) -> None:
        self.initial = [param.detach().clone() for param in model.parameters()]

    def __call__(self, event: Gradients) -> None:
        with torch.no_grad():
            for param, initial in zip(event.model.parameters(), self.initial):
                if param.grad is not None:
                    param.grad.add_(param - initial, alpha=2 * self.strength)
