"""The paper's training recipe as plain PyTorch, shared by the trainer and the probes.

AdamW (§IV-B: β = (0.9, 0.95), weight decay 0.1) with weight decay on the weight matrices and the
embeddings (every parameter of two or more dimensions) and none on biases and LayerNorm gains;
a linear warm-up over the first 5% of a task's steps, then a constant rate. Continual runs get a
fresh optimizer and a restarted warm-up at every task (§IV-B); stationary runs one warm-up of the
same length at the start and one optimizer throughout (§V-B). One step = gradient accumulation
over micro-batches.

`build` sets up the model the same way for everything that trains or measures one — the trainer,
the probes, the diagnostics and the bench: seeded initialisation, optional checkpoint weights, the
device, precision, micro-batch and compilation.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import torch
import torch.nn as nn

from plasticity_ray.data.tokenizers import tokenizer_class
from plasticity_ray.model.gpt import GPT, GPTConfig
from plasticity_ray.spec import ExperimentSpec
from plasticity_ray.storage import as_path
from plasticity_ray.train import checkpoint as checkpoints
from plasticity_ray.train.device import DeviceOps, micro_batch as search_micro_batch

def model_config(spec: ExperimentSpec) -> GPTConfig:
    tokenizer = tokenizer_class(spec.data.tokenizer)
    return GPTConfig.from_size(spec.model.resolved, tokenizer.vocab_size, spec.data.seq_len, spec.model.attention_sink,
                               spec.model.activation, spec.model.normalize_activations)


def compile_blocks(model: GPT) -> None:
    """torch.compile each transformer block in place (as torchtitan does): the bulk of the FLOPs,
    safe under DDP, and the chunked loss head stays eager."""
    for block in model.blocks:
        block.compile()


def default_device() -> torch.device:
    """The GPU when this process has one (Ray sets which for a task or worker), else the CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


@dataclass
class Engine:
    """A built model and how to run it."""

    model: GPT
    cfg: GPTConfig
    device: torch.device
    precision: Callable[[], contextlib.AbstractContextManager]
    micro_batch: int | None  # sequences per forward pass (None when `build` was given no rows)
    ops: DeviceOps


def build(spec: ExperimentSpec, device: torch.device, checkpoint: Path | str | None = None, rows: int = 0,
          compile: bool | None = None, attach: Sequence = (), ops: DeviceOps | None = None,
          gpu_share: float = 1.0) -> Engine:
    """The spec's model on `device`: initialised from the run's seed (the same on every rank and
    restart), with the weights of `checkpoint` when given; its precision context; the micro-batch
    for `rows` sequences per step (`batch.micro_batch`, or the largest that fits); then the hooks
    in `attach` attached (their forward hooks become part of the compiled graph) and the blocks
    compiled as `train.compile` says (`compile` overrides it: diagnostics hook into eager modules).
    `ops` says how to run on the device (default: `DeviceOps(device, gpu_share=gpu_share)`: the
    micro-batch search keeps to this process's share of the GPU)."""
    ops = ops or DeviceOps(device, gpu_share=gpu_share)
    ops.setup(spec.train.precision)
    cfg = model_config(spec)
    torch.manual_seed(spec.seed)
    model = GPT(cfg).to(device)
    if checkpoint is not None:
        checkpoints.load(as_path(checkpoint), model, cfg)
    precision = lambda: ops.autocast(spec.train.precision)  # noqa: E731
    micro_batch = None
    if rows:
        micro_batch = (search_micro_batch(model, rows, spec.data.seq_len, ops, precision)
                       if spec.batch.micro_batch == "auto" else min(spec.batch.micro_batch, rows))
    for hook in attach:
        hook.attach(model)
    if compile is None:
        compile = spec.train.compile is True or (spec.train.compile == "auto" and device.type == "cuda")
    if compile:
        compile_blocks(model)
    return Engine(model, cfg, device, precision, micro_batch, ops)


def make_optimizer(model: nn.Module, spec: ExperimentSpec, device: torch.device) -> torch.optim.AdamW:
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [
        {"params": [p for p in params if p.dim() >= 2], "weight_decay": spec.optimizer.weight_decay},
        {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(
        groups, lr=spec.lr, betas=spec.optimizer.betas, eps=spec.optimizer.eps, fused=DeviceOps(device).fused_adamw
    )


def lr_at(step: int, peak: float, warmup_steps: int) -> float:
    """Linear warm-up to `peak` over `warmup_steps` (step 0 runs at peak/warmup_steps), then constant."""
    if warmup_steps <= 0:
        return peak
    return peak * min(1.0, (step + 1) / warmup_steps)


def scheduled_lr(spec: ExperimentSpec, task_index: int, step: int) -> float:
    """The LR of step `step` (0-based) of task `task_index`: the warm-up counts from the task's start
    when it restarts per task, else from the run's start."""
    steps_done = step if spec.restarts_warmup else task_index * spec.steps_per_task + step
    return lr_at(steps_done, spec.lr, spec.warmup_steps)


def train_step(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    micro_batches: list[torch.Tensor],
    lr: float,
    grad_clip: float | None,
    precision_context=contextlib.nullcontext,
    after_backward: Callable[[torch.Tensor], None] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One optimizer step over rows of token ids (inputs = row[:-1], targets = row[1:]), split
    into micro-batches. Returns the mean loss and the gradient norm before clipping (detached).
    Under DDP, gradients are synchronised on the last micro-batch only. `after_backward` runs once
    the gradients are complete, before clipping, with the mean loss (penalties add their gradients there)."""
    for group in optimizer.param_groups:
        group["lr"] = lr
    n = len(micro_batches)
    total = torch.zeros((), device=micro_batches[0].device)
    for i, rows in enumerate(micro_batches):
        sync = i == n - 1 or not hasattr(model, "no_sync")
        with (contextlib.nullcontext() if sync else model.no_sync()), precision_context():
            loss = model(rows[:, :-1], targets=rows[:, 1:]) / n
        loss.backward()
        total += loss.detach()
    if after_backward is not None:
        after_backward(total)
    params = [p for group in optimizer.param_groups for p in group["params"]]
    grad_norm = torch.nn.utils.clip_grad_norm_(params, grad_clip if grad_clip else math.inf)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return total, grad_norm.detach()


@torch.no_grad()
def evaluate(model: nn.Module, rows: torch.Tensor, micro_batch: int, precision_context=contextlib.nullcontext) -> float:
    """Mean next-token loss over rows of token ids."""
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    for chunk in rows.split(micro_batch):
        with precision_context():
            total += model(chunk[:, :-1], targets=chunk[:, 1:]).item() * len(chunk)
        count += len(chunk)
    model.train(was_training)
    return total / count
