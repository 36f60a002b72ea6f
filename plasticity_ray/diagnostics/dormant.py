"""Dormant MLP units: by activation (Sokar et al. 2023, Eqs. 3-4 of the paper) and by gradient
magnitude (GraMa). A unit's score is its mean absolute activation (or gradient) over every token
of the sequences given, divided by its layer's mean score; it is dormant when the score ≤ ε."""

from __future__ import annotations

import contextlib

import torch

from plasticity_ray.model.gpt import GPT


def dormant_masks_from_means(per_layer: list[torch.Tensor], threshold: float) -> list[torch.Tensor]:
    """Eqs. (3)-(4): per layer, which units' mean |statistic| ÷ the layer's mean is ≤ `threshold`."""
    masks = []
    for mean_abs in per_layer:
        layer_mean = mean_abs.mean()
        score = mean_abs / layer_mean if layer_mean > 0 else torch.zeros_like(mean_abs)
        masks.append(score <= threshold)
    return masks


def _scores_to_result(per_layer: list[torch.Tensor], threshold: float) -> dict:
    layers = dormant_masks_from_means(per_layer, threshold)
    dormant = [int(d.sum().item()) for d in layers]
    units = [d.numel() for d in layers]
    return {
        "percent": 100.0 * sum(dormant) / sum(units),
        "per_layer_percent": [100.0 * d / n for d, n in zip(dormant, units)],
        "dormant": dormant,
        "units": units,
    }


def _batches(rows: torch.Tensor, micro_batch: int):
    for chunk in rows.split(micro_batch):
        yield chunk[:, :-1], chunk[:, 1:]


@torch.no_grad()
def activation_means(model: GPT, rows: torch.Tensor, micro_batch: int = 8,
                     precision=contextlib.nullcontext) -> list[torch.Tensor]:
    """Eq. (3) per layer: h̄ = mean |activation| of every MLP unit (each GeLU output; each sine and cosine
    of Fourier features) over sequences and positions."""
    sums = [torch.zeros(block.mlp.proj.in_features, device=rows.device) for block in model.blocks]
    tokens = 0

    def accumulate(i):
        def hook(module, inputs, output) -> None:  # returns None: the output itself is left alone
            sums[i].add_(output.float().abs().sum((0, 1)))
        return hook

    handles = [block.mlp.act.register_forward_hook(accumulate(i)) for i, block in enumerate(model.blocks)]
    try:
        for inputs, _ in _batches(rows, micro_batch):
            with precision():
                model.hidden_states(inputs)
            tokens += inputs.numel()
    finally:
        for h in handles:
            h.remove()
    return [s / tokens for s in sums]


def activation_dormancy(model: GPT, rows: torch.Tensor, threshold: float = 0.01, micro_batch: int = 8,
                        precision=contextlib.nullcontext) -> dict:
    """Eq. (4): s = h̄ / layer mean; dormant when s ≤ threshold."""
    return _scores_to_result(activation_means(model, rows, micro_batch, precision), threshold)


def gradient_dormancy(model: GPT, rows: torch.Tensor, threshold: float = 0.01, micro_batch: int = 8,
                      precision=contextlib.nullcontext) -> dict:
    """GraMa: the same score with |∂loss/∂h| in place of |h| (gradients of the next-token loss)."""
    sums = [torch.zeros(block.mlp.proj.in_features, device=rows.device) for block in model.blocks]
    tokens = 0

    def keep_grad(i):
        def accumulate(grad: torch.Tensor) -> None:  # returns None: the gradient itself is left alone
            sums[i].add_(grad.float().abs().sum((0, 1)))

        def hook(module, inputs, output):
            output.register_hook(accumulate)
        return hook

    handles = [block.mlp.act.register_forward_hook(keep_grad(i)) for i, block in enumerate(model.blocks)]
    was_training = model.training
    model.eval()
    try:
        for inputs, targets in _batches(rows, micro_batch):
            with precision():
                loss = model(inputs, targets=targets)
            loss.backward()
            tokens += inputs.numel()
    finally:
        for h in handles:
            h.remove()
        model.zero_grad(set_to_none=True)
        model.train(was_training)
    return _scores_to_result([s / tokens for s in sums], threshold)
