"""`plasticity-ray plan`: what a spec will cost before it runs — tokens, FLOPs, GPU-hours, wall time
and storage, per trial and for the whole sweep.

FLOPs use the count the bench uses (`ModelSize.flops_per_token`: forward and backward; a forward
pass alone is a third). GPU-hours = FLOPs ÷ (the GPU's dense bf16 peak × MFU); the MFU is the
user's, else the one measured by the newest `results/bench/` record for that GPU (at the measured
size nearest the trial's), else an assumed 50%, and the plan says which. Wall time is an estimate:
a trial's training scales linearly over its GPUs; trials run as many at once as the spec's
concurrency rule allows on the given GPUs; probes and diagnostics share the GPUs set aside for
them; start-up, data preparation and checkpoint writes are not counted.
"""

from __future__ import annotations

import heapq
import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path

from plasticity_ray.analysis.adaptive import policy_of
from plasticity_ray.data.tokenizers import tokenizer_class
from plasticity_ray.model.sizes import resolve_size
from plasticity_ray.spec import ExperimentSpec, grid_points, point_labels, with_overrides
from plasticity_ray.spec.protocol import is_probe_point, max_concurrent_trials, task_info

# Dense bf16 tensor-core peaks (NVIDIA data sheets, SXM parts): what MFU is measured against.
PEAK_BF16_FLOPS = {"h100": 989e12, "h200": 989e12, "a100": 312e12}
ASSUMED_MFU = 0.5
BENCH_DIR = Path(__file__).resolve().parent.parent / "results" / "bench"
TOKEN_BYTES = 4  # prepared shards store int32 token ids
# Checkpoints hold fp32 weights (4 bytes per parameter) and, outside probe points, AdamW's two fp32
# moments (8 more).
MODEL_BYTES_PER_PARAM, OPTIMIZER_BYTES_PER_PARAM = 4, 8


@dataclass(frozen=True)
class Mfu:
    value: float
    source: str  # "given", "measured: <record> at <size>" or "assumed"


@dataclass(frozen=True)
class TrialPlan:
    label: str
    size: str
    params: int  # all parameters, embeddings included (what a checkpoint holds)
    flops_per_token: int
    train_tokens: int
    probe_jobs: int  # probe trainings: probe points and the baseline, times the replicates
    probe_tokens: int  # tokens the probes train on
    eval_tokens: int  # forward-only tokens: validation during training and probes
    diagnostics_tokens: int  # forward-only tokens of the diagnostics
    flops: float
    mfu: float
    mfu_source: str
    train_gpu_hours: float
    probe_gpu_hours: float  # probes, their evaluations and the diagnostics
    checkpoint_bytes: int  # the newest `train.keep_checkpoints` checkpoints
    probe_point_bytes: int  # every probe-point checkpoint, if none were released yet (adaptive: the kept peak)
    tasks: float = 0.0  # tasks trained (adaptive: expected)
    kept_peak: int | None = None  # adaptive: the most kept probe points held at once

    @property
    def gpu_hours(self) -> float:
        return self.train_gpu_hours + self.probe_gpu_hours


@dataclass(frozen=True)
class SweepPlan:
    name: str
    gpu: str
    gpus: int
    concurrent_trials: int
    training_gpus: float  # per trial
    trials: list[TrialPlan]
    shard_bytes: int | None  # None: some pool is "all the source has", unknown before preparing
    wall_hours: float
    on_gpus: bool  # the spec's workers have GPUs (a CPU spec's GPU figures are hypothetical)
    notes: list[str]
    full_gpu_hours: float | None = None  # adaptive specs: the same trials with every task trained and point probed

    @property
    def flops(self) -> float:
        return sum(t.flops for t in self.trials)

    @property
    def gpu_hours(self) -> float:
        return sum(t.gpu_hours for t in self.trials)

    @property
    def storage_bytes(self) -> int:
        return (self.shard_bytes or 0) + sum(t.checkpoint_bytes + t.probe_point_bytes for t in self.trials)


