"""Weight clipping (Elsayed, Lan, Lyle and Mahmood 2024): after every optimizer step each weight is
clipped to ±κ·s, s the scale of its initial distribution (here the normal init's standard deviation),
which keeps weights near the region where the network could learn from the start."""

from __future__ import annotations

import torch

from plasticity_ray.mitigations.init import init_scale
from plasticity_ray.spec import WeightClipping
from plasticity_ray.train.hooks import StepEnd


def clip(model, kappa: float) -> None:
    with torch.no_grad():
        for name, param in model.named_parameters():
            scale = init_scale(model, name)
            if scale is not None:
                param.clamp_(-kappa * scale, kappa * scale)


def hook(spec: WeightClipping):
    def on_step(event: StepEnd) -> None:
        clip(event.model, spec.kappa)

    return on_step
