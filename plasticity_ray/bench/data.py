"""`plasticity-ray bench data`: how fast text becomes token shards, and shards become a training stream.

1. Tokenization per CPU core: the qwen3 tokenizer alone, in this process, over the whole built-in
   corpus (the work each Ray Data actor does).
2. Preparation end to end: `data prepare` of the built-in corpus with qwen3 and 2,048-token rows on
   the local Ray, from a clean directory; tokens/s overall and per Ray CPU. On this small corpus
   the fixed start-up cost of each language's pipeline weighs heavily; it is reported too.
3. The training stream: `task_stream` over one task of the paper's batch (256 rows of 2,049 ids)
   from synthetic pools large enough to need real reads (8 languages), continual and stationary;
   compared with what one GPU consumes training the 5M model (about 1M tokens/s). Timed after a
   warm-up (a process's first Ray Data run pays its own start-up); first-batch latency apart.
"""

from __future__ import annotations

import json
import lzma
import tempfile
import time
from pathlib import Path

import numpy as np
import ray

from plasticity_ray.data.prepare import Prepared, prepare
from plasticity_ray.data.schedule import rows_per_task, task_stream
from plasticity_ray.data.shards import Unit, UnitWriter
from plasticity_ray.data.sources import BUILTIN_DIR
from plasticity_ray.data.tokenizers import Qwen3Tokenizer
from plasticity_ray.spec import ALL_LANGUAGES, ExperimentSpec

GPU_5M_TOKENS_PER_S = 1_000_000


def _builtin_texts() -> list[str]:
    texts = []
    for lang in ALL_LANGUAGES:
        with lzma.open(BUILTIN_DIR / f"{lang}.jsonl.xz", "rt", encoding="utf-8") as f:
            texts += [json.loads(line)["text"] for line in f]
    return texts


def bench_tokenizer() -> dict:
    tokenizer = Qwen3Tokenizer()
    texts = _builtin_texts()
    started = time.perf_counter()
    tokens = sum(len(ids) for ids in tokenizer.encode_batch(texts))
    seconds = time.perf_counter() - started
    return {"tokens": tokens, "seconds": round(seconds, 3), "tokens_per_s_per_core": round(tokens / seconds)}


def bench_prepare(storage: Path, say) -> dict:
    spec = ExperimentSpec(name="bench", storage_path=str(storage), data={"tokenizer": "qwen3", "seq_len": 2048})
    cpus = int(ray.available_resources().get("CPU", 1))
    lines: list[str] = []
    started = time.perf_counter()
    prepared = prepare(spec, say=lines.append)
    seconds = time.perf_counter() - started
    tokens = sum(v[s]["source_tokens"] for v in prepared.manifest["languages"].values() for s in ("train", "validation"))
    say("\n".join(lines))
    return {
        "languages": len(prepared.manifest["languages"]), "source_tokens": tokens, "seconds": round(seconds, 2),
        "ray_cpus": cpus, "tokens_per_s": round(tokens / seconds), "tokens_per_s_per_cpu": round(tokens / seconds / cpus),
        "seconds_per_language": round(seconds / len(prepared.manifest["languages"]), 2),
    }


def _synthetic_pools(root: Path, spec: ExperimentSpec, rows: int) -> Prepared:
    rng = np.random.default_rng(0)
    row_len = spec.data.seq_len + 1
    units = {}
    for lang in spec.data.languages:
        writer = UnitWriter(root, lang, "train", row_len)
        for start in range(0, rows, 1024):
            writer.add(rng.integers(0, 151_643, size=(min(1024, rows - start), row_len), dtype=np.int32))
        info = writer.finish()
        units[(lang, "train")] = Unit(root, lang, "train", info["rows"], row_len, tuple(info["shards"]))
    return Prepared(root, {}, units)


def bench_stream(storage: Path, steps: int, pool_rows: int) -> dict:
    base = ExperimentSpec(
        name="bench", storage_path=str(storage), data={"tokenizer": "qwen3", "seq_len": 2048},
        schedule={"tokens_per_task": steps * 524_288},
    )
    prepared = _synthetic_pools(storage / "synthetic", base, pool_rows)
    out = {"pool_rows_per_language": pool_rows, "rows_per_task": rows_per_task(base)}
    for mode in ("continual", "stationary"):
        spec = base.model_copy(update={"schedule": base.schedule.model_copy(update={"mode": mode})})
        for _ in task_stream(spec, prepared, 1).iter_batches(batch_size=spec.global_sequences):
            break  # warm-up: Ray Data's first execution in a process pays its own start-up
        started = time.perf_counter()
        first_batch, rows = None, 0
        for batch in task_stream(spec, prepared, 0).iter_batches(batch_size=spec.global_sequences, batch_format="numpy"):
            first_batch = first_batch or time.perf_counter()
            rows += len(batch["ids"])
        ended = time.perf_counter()
        tokens_per_s = rows * (spec.data.seq_len + 1) / (ended - started)
        out[mode] = {
            "rows": rows, "first_batch_seconds": round(first_batch - started, 3), "seconds": round(ended - started, 2),
            "tokens_per_s": round(tokens_per_s),
            "times_one_gpu_5M": round(tokens_per_s / GPU_5M_TOKENS_PER_S, 1),
        }
    return out


def bench_data(command: list[str], steps: int = 256, pool_rows: int = 8192, say=print) -> dict:
    from plasticity_ray.bench.record import header
    from plasticity_ray.runtime import init_ray

    init_ray()
    record = {**header(command), "benchmark": "data"}
    say("tokenizer (qwen3, one core) ...")
    record["tokenizer"] = bench_tokenizer()
    with tempfile.TemporaryDirectory() as tmp:
        say("prepare (qwen3, built-in corpus, local Ray) ...")
        record["prepare"] = bench_prepare(Path(tmp) / "prepare", say)
        say("training stream (synthetic pools) ...")
        record["stream"] = bench_stream(Path(tmp) / "stream", steps, pool_rows)
    return record