def measured_mfu(gpu: str, size: str, bench_dir: Path = BENCH_DIR) -> Mfu | None:
    """The MFU of the bare trainer in the newest bench record measured on `gpu` (the record's
    `device` names it), at the measured size nearest `size` in parameters."""
    records = []
    for path in bench_dir.glob("*.json"):
        try:
            record = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            continue
        sizes = record.get("sizes") or record.get("train", {}).get("sizes") or {}
        if gpu.upper() in str(record.get("device", "")).upper() and sizes:
            records.append((str(record.get("date", "")), path.name, sizes))
    if not records:
        return None
    _, name, sizes = max(records)
    target = resolve_size(size).non_embedding_params
    measured = {s: f["bare"] for s, f in sizes.items() if f.get("bare", {}).get("tokens_per_s")}
    if not measured:
        return None
    nearest = min(measured, key=lambda s: abs(math.log(resolve_size(s).non_embedding_params / target)))
    bare = measured[nearest]
    return Mfu(bare["tokens_per_s"] * bare["flops_per_token"] / PEAK_BF16_FLOPS[gpu], f"measured: {name} at {nearest}")


def _mfu(gpu: str, size: str, given: float | None, bench_dir: Path) -> Mfu:
    if given is not None:
        return Mfu(given, "given")
    return measured_mfu(gpu, size, bench_dir) or Mfu(ASSUMED_MFU, "assumed")


def probe_points(spec: ExperimentSpec) -> int:
    return sum(is_probe_point(spec, task_info(spec, i)) for i in range(spec.tasks))


def evaluations_per_probe(spec: ExperimentSpec) -> int:
    """Step 0, every `probe.eval_every` steps, and the last step (`probe._probe_curve`)."""
    steps, every = spec.probe_steps, spec.probe.eval_every
    return 1 + steps // every + (1 if steps % every else 0)


