"""Spectral regularization (Lewandowski, Bortkiewicz, Kumar, György, Schuurmans, Ostaszewski and
Machado 2025): the loss gets λ·Σ_W (σ(W)^k − σ₀(W)^k)² over the transformer blocks' weight matrices,
σ(W) the largest singular value and σ₀(W) its value at initialisation (the paper keeps σ near one,
the value its initialisations start from; GPT-2's starts near 0.5, and the issue's reading — near
its initial value — keeps each matrix where training began).

σ comes from power iteration carried from update to update (`power_iterations` per update, as
spectral normalisation does), so its singular vectors u, v are part of the checkpoint; the
gradient of the penalty is 2λ(σ^k − σ₀^k)·kσ^(k−1)·u vᵀ, added to the step's averaged gradients.
Embeddings (also the output head), biases and LayerNorm gains are left alone."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from plasticity_ray.mitigations.init import generator
from plasticity_ray.spec import SpectralRegularization
from plasticity_ray.train.hooks import Gradients


def regularised(model) -> list[tuple[str, torch.nn.Parameter]]:
    return [(name, p) for name, p in model.named_parameters() if name.startswith("blocks.") and p.dim() == 2]


def power_iteration(weight: torch.Tensor, u: torch.Tensor, v: torch.Tensor, steps: int):
    """`steps` rounds from (u, v); returns the new u, v and σ = uᵀWv."""
    for _ in range(steps):
        v = F.normalize(weight.t() @ u, dim=0)
        u = F.normalize(weight @ v, dim=0)
    return u, v, u @ weight @ v


class SpectralRegularizationHook:
    def __init__(self, spec: SpectralRegularization, seed: int):
        self.spec, self.seed = spec, seed
        self.u: dict[str, torch.Tensor] = {}
        self.v: dict[str, torch.Tensor] = {}
        self.initial: dict[str, float] = {}  # σ₀, from the initial weights at every attach (not checkpointed)

    def attach(self, model) -> None:
        device = next(model.parameters()).device
        g = generator(device, self.seed, 5)
        for name, weight in regularised(model):
            w = weight.detach().float()
            self.initial[name] = torch.linalg.matrix_norm(w, ord=2).item()
            u = F.normalize(torch.randn(w.size(0), generator=g, device=device), dim=0)
            self.u[name], self.v[name] = u, F.normalize(w.t() @ u, dim=0)

    def __call__(self, event: Gradients) -> None:
        spec, k = self.spec, self.spec.exponent
        with torch.no_grad():
            for name, weight in regularised(event.model):
                u, v, sigma = power_iteration(weight.detach().float(), self.u[name], self.v[name], spec.power_iterations)
                self.u[name], self.v[name] = u, v
                scale = 2 * spec.strength * (sigma**k - self.initial[name] ** k) * k * sigma ** (k - 1)
                weight.grad.add_((scale * torch.outer(u, v)).to(weight.grad.dtype))

    def state_dict(self) -> dict:
        return {"u": {n: t.tolist() for n, t in self.u.items()}, "v": {n: t.tolist() for n, t in self.v.items()}}

    def load_state_dict(self, state: dict, device: torch.device) -> None:
        self.u = {n: torch.tensor(x, dtype=torch.float32, device=device) for n, x in state["u"].items()}
        self.v = {n: torch.tensor(x, dtype=torch.float32, device=device) for n, x in state["v"].items()}
