"""Normalize-and-Project (Lyle, Zheng, Khetarpal, Martens, van Hasselt, Pascanu and Dabney, NeurIPS
2024): with a normalization before each nonlinearity (`model.normalize_activations`), the layers that
feed one are scale-invariant, and the growth of their norm only shrinks their effective learning
rate (under Adam, lr/‖θ_l‖). After every update each of them is projected back to the norm it was
initialised with, θ_l ← ‖θ_l,0‖·θ_l/‖θ_l‖ (weights and bias together: LN(c·(Wx + b)) = LN(Wx + b)),
so the function is unchanged and the effective learning rate stays the explicit schedule's — the
paper's constant-ELR reparameterisation for nonstationary training. Its layer-wise LR rescaling
serves to reproduce an unnormalised network's implicit decay; removing that decay is the point here,
so it is not applied. The layers: each block's MLP up projection and the query and key thirds of its
attention input projection. Norms come from the model as initialised from the run's seed (nothing stored)."""

from __future__ import annotations

import torch

from plasticity_ray.train.hooks import StepEnd


def projected_layers(model) -> list[list[torch.Tensor]]:
    """Each projected layer as the views of its weight rows and bias that are scaled together."""
    layers = []
    for block in model.blocks:
        d = block.attn.proj.out_features
        qkv = block.attn.qkv
        layers.append([block.mlp.fc.weight, block.mlp.fc.bias])
        for third in (slice(0, d), slice(d, 2 * d)):  # queries, keys (values feed no normalization)
            layers.append([qkv.weight[third], qkv.bias[third]])
    return layers


def layer_norm(parts: list[torch.Tensor]) -> torch.Tensor:
    return torch.sqrt(sum(p.detach().float().pow(2).sum() for p in parts))


class NormalizeAndProjectHook:
    def __init__(self):
        self.initial: list[torch.Tensor] = []

    def attach(self, model) -> None:
        self.initial = [layer_norm(parts) for parts in projected_layers(model)]

    def __call__(self, event: StepEnd) -> None:
        with torch.no_grad():
            for parts, radius in zip(projected_layers(event.model), self.initial):
                scale = radius / layer_norm(parts)
                for part in parts:
                    part.mul_(scale.to(part.dtype))
