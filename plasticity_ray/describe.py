"""What a spec will run, in words: the runs of its sweep, the recipe, and where and how it probes
(what `validate` and `sweep` print)."""

from __future__ import annotations

from plasticity_ray.spec import ExperimentSpec, grid_points, point_labels, with_overrides


def _tokens(count: int) -> str:
    for scale, suffix in ((1e12, "T"), (1e9, "B"), (1e6, "M"), (1e3, "K")):
        if count >= scale:
            return f"{count / scale:.3g}{suffix}"
    return str(count)


def _recipe_line(spec: ExperimentSpec) -> str:
    """The warm-up and optimizer protocol in words."""
    warmup = f"warm-up of {spec.warmup_steps:,} steps " + (
        "restarted at every task" if spec.restarts_warmup else "once at the start of the run") + ", then a constant LR"
    optimizer = "a fresh AdamW at every task" if spec.resets_optimizer else "AdamW never reset"
    return f"  recipe: {warmup}; {optimizer}"


def _probe_line(spec: ExperimentSpec) -> str:
    p = spec.probe
    if spec.schedule.mode == "stationary":
        where = f"a probe every {_tokens(spec.tasks_per_probe * spec.schedule.tokens_per_task)} training tokens"
    else:
        every = "cycle ends" if p.every_cycles == 1 else f"the end of every {p.every_cycles}th cycle"
        where = f"probes at {every} (after {spec.data.languages[-1]})"
        if p.extended:
            cycles = f" in cycles {p.extended.cycles[0]}-{p.extended.cycles[1]}" if p.extended.cycles else ""
            if p.extended.near_minimum:
                cycles = (f" only in the {p.extended.near_minimum.cycles} cycle(s) each side of the cycle-end minimum "
                          "(kept, then probed or released as the group's curve decides)")
            where += f" and after {', '.join(p.extended.languages)}{cycles}"
    data = "the same rows at every probe" if p.same_data_order else "a fresh random subsample for each probe"
    if p.replicates > 1:
        data += f", {p.replicates} replicates of each from the same weights"
    auc = "from step 0" if p.auc_includes_step0 else f"over the evaluations during training (from step {p.eval_every})"
    return (f"  {where}; {spec.probe_steps:,} steps on {spec.data.probe_language} ({data}), validation every "
            f"{p.eval_every} steps on {p.eval_sequences:,} random sequences, AUC {auc}")


def describe(spec: ExperimentSpec) -> list[str]:
    """A few lines saying what the spec will run."""
    runs = [with_overrides(spec, point) for point in grid_points(spec)]
    s = spec.schedule
    unit = "tasks" if s.mode == "continual" else "chunks of the mixture"
    lines = [
        f"{spec.name}: {s.mode}, {len(runs)} run(s); each {s.cycles} cycle(s) × {len(spec.data.languages)} "
        f"language(s) = {spec.tasks} {unit} of {spec.steps_per_task:,} steps × {spec.batch.global_tokens:,} tokens, "
        f"{spec.data.tokenizer} tokenizer, seq_len {spec.data.seq_len}",
        _recipe_line(spec),
    ]
    shown = 12
    for run, label in zip(runs[:shown], point_labels(spec)):
        size = run.model.resolved
        lines.append(
            f"  {label}: {size.layers} layers × {size.hidden} hidden, "
            f"{size.non_embedding_params:,} non-embedding params, lr {run.lr:.3g}, seed {run.seed}"
        )
    if len(runs) > shown:
        lines.append(f"  ... and {len(runs) - shown} more")
    lines.append(_probe_line(spec) if spec.probe.enabled else "  probes: off")
    if spec.onset_stop:
        stop = spec.onset_stop
        lines.append(f"  stops: each group of seeds {stop.margin_cycles} cycle(s) after its onset is confirmed (sequential "
                     f"test, a flat curve stopped with chance ≤ {1 - stop.level:.0%}); the paper trains every task")
    return lines