def trial_plan(spec: ExperimentSpec, label: str, gpu: str, mfu: float | None = None,
               bench_dir: Path = BENCH_DIR, expected: dict | None = None) -> TrialPlan:
    """One trial's figures; `expected` (`bench.adaptive.expected_run`): the tasks and probe points
    the adaptive protocol is expected to train and probe, and the kept points it holds at most."""
    size = spec.model.resolved
    vocab = tokenizer_class(spec.data.tokenizer).vocab_size
    seq_len, batch = spec.data.seq_len, spec.batch.global_tokens
    # Fourier features: a smaller up projection (the Table I count less `fewer` parameters and their FLOPs).
    fewer = size.non_embedding_params - size.fourier_non_embedding_params if spec.model.activation == "fourier" else 0
    norms = size.activation_norm_params(spec.model.activation == "fourier") if spec.model.normalize_activations else 0
    params = size.total_params(vocab, seq_len) - fewer + norms + (size.hidden if spec.model.attention_sink else 0)
    per_token = size.flops_per_token(vocab, seq_len) - 6 * fewer
    tasks = expected["tasks"] if expected else spec.tasks
    train_tokens = round(tasks * spec.steps_per_task * batch)
    train_eval_tokens = 0
    if spec.train.eval_every:
        train_eval_tokens = round(tasks * (spec.steps_per_task // spec.train.eval_every) * spec.train.eval_sequences
                                  * seq_len)
    points = (round(expected["points"]) if expected else probe_points(spec)) if spec.probe.enabled else 0
    probe_jobs = (points + spec.probe.baseline) * spec.probe.replicates if spec.probe.enabled else 0
    probe_tokens = probe_jobs * spec.probe_steps * batch
    probe_eval_tokens = probe_jobs * evaluations_per_probe(spec) * spec.probe.eval_sequences * seq_len
    d = spec.diagnostics
    sequences = (d.dormant_sequences if {"dormant_units", "grama"} & set(d.enabled) else 0) + (
        d.entropy_sequences if "attention_entropy" in d.enabled else 0)
    diagnostics_tokens = points * sequences * seq_len  # at every probe point, not the baseline
    chosen = _mfu(gpu, spec.model.size, mfu, bench_dir)
    gpu_hour_flops = PEAK_BF16_FLOPS[gpu] * chosen.value * 3600
    # C-CHAIN's penalty: a forward of the weights one update back and a forward and backward on the
    # reference batch (the previous one, as large): 1/3 + 1 more training step per step.
    churn = 1 + 4 / 3 if any(m.name == "c_chain" for m in spec.mitigations) else 1
    train_flops = per_token * (churn * train_tokens + train_eval_tokens / 3)
    side_flops = per_token * (probe_tokens + (probe_eval_tokens + diagnostics_tokens) / 3)
    return TrialPlan(
        label=label, size=spec.model.size, params=params, flops_per_token=per_token, train_tokens=train_tokens,
        probe_jobs=probe_jobs, probe_tokens=probe_tokens, eval_tokens=train_eval_tokens + probe_eval_tokens,
        diagnostics_tokens=diagnostics_tokens, flops=train_flops + side_flops, mfu=chosen.value,
        mfu_source=chosen.source, train_gpu_hours=train_flops / gpu_hour_flops,
        probe_gpu_hours=side_flops / gpu_hour_flops,
        checkpoint_bytes=spec.train.keep_checkpoints * params * (MODEL_BYTES_PER_PARAM * (2 if churn > 1 else 1)
                                                                 + OPTIMIZER_BYTES_PER_PARAM),
        probe_point_bytes=(expected["kept_peak"] if expected else points) * params * MODEL_BYTES_PER_PARAM
        if spec.probe.enabled else 0,
        tasks=tasks, kept_peak=expected["kept_peak"] if expected else None,
    )


def probe_cost_in_tasks(spec: ExperimentSpec) -> float:
    """What one probe point (its probe, evaluations and diagnostics) costs in training tasks of the
    spec's first size (the ratio hardly changes with size)."""
    trial = trial_plan(spec, spec.model.size, "h100", mfu=ASSUMED_MFU)
    return (trial.probe_gpu_hours / trial.probe_jobs) / (trial.train_gpu_hours / spec.tasks)


def shard_bytes(specs: list[ExperimentSpec]) -> int | None:
    """Prepared shards of every distinct data section: each pool's token cap, stored as rows of
    seq_len + 1 int32 tokens. None when a training pool has no cap (its size is the source's)."""
    total, seen = 0, set()
    for spec in specs:
        data = spec.data
        key = data.model_dump_json()
        if key in seen:
            continue
        seen.add(key)
        for language in (*data.languages, data.probe_language):
            for split in ("train", "validation"):
                cap = data.pool_tokens(language, split)
                if cap is None:
                    return None
                total += math.ceil(cap / data.seq_len) * (data.seq_len + 1) * TOKEN_BYTES
    return total


def _wall_hours(spec: ExperimentSpec, trials: list[TrialPlan], gpus: int) -> tuple[int, float, float]:
    """Trials in order on the first free of `concurrent` slots (each a trial's training GPUs);
    probes on the pool set aside for them; the sweep ends when both are done, the last probe
    starting after the last task."""
    if not spec.resources.gpus_per_worker:  # a CPU spec, planned as if each worker and probe had a GPU
        spec = with_overrides(spec, {"resources.gpus_per_worker": 1, "resources.probe_gpus": 1})
    r = spec.resources
    concurrent = min(max_concurrent_trials(spec, {"GPU": float(gpus)}), len(trials))
    training_gpus = r.workers * r.gpus_per_worker
    slots = [0.0] * concurrent
    for trial in trials:
        heapq.heappush(slots, heapq.heappop(slots) + trial.train_gpu_hours / training_gpus)
    probe_pool = r.max_concurrent_probes * (r.probe_gpus or 1)
    side = sum(t.probe_gpu_hours for t in trials)
    last_probe = max((t.probe_gpu_hours / t.probe_jobs for t in trials if t.probe_jobs), default=0.0)
    return concurrent, training_gpus, max(max(slots) + last_probe, side / probe_pool)


def without_adaptive(spec: ExperimentSpec) -> ExperimentSpec:
    """The spec with every task trained and every extended point probed (the paper's way)."""
    extended = spec.probe.extended
    return with_overrides(spec, {"schedule.stop": None, "probe.extended": extended and {
        **extended.model_dump(), "near_minimum": None}})


def plan(spec: ExperimentSpec, gpu: str = "h100", gpus: int = 8, mfu: float | None = None,
         bench_dir: Path = BENCH_DIR, onsets: dict[str, int] | None = None) -> SweepPlan:
    """The sweep's cost. With adaptive policies, each trial at what it is expected to train and probe
    given the expected onset of its size (`onsets`; Table IV's by default), next to the full cost."""
    specs = [with_overrides(spec, point) for point in grid_points(spec)]
    labels = point_labels(spec)
    samples = spec.sweep.search.samples if spec.sweep.search else 1
    notes = []
    expected: list[dict | None] = [None] * len(specs)
    full_gpu_hours = None
    if policy_of(spec):
        from plasticity_ray.bench.adaptive import PLAN_GROUPS, expected_run, size_onsets

        onsets = size_onsets() if onsets is None else onsets
        seeds = len(spec.sweep.grid.get("seed", [spec.seed]))
        cache: dict = {}
        for i, s in enumerate(specs):
            key = (s.model.size, s.schedule.cycles, onsets.get(s.model.size))
            if key not in cache:
                cache[key] = expected_run(s, onsets.get(s.model.size), seeds)
            expected[i] = cache[key]
        full_gpu_hours = sum(trial_plan(without_adaptive(s), label, gpu, mfu, bench_dir).gpu_hours
                             for s, label in zip(specs, labels)) * samples
        unknown = sorted({s.model.size for s in specs if s.model.size not in onsets})
        notes.append(f"adaptive policies: tasks trained and points probed are what {PLAN_GROUPS} simulated groups of "
                     f"{seeds} seed(s) did (Figure 9's shape, minimum at the size's expected onset, Gaussian noise of "
                     "σ 0.3%: `bench adaptive`)" + (f"; no expected onset for {', '.join(unknown)}: simulated as a "
                                                   "flat curve" if unknown else ""))
        if seeds < 2 and spec.onset_stop:
            notes.append("schedule.stop: one seed per group measures no training noise, so no run stops early "
                         "(add seeds: sweep.grid.seed)")
    trials = [trial_plan(s, label if samples == 1 else f"{label} #{i}", gpu, mfu, bench_dir, e)
              for s, label, e in zip(specs, labels, expected) for i in range(samples)]
    if any(t.mfu_source == "assumed" for t in trials):
        notes.append(f"MFU {ASSUMED_MFU:.0%} is assumed: no {gpu.upper()} record in results/bench/ (--mfu sets it; "
                     "`plasticity-ray bench device-check` measures it)")
    if samples > 1:
        notes.append(f"Optuna: {samples} trials per point, each planned at the point's own values")
    if not spec.resources.gpus_per_worker:
        notes.append("the spec trains on CPUs (resources.gpus_per_worker: 0): GPU-hours and wall time are what the "
                     f"same work would take on {gpu.upper()}s, one per worker and per probe")
    shards = shard_bytes(specs)
    if shards is None:
        notes.append("data.train_tokens is unset (all the source has): shard storage is known only after preparing")
    concurrent, training_gpus, wall = _wall_hours(spec, trials, gpus)
    return SweepPlan(name=spec.name, gpu=gpu, gpus=gpus, concurrent_trials=concurrent, training_gpus=training_gpus,
                     trials=trials, shard_bytes=shards, wall_hours=wall, on_gpus=bool(spec.resources.gpus_per_worker),
                     notes=notes, full_gpu_hours=full_gpu_hours)


def _count(value: float) -> str:
    for scale, suffix in ((1e12, "T"), (1e9, "B"), (1e6, "M"), (1e3, "K")):
        if value >= scale:
            return f"{value / scale:.3g}{suffix}"
    return f"{value:.3g}"


def _bytes(value: float) -> str:
    for scale, suffix in ((2**40, "TiB"), (2**30, "GiB"), (2**20, "MiB"), (2**10, "KiB")):
        if value >= scale:
            return f"{value / scale:.3g} {suffix}"
    return f"{value:.0f} B"


def _hours(hours: float) -> str:
    if hours >= 48:
        return f"{hours / 24:,.1f} days"
    if hours >= 1:
        return f"{hours:,.1f} h"
    return f"{hours * 60:,.1f} min" if hours >= 1 / 60 else f"{hours * 3600:,.1f} s"


def _gpu_hours(hours: float) -> str:
    return f"{hours:,.0f}" if hours >= 100 else f"{hours:.3g}"


def _mfu_words(plan: SweepPlan) -> str:
    sources = {t.mfu_source.split(":")[0] for t in plan.trials}
    values = sorted({round(t.mfu, 4) for t in plan.trials})
    return f"MFU {'/'.join(f'{v:.0%}' for v in values)} ({', '.join(sorted(sources))})"


def summary_line(plan: SweepPlan) -> str:
    """The one line `sweep` and `submit` print before they start."""
    train = sum(t.train_tokens for t in plan.trials)
    side = sum(t.probe_tokens for t in plan.trials)
    compute = f"{plan.flops:.3g} FLOPs"
    if plan.on_gpus:
        compute += (f" ≈ {_gpu_hours(plan.gpu_hours)} {plan.gpu.upper()}-hours at {_mfu_words(plan)}, "
                    f"≈ {_hours(plan.wall_hours)} on {plan.gpus} GPUs")
    return (f"plan: {len(plan.trials)} trial(s), {_count(train)} training + {_count(side)} probe tokens, {compute}; "
            f"storage ≈ {_bytes(plan.storage_bytes)}{'' if plan.shard_bytes is not None else ' + the prepared source'}"
            " (details: plasticity-ray plan)")


def format_plan(plan: SweepPlan) -> list[str]:
    head = (f"{'trial':<28} {'params':>8} {'train tok':>9} {'probes':>6} {'probe tok':>9} {'eval+diag':>9} "
            f"{'FLOPs':>9} {'GPU-h':>10} {'MFU':>5}")
    lines = [f"{plan.name}: {len(plan.trials)} trial(s) on {plan.gpu.upper()}", head]
    for t in plan.trials:
        lines.append(f"{t.label[:28]:<28} {_count(t.params):>8} {_count(t.train_tokens):>9} {t.probe_jobs:>6} "
                     f"{_count(t.probe_tokens):>9} {_count(t.eval_tokens + t.diagnostics_tokens):>9} "
                     f"{t.flops:>9.3g} {_gpu_hours(t.gpu_hours):>10} {t.mfu:>5.0%}")
    train_hours = sum(t.train_gpu_hours for t in plan.trials)
    longest = max(plan.trials, key=lambda t: t.train_gpu_hours)
    lines += [
        f"total: {plan.flops:.3g} FLOPs ≈ {_gpu_hours(plan.gpu_hours)} {plan.gpu.upper()}-hours "
        f"({_gpu_hours(train_hours)} training, {_gpu_hours(plan.gpu_hours - train_hours)} probes and diagnostics) "
        f"at {_mfu_words(plan)}",
        f"wall time ≈ {_hours(plan.wall_hours)} on {plan.gpus} GPUs, {plan.concurrent_trials} trial(s) at once; "
        f"the longest trial trains for {_hours(longest.train_gpu_hours / plan.training_gpus)} on its "
        f"{plan.training_gpus:g} GPU(s) (linear scaling; start-up, data preparation and checkpoint writes not counted)",
        "storage ≈ " + (f"{_bytes(plan.shard_bytes)} prepared shards" if plan.shard_bytes is not None
                        else "the prepared source") +
        f", {_bytes(sum(t.checkpoint_bytes for t in plan.trials))} checkpoints (the newest kept per trial), "
        f"{_bytes(sum(t.probe_point_bytes for t in plan.trials))} probe-point checkpoints " + (
            "at the peak of kept points" if plan.full_gpu_hours is not None else "if none were released"),
    ]
    if plan.full_gpu_hours is not None:
        saving = 1 - plan.gpu_hours / plan.full_gpu_hours
        peak = max(t.kept_peak or 0 for t in plan.trials)
        lines.append(f"adaptive protocol ≈ {_gpu_hours(plan.gpu_hours)} {plan.gpu.upper()}-hours, against "
                     f"{_gpu_hours(plan.full_gpu_hours)} with every task trained and every point probed: a saving of "
                     f"{saving:.0%}; at most {peak} kept probe points per run at once")
    lines += [f"note: {note}" for note in plan.notes]
    return lines


def plan_json(plan: SweepPlan) -> dict:
    return {**{k: v for k, v in asdict(plan).items() if k != "trials"},
            "trials": [{**asdict(t), "gpu_hours": t.gpu_hours} for t in plan.trials],
            "flops": plan.flops, "gpu_hours": plan.gpu_hours, "storage_bytes": plan.storage_bytes}
