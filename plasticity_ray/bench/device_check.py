"""`plasticity-ray bench device-check`: one command that says whether a GPU machine runs this
project right and how fast — before anyone pays for a sweep on it.

(a) `bench train` at 5M, 106M and 314M, seq 2,048, the Qwen3 vocabulary: the trainer's step bare and
    inside a one-worker TorchTrainer, and the plain PyTorch reference, with tokens/s, MFU and peak
    memory, and the issue's targets set against what was measured (never asserted);
(b) the real pipeline on the device: 5M on the built-in corpus with the qwen3 tokenizer, two short
    tasks, probes and diagnostics on the GPU beside the training worker, a worker killed mid-task and
    resumed, then a check that every row landed;
(c) one JSON record with the device, date and command.

`--cpu-sized` runs the same code at CPU size (tiny models, short sequences, the byte vocabulary):
the suite runs it.
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path
from typing import Callable

from plasticity_ray.bench.record import header
from plasticity_ray.bench.train import bench_train
from plasticity_ray.rundir import COMPLETE_FILE, DIAGNOSTICS, METRICS_FILE, PROBES, read_job_rows, read_jsonl
from plasticity_ray.spec import ExperimentSpec

TARGETS = {"trainer_vs_reference_at_least": 1.1, "ray_overhead_below": 0.03, "mfu_at_314M_at_least": 0.5}


def pipeline_spec(storage: Path, cpu_sized: bool) -> ExperimentSpec:
    """Two tasks (en, zh) of 5M with the qwen3 tokenizer — L1-d64 with bytes at CPU size, where a
    151,680-row head would take minutes — with a probe after each, diagnostics, and a worker crash
    after the first checkpoint of the second task."""
    seq_len, sequences, steps = (64, 16, 16) if cpu_sized else (2048, 32, 150)
    checkpoint_every = steps // 2
    return ExperimentSpec(
        name="device-check", storage_path=str(storage), seed=0,
        model={"size": "L1-d64" if cpu_sized else "5M"},
        data={"source": {"kind": "builtin"}, "tokenizer": "byte" if cpu_sized else "qwen3", "languages": ["en", "zh"],
              "seq_len": seq_len,
              "validation_fraction": 0.05},
        schedule={"cycles": 1, "tokens_per_task": steps * sequences * seq_len, "warmup_fraction": 0.05},
        batch={"global_tokens": sequences * seq_len},
        probe={"tokens": steps // 2 * sequences * seq_len, "eval_every": steps // 8, "eval_sequences": 8,
               "extended": {"languages": ["en"]}},
        diagnostics={"enabled": ["weight_magnitude", "dormant_units", "attention_entropy"], "entropy_language": "zh",
                     "dormant_sequences": 4, "entropy_sequences": 4, "entropy_first_query": seq_len // 2},
        train={"log_every": 2, "report_every": steps, "checkpoint_every": checkpoint_every},
        resources={"workers": 1, "gpus_per_worker": 0 if cpu_sized else 0.5, "cpus_per_worker": 1,
                   "probe_gpus": 0 if cpu_sized else 0.5, "probe_cpus": 1, "max_concurrent_probes": 1},
        debug={"fail_at_step": steps + checkpoint_every + 1},
    )


def check_pipeline(spec: ExperimentSpec, say: Callable[[str], None]) -> dict:
    """Run the pipeline spec and check that every row landed where it should."""
    from plasticity_ray.trial import run_training

    started = time.perf_counter()
    summary = run_training(spec, say=say)
    seconds = time.perf_counter() - started
    run = summary.run_dir
    steps = spec.tasks * spec.steps_per_task
    logged = [r["global_step"] for r in read_jsonl(run / METRICS_FILE)]
    probes = [r for r in read_job_rows(run, PROBES) if r.get("status") == "ok"]
    diagnostics = [r for r in read_job_rows(run, DIAGNOSTICS) if r.get("status") == "ok"]
    expected_device = "cpu" if spec.resources.probe_gpus == 0 else "cuda"
    checks = {
        "complete": (run / COMPLETE_FILE).exists(),
        "crashed_and_resumed": (run / f".debug_failed_at_{spec.debug.fail_at_step}").exists(),
        "every_metric_row_once": logged == list(range(spec.train.log_every, steps + 1, spec.train.log_every)),
        "probe_rows": len(probes) == spec.tasks + 1,  # a probe after each task, and the baseline
        "diagnostics_rows": len(diagnostics) == spec.tasks,
        "probes_on_the_device": all(r["device"].startswith(expected_device) for r in probes),
        "diagnostics_on_the_device": all(r["device"].startswith(expected_device) for r in diagnostics),
        "losses_finite": all(r["loss"] == r["loss"] for r in read_jsonl(run / METRICS_FILE)),
    }
    return {"seconds": round(seconds, 1), "steps": steps, "run_dir": str(run), "checks": checks,
            "all_ok": all(checks.values()), "probe_aucs": [round(r["auc"], 4) for r in probes]}


def targets(train: dict) -> dict:
    """The issue's GPU targets against the measured figures: each value is what was measured, with
    whether it meets the target."""
    out = {}
    for size, figures in train["sizes"].items():
        out[f"{size}_trainer_vs_reference"] = {"measured": figures["trainer_vs_reference"],
                                               "met": figures["trainer_vs_reference"] >= TARGETS["trainer_vs_reference_at_least"]}
        out[f"{size}_ray_overhead"] = {"measured": figures["ray_overhead"],
                                       "met": figures["ray_overhead"] < TARGETS["ray_overhead_below"]}
    mfu = train["sizes"].get("314M", {}).get("bare", {}).get("mfu_vs_h100_bf16")
    if mfu is not None:
        out["314M_mfu"] = {"measured": mfu, "met": mfu >= TARGETS["mfu_at_314M_at_least"]}
    return out


def device_check(argv: list[str], cpu_sized: bool = False, storage: Path | None = None,
                 say: Callable[[str], None] = print) -> dict:
    if cpu_sized:
        sizes, seq_len, batch_tokens, tokenizer, steps, warmup = ["L1-d64"], 64, 1024, "byte", 2, 1
    else:
        sizes, seq_len, batch_tokens, tokenizer, steps, warmup = ["5M", "106M", "314M"], 2048, 262_144, "qwen3", 8, 3
    say(f"(a) bench train: {', '.join(sizes)} at seq {seq_len}, {tokenizer} vocabulary")
    train = bench_train(argv, sizes, seq_len, batch_tokens, tokenizer, steps, warmup, rounds=2 if cpu_sized else 3,
                        say=say)
    say("(b) the pipeline on this device: 2 tasks, probes and diagnostics, a worker crash and resume")
    with tempfile.TemporaryDirectory(prefix="device-check-") as tmp:
        pipeline = check_pipeline(pipeline_spec(storage or Path(tmp), cpu_sized), say=say)
    say(f"pipeline: {'every check passed' if pipeline['all_ok'] else 'FAILED: ' + json.dumps(pipeline['checks'])}")
    record = {**header(argv), "benchmark": "device-check", "cpu_sized": cpu_sized, "train": train,
              "pipeline": pipeline, "targets": targets(train)}
    return record
