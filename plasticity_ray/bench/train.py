"""`plasticity-ray bench train`: training throughput per device, bare and inside a Ray Train worker.

For each size: the trainer's own model, optimizer and step function on synthetic token rows (no data
loading), timed after warm-up steps; tokens/s, peak memory and, on GPU, the model FLOPs utilisation
with the PaLM/nanoGPT count FLOPs/token = 6·(non-embedding params + vocabulary·hidden) +
12·layers·hidden·seq_len against 989 TFLOP/s (H100 SXM, dense bf16). The same measurement then runs
inside a one-worker TorchTrainer, and the difference is Ray's overhead; and a plain PyTorch loop of
the same shape (`bench.reference`) in the same process, timed in alternating rounds, and the
ratio says what the trainer's own step gains or costs against what one would write by hand.
With `--mitigations`, each mitigation (at its defaults) and model option is timed the same way in
alternating rounds against the step with none, for the first size: its cost per step; the hooks
that run once per task (Shrink and Perturb, the reset control) are timed per call.
"""

from __future__ import annotations

import itertools
import json
import resource
import statistics
import tempfile
import time
from pathlib import Path

import torch

from plasticity_ray.bench.reference import reference_step
from plasticity_ray.mitigations import hooks_for
from plasticity_ray.spec import ExperimentSpec, with_overrides
from plasticity_ray.spec.protocol import task_info
from plasticity_ray.spec.schema import MITIGATION_NAMES
from plasticity_ray.train.device import DeviceOps
from plasticity_ray.train.hooks import Gradients, StepEnd, TaskEnd, TaskStart
from plasticity_ray.train.recipe import build, default_device, make_optimizer, model_config, train_step

H100_BF16_DENSE_FLOPS = 989e12


def flops_per_token(spec: ExperimentSpec) -> float:
    return spec.model.resolved.flops_per_token(model_config(spec).vocab_size, spec.data.seq_len)


def bench_spec(size: str, seq_len: int, batch_tokens: int, tokenizer: str) -> ExperimentSpec:
    return ExperimentSpec(
        name="bench", model={"size": size}, data={"tokenizer": tokenizer, "seq_len": seq_len},
        batch={"global_tokens": batch_tokens}, schedule={"tokens_per_task": batch_tokens},
        probe={"tokens": batch_tokens}, diagnostics={"entropy_first_query": 1},
    )


# Each mitigation at its defaults, and the model options, as spec overrides.
# Normalize-and-project needs its normalizations.
MITIGATION_VARIANTS = {**{name: {"mitigations": [{"name": name}]} for name in MITIGATION_NAMES},
                       "normalize_and_project": {"model.normalize_activations": True,
                                                 "mitigations": [{"name": "normalize_and_project"}]},
                       "fourier_features": {"model.activation": "fourier"}, "attention_sink": {"model.attention_sink": True}}


def trainer_step(spec: ExperimentSpec, device: torch.device):
    """The trainer's own step on a synthetic batch, with the spec's mitigation hooks as the trainer
    runs them (gradient hooks before the optimizer step, step hooks after), as a closure; its
    engine; and a closure of the once-per-task hooks (task end, then the next task's start)."""
    hooks = hooks_for(spec)
    engine = build(spec, device, rows=spec.global_sequences, attach=hooks.attachable())
    model = engine.model
    optimizer = make_optimizer(model, spec, device)
    batch = torch.randint(0, engine.cfg.vocab_size - 1, (spec.global_sequences, spec.data.seq_len + 1), device=device)
    micro_batches = list(batch.split(engine.micro_batch))
    task, steps = task_info(spec, 1), itertools.count()

    def step() -> torch.Tensor:
        n = next(steps)
        loss = train_step(model, optimizer, micro_batches, spec.lr, None, engine.precision,
                          hooks.penalties(Gradients(model, task, n, n, micro_batches, engine.precision)))[0]
        for hook in hooks.step_end:
            hook(StepEnd(model, optimizer, task, n, n, batch))
        return loss

    def task_hooks() -> None:
        for hook in hooks.task_end:
            hook(TaskEnd(model, task, 0))
        for hook in hooks.task_start:
            hook(TaskStart(model, optimizer, task, 0))

    return step, engine, task_hooks


def timed(step, steps: int, ops: DeviceOps) -> float:
    """Seconds for `steps` calls of `step`, waiting for the device at both ends."""
    ops.synchronize()
    started = time.perf_counter()
    for _ in range(steps):
        loss = step()
    loss.item()  # waits for the device
    return time.perf_counter() - started


