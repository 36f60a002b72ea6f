"""Active forgetting (Chen, Marchisio, Raileanu, Adelani, Stenetorp, Riedel and Artetxe 2023,
"Improving Language Plasticity via Pretraining with Active Forgetting"): every K updates the token
embeddings are re-drawn from their initialisation and their optimizer state cleared (AdamW starts
them again from step 0). Our embedding is also the output head (tied, as RoBERTa's in the paper),
so the head is reset with it; the position embeddings are kept.

The reset control is the extreme of the same act, used as a negative control: at the start of
every task after the first, every parameter is re-drawn and all optimizer state cleared."""

from __future__ import annotations

import torch

from plasticity_ray.mitigations.init import fresh_like, generator
from plasticity_ray.spec import ActiveForgetting
from plasticity_ray.train.hooks import StepEnd, TaskStart


def redraw(model, optimizer, names: set[str] | None, g: torch.Generator) -> None:
    """Parameters `names` (None: all) re-drawn from their initialisation, their optimizer state dropped."""
    with torch.no_grad():
        for name, param in model.named_parameters():
            if names is None or name in names:
                param.copy_(fresh_like(model, name, param.shape, param, g))
                optimizer.state.pop(param, None)


def active_forgetting(spec: ActiveForgetting, seed: int):
    def on_step(event: StepEnd) -> dict | None:
        if (event.global_step + 1) % spec.every:
            return None
        device = next(event.model.parameters()).device
        redraw(event.model, event.optimizer, {"wte.weight"}, generator(device, seed, 6, event.global_step))
        return {"embeddings_reset": 1}

    return on_step


def reset_control(seed: int):
    def on_task_start(event: TaskStart) -> dict | None:
        if event.task.index == 0:
            return None  # the model is freshly initialised already
        device = next(event.model.parameters()).device
        redraw(event.model, event.optimizer, None, generator(device, seed, 7, event.task.index))
        return {"model_resets": 1}

    return on_task_start
