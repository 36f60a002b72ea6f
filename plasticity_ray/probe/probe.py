"""One probe (§III, §IV-A): a copy of the model trained on the probe language with the same recipe
as a task — fresh AdamW, the same LR and warm-up steps, the same batch — for `probe.tokens` on its own
random subsample of the probe pool, evaluated on a seeded random sample of the validation pool at
step 0 and every `probe.eval_every` steps (and the last). Nothing is written back.

AUC = trapezoidal area under validation loss vs. probe step, divided by the step span, so it is in
loss units (Table III's ~3.0). By default it covers the evaluations made during probe training
(§IV-A measures "how efficiently the model learned during probing"); the step-0 evaluation,
zero-shot transfer before any learning, stays in the curve and enters the AUC only with
`probe.auc_includes_step0`. A probe of a freshly initialised model is the "probe language alone"
baseline of Appendix B.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from plasticity_ray.data.prepare import Prepared
from plasticity_ray.data.schedule import probe_draw, validation_sample
from plasticity_ray.data.shards import Unit
from plasticity_ray.spec import ExperimentSpec
from plasticity_ray.train.recipe import Engine, build, default_device, evaluate, lr_at, make_optimizer, train_step

READ_BLOCK_ROWS = 4096  # probe rows read at a time (a few shuffle windows)


def area_under_curve(steps: list[int], losses: list[float]) -> float:
    """Trapezoidal area under loss vs. step, divided by the span of steps."""
    if len(steps) < 2 or steps[-1] == steps[0]:
        raise ValueError("an AUC needs at least two evaluations at different steps")
    area = sum((b - a) * (la + lb) / 2 for a, b, la, lb in zip(steps, steps[1:], losses, losses[1:]))
    return area / (steps[-1] - steps[0])


def probe_auc(curve: list[tuple[int, float]], includes_step0: bool) -> float:
    """The AUC of a probe's (step, validation loss) curve, with or without its step-0 point; a probe
    too short for a second evaluation during training gets its one loss (a curve's mean height)."""
    points = curve if includes_step0 else [(s, v) for s, v in curve if s > 0]
    if len(points) == 1:
        return points[0][1]
    return area_under_curve([s for s, _ in points], [v for _, v in points])


def _batches(unit: Unit, rows: np.ndarray, batch: int):
    block = max(batch, READ_BLOCK_ROWS // batch * batch)
    for start in range(0, len(rows), block):
        ids = unit.take(rows[start : start + block])
        yield from (ids[i : i + batch] for i in range(0, len(ids), batch))


def _probe_curve(engine: Engine, spec: ExperimentSpec, prepared: Prepared, validation: torch.Tensor,
                 probe_index: int, replicate: int) -> list[tuple[int, float]]:
    """Train `engine.model` (modified in place) on one probe draw; its (step, validation loss) curve."""
    model, micro, precision, device = engine.model, engine.micro_batch, engine.precision, validation.device
    optimizer = make_optimizer(model, spec, device)
    steps, every = spec.probe_steps, spec.probe.eval_every
    unit = prepared.unit(spec.data.probe_language, "train")
    curve = [(0, evaluate(model, validation, micro, precision))]
    model.train()
    batches = _batches(unit, probe_draw(spec, prepared, probe_index, replicate), spec.global_sequences)
    for step, ids in zip(range(steps), batches):
        rows = torch.from_numpy(ids.astype(np.int64)).to(device)
        train_step(model, optimizer, list(rows.split(micro)), lr_at(step, spec.lr, spec.warmup_steps),
                   spec.optimizer.grad_clip, precision)
        if (step + 1) % every == 0 or step + 1 == steps:
            curve.append((step + 1, evaluate(model, validation, micro, precision)))
    return curve


def run_probe(spec: ExperimentSpec, prepared: Prepared, checkpoint_path: Path | None, probe_index: int = 0,
              device: torch.device | None = None) -> dict:
    """Probe the model at `checkpoint_path` (None: a freshly initialised model, the baseline) on
    `device` (default: the GPU when there is one), `probe.replicates` times from the same weights,
    each replicate on its own probe-data draw. `auc` and `curve` are the replicates' means."""
    device = device or default_device()
    engine = build(spec, device, checkpoint_path, rows=spec.global_sequences, gpu_share=spec.resources.probe_gpus)
    start = {k: v.detach().clone() for k, v in engine.model.state_dict().items()}
    ids = validation_sample(spec, prepared, spec.data.probe_language, spec.probe.eval_sequences)
    validation = torch.from_numpy(ids.astype(np.int64)).to(device)
    curves = []
    for replicate in range(spec.probe.replicates):
        if replicate:
            engine.model.load_state_dict(start)
        curves.append(_probe_curve(engine, spec, prepared, validation, probe_index, replicate))
    aucs = [probe_auc(curve, spec.probe.auc_includes_step0) for curve in curves]
    mean_curve = [(step, float(np.mean([c[i][1] for c in curves]))) for i, (step, _) in enumerate(curves[0])]
    return {
        "auc": float(np.mean(aucs)),
        "replicate_aucs": aucs,
        "auc_from_step": 0 if spec.probe.auc_includes_step0 else mean_curve[1][0],
        "curve": [{"step": s, "val_loss": v} for s, v in mean_curve],
        "replicate_curves": [[v for _, v in curve] for curve in curves],
        "steps": spec.probe_steps, "eval_sequences": len(validation), "probe_index": probe_index,
        "final_val_loss": mean_curve[-1][1], "checkpoint": str(checkpoint_path) if checkpoint_path else None,
        "device": str(device),
    }


def format_probe(result: dict) -> str:
    aucs = result["replicate_aucs"]
    spread = f" (mean of {len(aucs)} replicates: {', '.join(f'{a:.4f}' for a in aucs)})" if len(aucs) > 1 else ""
    lines = [f"AUC {result['auc']:.4f}{spread} over {result['steps']} probe steps ({result['eval_sequences']} "
             "validation rows)"]
    lines += [f"  step {point['step']:>6}  val loss {point['val_loss']:.4f}" for point in result["curve"]]
    return "\n".join(lines)