def measure(spec_json: dict, steps: int, warmup: int, threads: int) -> dict:
    """Train `steps` timed steps (after `warmup`) of the spec's model on this process's device,
    with `threads` CPU threads (Ray gives a worker as many as it has CPUs: compare like with like)."""
    torch.set_num_threads(threads)
    spec = ExperimentSpec.model_validate(spec_json)
    step, engine, _ = trainer_step(spec, default_device())
    ops = engine.ops
    ops.reset_peak()
    for _ in range(warmup):
        step()
    seconds = timed(step, steps, ops)
    return _figures(spec, ops, engine.micro_batch, steps, seconds)


def _figures(spec: ExperimentSpec, ops: DeviceOps, micro: int, steps: int, seconds: float) -> dict:
    tokens_per_s = steps * spec.global_sequences * spec.data.seq_len / seconds
    result = {
        "device": torch.cuda.get_device_name() if ops.is_gpu else "cpu",
        "micro_batch": micro, "steps": steps, "seconds": round(seconds, 3), "tokens_per_s": round(tokens_per_s),
        "flops_per_token": flops_per_token(spec),
    }
    if ops.is_gpu:
        result["peak_memory_gib"] = round(ops.peak_bytes() / 2**30, 2)
        result["mfu_vs_h100_bf16"] = round(tokens_per_s * flops_per_token(spec) / H100_BF16_DENSE_FLOPS, 4)
    else:
        result["peak_rss_gib"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2)
    return result


def against_reference(spec: ExperimentSpec, steps: int, warmup: int, threads: int, rounds: int) -> dict:
    """The trainer's step and the plain reference in this process, same shapes, timed in
    alternating rounds of `steps` (A B A B …: a machine whose speed drifts moves both alike); the
    ratio is the median of the rounds' paired ratios, with their spread."""
    torch.set_num_threads(threads)
    device = default_device()
    step, engine, _ = trainer_step(spec, device)
    ops, micro = engine.ops, engine.micro_batch
    size, cfg = spec.model.resolved, engine.cfg
    plain = None
    while plain is None:  # the plain loop holds full logits: halve its micro-batch until they fit
        try:
            plain = reference_step(size.layers, size.hidden, cfg.heads, cfg.vocab_size, spec.data.seq_len,
                                   spec.global_sequences, micro, device)
            for _ in range(warmup):
                plain()
        except torch.OutOfMemoryError:
            if micro == 1:
                raise
            plain, micro = None, micro // 2
            torch.cuda.empty_cache()
    ops.reset_peak()
    for _ in range(warmup):
        step()
    trainer_seconds, reference_seconds = [], []
    for _ in range(rounds):
        trainer_seconds.append(timed(step, steps, ops))
        reference_seconds.append(timed(plain, steps, ops))
    ratios = sorted(r / t for t, r in zip(trainer_seconds, reference_seconds))
    bare = _figures(spec, ops, engine.micro_batch, steps, statistics.median(trainer_seconds))
    reference = _figures(spec, DeviceOps(device), micro, steps, statistics.median(reference_seconds))
    reference.pop("peak_memory_gib", None)
    return {"bare": bare, "reference": reference, "trainer_vs_reference": round(statistics.median(ratios), 3),
            "trainer_vs_reference_rounds": [round(r, 3) for r in ratios]}


def mitigation_costs(spec: ExperimentSpec, steps: int, warmup: int, threads: int, rounds: int, say=print) -> dict:
    """Per variant of MITIGATION_VARIANTS: seconds per step against the step with no mitigation, in
    alternating rounds of `steps` (the ratio is the median of the rounds' paired ratios), and the
    seconds of one call of its once-per-task hooks (0 when it has none)."""
    torch.set_num_threads(threads)
    device = default_device()
    none, engine, _ = trainer_step(spec, device)
    for _ in range(warmup):
        none()
    costs, none_seconds = {}, []
    for name, overrides in MITIGATION_VARIANTS.items():
        variant, variant_engine, task_hooks = trainer_step(with_overrides(spec, overrides), device)
        for _ in range(warmup):
            variant()
        paired = []
        for _ in range(rounds):
            paired.append((timed(none, steps, engine.ops), timed(variant, steps, variant_engine.ops)))
        none_seconds += [n for n, _ in paired]
        ratios = sorted(v / n for n, v in paired)
        variant_engine.ops.synchronize()
        started = time.perf_counter()
        task_hooks()
        variant_engine.ops.synchronize()
        costs[name] = {"seconds_per_step": round(statistics.median(v for _, v in paired) / steps, 5),
                       "vs_none": round(statistics.median(ratios), 3), "vs_none_rounds": [round(r, 3) for r in ratios],
                       "per_task_hooks_seconds": round(time.perf_counter() - started, 5)}
        say(f"  {name}: {costs[name]['vs_none']:.3f}× the step with none (rounds {costs[name]['vs_none_rounds']})")
    return {"none_seconds_per_step": round(statistics.median(none_seconds) / steps, 5), "variants": costs}


