"""Everything that differs between a GPU and a CPU, in one place that the CPU tests pass through
too: the fused AdamW kernel, TF32 matmuls, autocast, and the memory the micro-batch search sizes
on.

The micro-batch search measures the peak memory of a real forward and backward of that many
sequences, with the weights and gradients in place, adds the AdamW state the step will allocate (two
fp32 tensors per parameter; it does not exist yet when the search runs), and keeps
`MEMORY_HEADROOM` of the budget free for what one measurement misses (allocator fragmentation, the
optimizer's temporaries). It measures the eager model before hooks are attached: hooks would
count the trial passes as training, and the compiled blocks, which fuse and free activations
earlier, need no more than the eager ones.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Callable

import torch

from plasticity_ray.errors import ResourceError

MEMORY_HEADROOM = 0.10
CPU_MICRO_BATCH_TOKENS = 2**16  # CPU memory is not the limit; this keeps a CPU step's activations modest


def memory_budget(free: int, total: int, gpu_share: float) -> int:
    """Bytes a process may plan for: what is free, but no more than its share of the whole GPU (the
    rest belongs to the processes Ray placed beside it, which may not have allocated yet)."""
    return int(min(free, total * min(1.0, gpu_share)))


@dataclass
class DeviceOps:
    """How to run on `device`. `gpu_share` is the fraction of the GPU this process was given (Ray's
    `resources.gpus_per_worker` or `probe_gpus`): the search sizes on at most that share of the GPU's
    memory, so a trainer and a probe sharing one GPU leave each other room. `budget_bytes` overrides
    the memory the search sizes on (tests inject one; None: as above on GPU, a token budget on CPU)."""

    device: torch.device
    budget_bytes: int | None = None
    gpu_share: float = 1.0

    @property
    def is_gpu(self) -> bool:
        return self.device.type == "cuda"

    @property
    def fused_adamw(self) -> bool:
        return self.is_gpu

    def setup(self, precision: str) -> None:
        """TF32 for fp32 matmuls on GPU (bf16 autocast leaves few), unless exact fp32 is asked for."""
        if self.is_gpu:
            torch.backends.cuda.matmul.allow_tf32 = precision != "fp32"
            torch.backends.cudnn.allow_tf32 = precision != "fp32"

    def autocast(self, precision: str):
        """bf16 autocast on GPU unless fp32 is asked for; fp32 on CPU unless bf16 is asked for."""
        if precision == "bf16" or (precision == "auto" and self.is_gpu):
            return torch.autocast(self.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def free_memory(self) -> int | None:
        if self.budget_bytes is not None:
            return self.budget_bytes
        if self.is_gpu:
            return memory_budget(*torch.cuda.mem_get_info(self.device), self.gpu_share)
        return None

    def reset_peak(self) -> None:
        if self.is_gpu:
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(self.device)

    def peak_bytes(self) -> int | None:
        return torch.cuda.max_memory_allocated(self.device) if self.is_gpu else None

    def synchronize(self) -> None:
        if self.is_gpu:
            torch.cuda.synchronize(self.device)


def search_micro_batch(rows: int, peak_of: Callable[[int], int], limit: int) -> int:
    """The largest divisor d of `rows` whose `peak_of(d)` (bytes; may raise torch.OutOfMemoryError)
    stays within `limit`. Memory grows with d, so a binary search over the divisors: log₂ of their
    number tries."""
    divisors = [d for d in range(1, rows + 1) if rows % d == 0]
    low, high, best = 0, len(divisors) - 1, None
    while low <= high:
        middle = (low + high) // 2
        try:
            fits = peak_of(divisors[middle]) <= limit
        except torch.OutOfMemoryError:
            fits = False
        if fits:
            best, low = divisors[middle], middle + 1
        else:
            high = middle - 1
    if best is None:
        raise ResourceError(f"not even one sequence fits in the {limit / 2**30:.2f} GiB left for it: use a smaller "
                            "model or data.seq_len, or a device with more memory")
    return best


def optimizer_state_bytes(model: torch.nn.Module) -> int:
    """What AdamW allocates at its first step: exp_avg and exp_avg_sq, fp32, per parameter."""
    return sum(2 * 4 * p.numel() for p in model.parameters() if p.requires_grad)


def micro_batch(model: torch.nn.Module, rows: int, seq_len: int, ops: DeviceOps, precision: Callable,
                measure: Callable[[int], int] | None = None) -> int:
    """Sequences per forward pass for a step of `rows` sequences: on GPU the largest divisor whose
    measured peak plus the optimizer state fits within the free memory less the headroom; on CPU the
    largest within a token budget. `measure(d)` replaces the device's peak-memory reading (with an
    injected `ops.budget_bytes`, the tests run the search's real passes on CPU)."""
    budget = ops.free_memory()
    if budget is None or (measure is None and not ops.is_gpu):
        return next(d for d in range(rows, 0, -1) if rows % d == 0 and (d * seq_len <= CPU_MICRO_BATCH_TOKENS or d == 1))
    state = optimizer_state_bytes(model)

    def peak_of(count: int) -> int:
        ops.reset_peak()
        try:
            ids = torch.zeros(count, seq_len + 1, dtype=torch.long, device=ops.device)
            with precision():
                loss = model(ids[:, :-1], targets=ids[:, 1:])
            loss.backward()
            ops.synchronize()
            measured = measure(count) if measure else ops.peak_bytes()
        finally:
            model.zero_grad(set_to_none=True)
        return measured + state

    return search_micro_batch(rows, peak_of, int(budget * (1 - MEMORY_HEADROOM)))
