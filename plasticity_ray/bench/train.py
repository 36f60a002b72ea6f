"""`plasticity-ray bench train`: training throughput per device, bare and inside a Ray Train worker.

For each size: the trainer's own model, optimizer and step function on synthetic token rows (no data
loading), timed after warm-up steps; tokens/s, peak memory and, on GPU, the model FLOPs utilisation
with the PaLM/nanoGPT count FLOPs/token = 6·(non-embedding params + vocabulary·hidden) +
12·layers·hidden·seq_len against 989 TFLOP/s (H100 SXM, dense bf16). The same measurement then runs
inside a one-worker TorchTrainer, and the difference is Ray's overhead.
"""

from __future__ import annotations

import json
import resource
import tempfile
import time
from pathlib import Path

import torch

from plasticity_ray.spec import ExperimentSpec
from plasticity_ray.train.recipe import build, default_device, make_optimizer, model_config, train_step

H100_BF16_DENSE_FLOPS = 989e12


def flops_per_token(spec: ExperimentSpec) -> float:
    size, cfg = spec.model.resolved, model_config(spec)
    return 6 * (size.non_embedding_params + cfg.vocab_size * size.hidden) + 12 * size.layers * size.hidden * spec.data.seq_len


def bench_spec(size: str, seq_len: int, batch_tokens: int, tokenizer: str) -> ExperimentSpec:
    return ExperimentSpec(
        name="bench", model={"size": size}, data={"tokenizer": tokenizer, "seq_len": seq_len},
        batch={"global_tokens": batch_tokens}, schedule={"tokens_per_task": batch_tokens},
        probe={"tokens": batch_tokens}, diagnostics={"entropy_first_query": 1},
    )


def measure(spec_json: dict, steps: int, warmup: int, threads: int) -> dict:
    """Train `steps` timed steps (after `warmup`) of the spec's model on this process's device,
    with `threads` CPU threads (Ray gives a worker as many as it has CPUs: compare like with like)."""
    torch.set_num_threads(threads)
    spec = ExperimentSpec.model_validate(spec_json)
    device = default_device()
    rows = spec.global_sequences
    engine = build(spec, device, rows=rows)
    model, cfg, precision, micro = engine.model, engine.cfg, engine.precision, engine.micro_batch
    optimizer = make_optimizer(model, spec, device)
    batch = torch.randint(0, cfg.vocab_size - 1, (rows, spec.data.seq_len + 1), device=device)
    micro_batches = list(batch.split(micro))
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    for _ in range(warmup):
        train_step(model, optimizer, micro_batches, spec.lr, None, precision)
    if device.type == "cuda":
        torch.cuda.synchronize()
    started = time.perf_counter()
    for _ in range(steps):
        loss, _ = train_step(model, optimizer, micro_batches, spec.lr, None, precision)
    loss.item()  # waits for the device
    seconds = time.perf_counter() - started
    tokens_per_s = steps * rows * spec.data.seq_len / seconds
    result = {
        "device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu",
        "micro_batch": micro, "steps": steps, "seconds": round(seconds, 3), "tokens_per_s": round(tokens_per_s),
        "flops_per_token": flops_per_token(spec),
    }
    if device.type == "cuda":
        result["peak_memory_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
        result["mfu_vs_h100_bf16"] = round(tokens_per_s * flops_per_token(spec) / H100_BF16_DENSE_FLOPS, 4)
    else:
        result["peak_rss_gib"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2)
    return result


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
                steps: int, warmup: int, say=print) -> dict:
    from plasticity_ray.bench.record import header
    from plasticity_ray.runtime import init_ray

    import ray

    init_ray()
    threads = max(1, min(torch.get_num_threads(), int(ray.cluster_resources().get("CPU", 1))))
    record = {**header(command), "benchmark": "train", "seq_len": seq_len, "batch_tokens": batch_tokens,
              "tokenizer": tokenizer, "cpu_threads": threads, "sizes": {}}
    for size in sizes:
        spec = bench_spec(size, seq_len, batch_tokens, tokenizer)
        say(f"{size}: bare loop ...")
        bare = measure(spec.model_dump(mode="json"), steps, warmup, threads)
        say(f"{size}: {bare['tokens_per_s']:,} tokens/s bare; inside a TorchTrainer worker ...")
        in_ray = measure_in_ray_train(spec, steps, warmup, threads)
        overhead = 1 - in_ray["tokens_per_s"] / bare["tokens_per_s"]
        say(f"{size}: {in_ray['tokens_per_s']:,} tokens/s in Ray Train ({overhead:+.1%} overhead)")
        record["sizes"][size] = {"tokens_per_s": in_ray["tokens_per_s"], "bare": bare, "ray_train": in_ray,
                                 "ray_overhead": round(overhead, 4)}
    return record
