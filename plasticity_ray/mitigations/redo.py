"""ReDo, Recycling Dormant neurons (Sokar, Agarwal, Castro and Evci 2023): every N steps each MLP
unit is scored on the step's batch by Eqs. (3)-(4) — its mean |GeLU output| divided by its layer's
mean — and units scoring ≤ τ are recycled: incoming weights and bias re-drawn from the
initialisation, outgoing weights set to zero (so the network's function is unchanged), and the Adam
moments of all of those entries zeroed (stale moments would push the unit straight back)."""

from __future__ import annotations

import torch
import torch.distributed as dist

from plasticity_ray.diagnostics.dormant import activation_means, dormant_masks_from_means
from plasticity_ray.mitigations.init import fresh_like, generator
from plasticity_ray.spec import ReDo
from plasticity_ray.train.hooks import StepEnd


def dormant_masks(model, rows: torch.Tensor, threshold: float) -> list[torch.Tensor]:
    """Per layer, which units score ≤ threshold; statistics averaged over DDP ranks first."""
    means = activation_means(model, rows)
    if dist.is_available() and dist.is_initialized():
        stacked = torch.stack(means)
        dist.all_reduce(stacked)
        means = list(stacked / dist.get_world_size())
    return dormant_masks_from_means(means, threshold)


def zero_moments(optimizer, param: torch.Tensor, index, dim: int) -> None:
    state = optimizer.state.get(param, {})
    for key in ("exp_avg", "exp_avg_sq"):
        if key in state:
            state[key].index_fill_(dim, index, 0.0)


def reinitialise_units(model, optimizer, layer: int, index: torch.Tensor, g: torch.Generator) -> None:
    """Fresh incoming weights and zero bias for MLP units `index` of `layer`, zero outgoing weights,
    and zeroed Adam moments for all of them: the network's function is unchanged."""
    block = model.blocks[layer]
    fc, proj = block.mlp.fc, block.mlp.proj
    with torch.no_grad():
        name = f"blocks.{layer}.mlp.fc.weight"
        fc.weight[index] = fresh_like(model, name, (index.numel(), fc.weight.size(1)), fc.weight, g)
        fc.bias[index] = 0.0
        proj.weight[:, index] = 0.0
    zero_moments(optimizer, fc.weight, index, 0)
    zero_moments(optimizer, fc.bias, index, 0)
    zero_moments(optimizer, proj.weight, index, 1)


def recycle(model, optimizer, masks: list[torch.Tensor], g: torch.Generator) -> int:
    """Reinitialise the masked units; returns how many."""
    total = 0
    for layer, mask in enumerate(masks):
        index = mask.nonzero().flatten()
        if index.numel():
            reinitialise_units(model, optimizer, layer, index, g)
            total += index.numel()
    return total


def hook(spec: ReDo, seed: int):
    def on_step(event: StepEnd) -> dict | None:
        if (event.global_step + 1) % spec.every:
            return None
        masks = dormant_masks(event.model, event.rows, spec.threshold)
        device = next(event.model.parameters()).device
        return {"redo_recycled": recycle(event.model, event.optimizer, masks, generator(device, seed, 2, event.global_step))}

    return on_step
