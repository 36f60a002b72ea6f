"""The micro-batch search, on CPU through an injected memory budget: it sizes on real passes plus
the optimizer state, keeps its headroom, survives out-of-memory tries and says when nothing fits."""

import pytest
import torch

from plasticity_ray.model.gpt import GPT, GPTConfig
from plasticity_ray.errors import ResourceError
from plasticity_ray.train.device import (
    MEMORY_HEADROOM, DeviceOps, memory_budget, micro_batch, optimizer_state_bytes, search_micro_batch,
)


def test_the_search_takes_the_largest_divisor_within_the_limit_in_few_tries():
    tries = []

    def peak_of(d):
        tries.append(d)
        return 100 + 10 * d

    assert search_micro_batch(64, peak_of, limit=500) == 32  # 100 + 10·32 = 420; 64 would need 740
    assert len(tries) <= 3  # binary search over the 7 divisors of 64


def test_an_out_of_memory_try_counts_as_not_fitting():
    def peak_of(d):
        if d > 8:
            raise torch.OutOfMemoryError("CUDA out of memory")
        return d

    assert search_micro_batch(96, peak_of, limit=10**9) == 8


def test_nothing_fits_is_a_resource_error_naming_the_budget():
    with pytest.raises(ResourceError, match="not even one sequence fits in the 0.00 GiB"):
        search_micro_batch(8, lambda d: 10**6, limit=1000)


def test_the_search_runs_real_passes_and_counts_the_optimizer_state():
    torch.manual_seed(0)
    model = GPT(GPTConfig(layers=1, hidden=64, vocab_size=320, context=32))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    per_row = 1000
    state = optimizer_state_bytes(model)
    assert state == 8 * sum(p.numel() for p in model.parameters())
    passes = []

    def measure(d):  # the device's peak reading, injected: grows with the rows of the pass just run
        assert all(p.grad is not None for p in model.parameters())  # a real backward ran
        passes.append(d)
        return per_row * d

    # Room for 16 rows with the optimizer state once the headroom is kept, not for 32.
    budget = int((state + 16 * per_row) / (1 - MEMORY_HEADROOM)) + 1
    ops = DeviceOps(torch.device("cpu"), budget_bytes=budget)
    assert micro_batch(model, 64, 32, ops, lambda: torch.autocast("cpu", enabled=False), measure) == 16
    assert 16 in passes and 32 in passes
    assert all(p.grad is None for p in model.parameters())  # nothing left behind
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # weights untouched
    # Without an injected budget a CPU keeps its token rule: 2**16 tokens per pass.
    assert micro_batch(model, 4096, 32, DeviceOps(torch.device("cpu")), lambda: torch.autocast("cpu", enabled=False)) == 2048


def test_a_process_sharing_a_gpu_sizes_on_its_share():
    """On GPU the budget is the free memory, at most the process's share of the whole (a trainer and
    a probe on 0.5 GPU each); the CPU has no such budget unless one is injected."""
    assert DeviceOps(torch.device("cpu"), gpu_share=0.5).free_memory() is None
    assert DeviceOps(torch.device("cpu"), budget_bytes=123).free_memory() == 123
    gib = 2**30
    # An 80 GiB GPU shared half and half: 70 GiB free still gives this process 40; with 30 GiB free
    # (its neighbour has allocated 50), 30; a share above 1 is the whole GPU at most.
    assert memory_budget(70 * gib, 80 * gib, 0.5) == 40 * gib
    assert memory_budget(30 * gib, 80 * gib, 0.5) == 30 * gib
    assert memory_budget(75 * gib, 80 * gib, 2.0) == 75 * gib