def format_mitigation_costs(record: dict) -> str:
    """The `--mitigations` part of a record as the README quotes it: one line per variant."""
    costs = record["mitigations"]
    lines = [f"{'variant':<24} {'× none':>7} {'rounds (min–max)':>17} {'per-task hooks':>15}"]
    for name, cost in costs["variants"].items():
        rounds = cost["vs_none_rounds"]
        lines.append(f"{name:<24} {cost['vs_none']:>7.3f} {f'{min(rounds):.2f}–{max(rounds):.2f}':>17} "
                     f"{cost['per_task_hooks_seconds'] * 1000:>12.1f} ms")
    return "\n".join(lines)


def _worker(config: dict) -> None:
    result = measure(config["spec"], config["steps"], config["warmup"], config["threads"])
    Path(config["out"]).write_text(json.dumps(result))


def measure_in_ray_train(spec: ExperimentSpec, steps: int, warmup: int, threads: int) -> dict:
    import ray.train
    from ray.train.torch import TorchTrainer

    use_gpu = torch.cuda.is_available()
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "result.json"
        TorchTrainer(
            _worker,
            train_loop_config={"spec": spec.model_dump(mode="json"), "steps": steps, "warmup": warmup,
                               "threads": threads, "out": str(out)},
            scaling_config=ray.train.ScalingConfig(num_workers=1, use_gpu=use_gpu,
                                                   resources_per_worker={"CPU": threads} if not use_gpu else None),
            run_config=ray.train.RunConfig(name="bench-train", storage_path=tmp,
                                           logging_config=ray.train.LoggingConfig(log_level="WARNING")),
        ).fit()
        return json.loads(out.read_text())


def bench_train(command: list[str], sizes: list[str], seq_len: int, batch_tokens: int, tokenizer: str,
                steps: int, warmup: int, rounds: int = 5, mitigations: bool = False, say=print) -> dict:
    from plasticity_ray.bench.record import header
    from plasticity_ray.runtime import init_ray

    import ray

    init_ray()
    threads = max(1, min(torch.get_num_threads(), int(ray.cluster_resources().get("CPU", 1))))
    record = {**header(command), "benchmark": "train", "seq_len": seq_len, "batch_tokens": batch_tokens,
              "tokenizer": tokenizer, "cpu_threads": threads, "rounds": rounds, "sizes": {}}
    for size in sizes:
        spec = bench_spec(size, seq_len, batch_tokens, tokenizer)
        say(f"{size}: the trainer's step and the plain reference, {rounds} alternating rounds of {steps} steps ...")
        pair = against_reference(spec, steps, warmup, threads, rounds)
        bare = pair["bare"]
        say(f"{size}: {bare['tokens_per_s']:,} tokens/s bare, {pair['reference']['tokens_per_s']:,} plain reference: "
            f"trainer at {pair['trainer_vs_reference']:.2f}× (rounds {pair['trainer_vs_reference_rounds']}); "
            "inside a TorchTrainer worker ...")
        in_ray = measure_in_ray_train(spec, steps, warmup, threads)
        overhead = 1 - in_ray["tokens_per_s"] / bare["tokens_per_s"]
        say(f"{size}: {in_ray['tokens_per_s']:,} tokens/s in Ray Train ({overhead:+.1%} against the bare median)")
        record["sizes"][size] = {"tokens_per_s": in_ray["tokens_per_s"], **pair, "ray_train": in_ray,
                                 "ray_overhead": round(overhead, 4)}
    if mitigations:
        say(f"{sizes[0]}: each mitigation's step against the step with none, {rounds} alternating rounds of {steps} steps ...")
        spec = bench_spec(sizes[0], seq_len, batch_tokens, tokenizer)
        record["mitigations"] = {"size": sizes[0], **mitigation_costs(spec, steps, warmup, threads, rounds, say)}
    return record
