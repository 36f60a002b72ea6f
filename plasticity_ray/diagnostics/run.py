"""All the diagnostics a spec enables, on one model, on seeded random samples of the validation pools."""

from __future__ import annotations

import numpy as np
import torch

from pathlib import Path

from plasticity_ray.data.prepare import Prepared
from plasticity_ray.data.schedule import validation_sample
from plasticity_ray.diagnostics.attention import attention_entropy
from plasticity_ray.diagnostics.dormant import activation_dormancy, gradient_dormancy
from plasticity_ray.diagnostics.weights import average_magnitude, model_ranks, relative_distance
from plasticity_ray.model.gpt import GPT
from plasticity_ray.spec import ExperimentSpec
from plasticity_ray.train.device import DeviceOps
from plasticity_ray.train.recipe import build, default_device


def _validation(spec: ExperimentSpec, prepared: Prepared, language: str, count: int, device: torch.device) -> torch.Tensor:
    return torch.from_numpy(validation_sample(spec, prepared, language, count).astype(np.int64)).to(device)


def diagnose(spec: ExperimentSpec, prepared: Prepared, model: GPT, previous: dict | None = None) -> dict:
    """One entry per enabled diagnostic; `previous` is the state dict of the previous probe point
    (weight_distance is None without one)."""
    d = spec.diagnostics
    device = next(model.parameters()).device
    precision = lambda: DeviceOps(device).autocast(spec.train.precision)  # noqa: E731
    model.eval()
    out: dict = {}
    if "weight_magnitude" in d.enabled:
        out["weight_magnitude"] = average_magnitude(model)
    if "weight_distance" in d.enabled:
        out["weight_distance"] = relative_distance(model, previous) if previous is not None else None
    if "matrix_rank" in d.enabled:
        ranks = model_ranks(model)
        out["matrix_rank"] = {
            "mean_stable_rank": float(np.mean([r["stable_rank"] for r in ranks.values()])),
            "mean_effective_rank": float(np.mean([r["effective_rank"] for r in ranks.values()])),
            "per_matrix": ranks,
        }
    if {"dormant_units", "grama"} & set(d.enabled):
        rows = _validation(spec, prepared, spec.data.probe_language, d.dormant_sequences, device)
        if "dormant_units" in d.enabled:
            out["dormant_units"] = activation_dormancy(model, rows, d.dormant_threshold, precision=precision)
        if "grama" in d.enabled:
            out["grama"] = gradient_dormancy(model, rows, d.dormant_threshold, precision=precision)
    if "attention_entropy" in d.enabled:
        rows = _validation(spec, prepared, d.entropy_language, d.entropy_sequences, device)
        out["attention_entropy"] = attention_entropy(model, rows, d.entropy_first_query, precision=precision)
    return out


def diagnose_checkpoint(spec: ExperimentSpec, prepared: Prepared, path: Path, previous: Path | None = None,
                        device: torch.device | None = None) -> dict:
    """`diagnose` on a checkpoint (and the previous probe point's, for weight_distance), on `device`
    (default: the GPU when there is one). Eager modules: the diagnostics hook into them."""
    device = device or default_device()
    model = build(spec, device, path, compile=False).model
    before = build(spec, device, previous, compile=False).model.state_dict() if previous is not None else None
    return {**diagnose(spec, prepared, model, before), "device": str(device)}


def format_diagnostics(result: dict) -> str:
    """One line per diagnostic, without its per-layer and per-head arrays."""
    lines = []
    for name, value in result.items():
        if isinstance(value, dict):
            value = {k: v for k, v in value.items() if not isinstance(v, (list, dict))}
        lines.append(f"{name}: {value}")
    return "\n".join(lines)
