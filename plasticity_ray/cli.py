"""`plasticity-ray` command line: parses arguments and calls the package; nothing else lives here."""

from __future__ import annotations

import argparse
import json
import sys

from plasticity_ray.model.sizes import size_table
from plasticity_ray.spec import ExperimentSpec, SpecError, grid_points, load_spec, point_labels, with_overrides


def _print_sizes(as_json: bool) -> int:
    rows = size_table()
    if as_json:
        print(json.dumps(rows, indent=2))
        return 0
    header = f"{'name':>6} {'layers':>6} {'hidden':>6} {'heads':>5} {'non-embedding':>15} {'total':>13} {'lr':>9}"
    print(header)
    for r in rows:
        print(
            f"{r['name']:>6} {r['layers']:>6} {r['hidden']:>6} {r['heads']:>5} "
            f"{r['non_embedding_params']:>15,} {r['total_params']:>13,} {r['lr']:>9.3g}"
        )
    print("total = non-embedding + tied token table (151,680 rows) + 2,048 positions; lr = 3e-3·(320/d)^0.79248")
    return 0


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
            where += f" and after {', '.join(p.extended.languages)}{cycles}"
    data = "the same rows at every probe" if p.same_data_order else "a fresh random subsample for each probe"
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
    return lines


def _validate(paths: list[str]) -> int:
    failed = 0
    for path in paths:
        try:
            spec = load_spec(path)
        except SpecError as err:
            print(err, file=sys.stderr)
            failed += 1
            continue
        print(f"{path}: ok")
        for line in describe(spec):
            print(f"  {line}")
    return 2 if failed else 0


def _load(path: str) -> ExperimentSpec:
    try:
        return load_spec(path)
    except SpecError as err:
        raise SystemExit(f"{err}")


def _print_stats(stats: dict, usage: dict) -> None:
    print(f"{stats['tokenizer']} tokens, rows of seq_len {stats['seq_len']} + 1, in {stats['path']}")
    print(f"{'lang':<5} {'train tokens':>14} {'val tokens':>12} {'train docs':>10} {'val docs':>8}  pool passes")
    for lang, s in stats["languages"].items():
        use = usage.get(lang)
        if use is None:
            note = "probe language (probes off)"
        elif use.get("per") == "probe":
            share = use["rows_needed"] / use["pool_rows"]
            note = f"probe language: each probe reads {share:.0%} of the pool" + (" (rows repeat)" if share > 1 else "")
        else:
            note = f"{use['passes']}" + (" (rows repeat)" if use["passes"] > 1 else "")
        print(
            f"{lang:<5} {s['train_tokens']:>14,} {s['val_tokens']:>12,} {s['train_documents']:>10,} "
            f"{s['val_documents']:>8,}  {note}"
        )


def _data(args) -> int:
    from plasticity_ray.data.prepare import load_prepared, prepare
    from plasticity_ray.data.schedule import pool_usage
    from plasticity_ray.data.shards import DataError

    spec = _load(args.spec)
    try:
        if args.data_command == "prepare":
            from plasticity_ray.runtime import init_ray

            init_ray()
            prepared = prepare(spec)
        else:
            prepared = load_prepared(spec)
            if args.verify:
                for unit in prepared.units.values():
                    unit.verify(checksums=True)
        stats, usage = prepared.stats(), pool_usage(spec, prepared)
    except DataError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if getattr(args, "json", False):
        print(json.dumps({**stats, "pool_usage": usage}, indent=2))
    else:
        _print_stats(stats, usage)
    return 0


def _train(args) -> int:
    from plasticity_ray.data.shards import DataError
    from plasticity_ray.runtime import ResourceError, check_resources, init_ray
    from plasticity_ray.train.checkpoint import CheckpointError
    from ray.train import TrainingFailedError

    from plasticity_ray.probe.service import close_service
    from plasticity_ray.trial import run_training

    spec = _load(args.spec)
    overrides = {
        "model.size": args.size, "optimizer.lr": args.lr, "resources.workers": args.workers,
        "resources.gpus_per_worker": args.gpus_per_worker, "storage_path": args.storage,
    }
    try:
        spec = with_overrides(spec, {k: v for k, v in overrides.items() if v is not None}, source="command line")
    except SpecError as err:
        raise SystemExit(str(err))
    if (spec.sweep.grid or spec.sweep.variants) and args.size is None:
        print(f"note: {args.spec} has a sweep grid or variants; `train` runs the base spec (size {spec.model.size}). "
              "Use `--size`, or `plasticity-ray sweep` for the whole sweep.")
    init_ray()
    try:
        check_resources(spec)
        summary = run_training(spec)
        close_service(spec)
    except (DataError, CheckpointError, ResourceError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except TrainingFailedError as err:
        print(f"error: training failed after {spec.train.max_failures} restart(s): {err}", file=sys.stderr)
        return 1
    if not summary.complete:
        print(f"error: the run stopped before the end; its checkpoints are in {summary.run_dir}", file=sys.stderr)
        return 1
    last = summary.last or {}
    print(f"done: {summary.run_dir}")
    if last:
        print(f"  final train loss {last['loss']:.4f} after {last['tokens_seen']:,} tokens")
    print(f"  metrics: {summary.run_dir / 'metrics.jsonl'}; TensorBoard: tensorboard --logdir {summary.run_dir}")
    _print_probes(summary.run_dir, spec.data.probe_language)
    return 0


def _sweep(args) -> int:
    from plasticity_ray.data.shards import DataError
    from plasticity_ray.runtime import ResourceError, check_resources, init_ray
    from plasticity_ray.sweep.tune import run_sweep

    spec = _load(args.spec)
    if args.storage:
        spec = with_overrides(spec, {"storage_path": args.storage}, source="command line")
    for line in describe(spec):
        print(line)
    init_ray()
    try:
        for point in grid_points(spec):
            check_resources(with_overrides(spec, point))
        summary = run_sweep(spec, resume=args.resume)
    except (DataError, ResourceError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print()
    _print_results(summary.experiment_dir, probes=False)
    if not summary.unfinished:
        print()
        _print_analysis([summary.experiment_dir])
    for line in summary.errors:
        print(f"error: trial failed for good: {line}", file=sys.stderr)
    if summary.unfinished:
        print(f"interrupted: {summary.unfinished} trial(s) unfinished; continue with "
              f"`plasticity-ray sweep {args.spec}{' --storage ' + args.storage if args.storage else ''} --resume`",
              file=sys.stderr)
        return 130
    return 1 if summary.errors else 0


def _submit(args, extra: list[str]) -> int:
    from pathlib import Path

    from ray.exceptions import AuthenticationError

    from plasticity_ray.submit import SubmitError, follow, submit

    _load(args.spec)  # a broken spec fails here, not minutes later on the cluster
    try:
        client, job_id = submit(Path(args.spec), args.address, args.storage, extra)
    except SubmitError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except (ConnectionError, RuntimeError, AuthenticationError) as err:  # unreachable, refused, wrong token
        print(f"error: cannot submit to {args.address}: {str(err).strip().splitlines()[0]}", file=sys.stderr)
        return 2
    if not args.follow:
        return 0
    status = follow(client, job_id)
    print(f"{job_id}: {status.value}")
    return 0 if status.value == "SUCCEEDED" else 1


def _print_probes(run_dir, language: str) -> None:
    from plasticity_ray.analysis.runs import load_run

    run = load_run(run_dir)
    if run.baseline is None and not run.probes:
        return
    print(f"  probes ({run_dir / 'probes'}): AUC of {language} validation loss, lower = learns faster")
    if run.baseline is not None:
        print(f"    {'fresh model (baseline)':<28} {run.baseline:.4f}")
    reference = run.auc_reference
    if reference is not None:
        print(f"    % change: Eq. (1) against the probe after task {run.tasks_trained(reference)} (AUC₁)")
    for r, change in zip(run.probes, run.auc_change(run.probes)):
        where = f"cycle {r['cycle'] + 1}, after {r['language'] or 'mixture'}"
        print(f"    {where:<28} {r['auc']:.4f}" + (f"  {change:+.2f}%" if change is not None else ""))


def _checkpoint_spec(args) -> tuple[ExperimentSpec, "Path | None"]:
    """The spec, with the size, LR and seed the checkpoint was trained with."""
    from pathlib import Path

    from plasticity_ray.train.checkpoint import read_state

    spec = _load(args.spec)
    if args.checkpoint is None:
        return spec, None
    path = Path(args.checkpoint)
    state = read_state(path)
    return with_overrides(spec, {"model.size": state["size"], "optimizer.lr": state["lr"], "seed": state["seed"]},
                          source=str(path)), path


def _probe_or_diagnose(args) -> int:
    from plasticity_ray.data.prepare import load_prepared
    from plasticity_ray.data.shards import DataError
    from plasticity_ray.train.checkpoint import CheckpointError

    try:
        if args.command == "probe" and args.checkpoint is None and not args.baseline:
            raise SystemExit("probe: give a CHECKPOINT, or --baseline to probe a freshly initialised model")
        spec, path = _checkpoint_spec(args)
        prepared = load_prepared(spec)
        if args.command == "probe":
            from plasticity_ray.probe.probe import run_probe

            result = run_probe(spec, prepared, path, probe_index=args.index)
        else:
            from plasticity_ray.diagnostics.run import diagnose_checkpoint

            if path is None:
                raise SystemExit("diagnose: give a CHECKPOINT")
            result = diagnose_checkpoint(spec, prepared, path, args.previous)
    except (DataError, CheckpointError, SpecError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(result, indent=2))
    elif args.command == "probe":
        print(f"AUC {result['auc']:.4f} over {result['steps']} probe steps ({result['eval_sequences']} validation rows)")
        for point in result["curve"]:
            print(f"  step {point['step']:>6}  val loss {point['val_loss']:.4f}")
    else:
        for name, value in result.items():
            summary = {k: v for k, v in value.items() if not isinstance(v, (list, dict))} if isinstance(value, dict) else value
            print(f"{name}: {summary}")
    return 0


def _results(args) -> int:
    from pathlib import Path

    experiment_dir = Path(args.experiment_dir)
    if not experiment_dir.is_dir():
        print(f"error: {experiment_dir}: not a directory", file=sys.stderr)
        return 2
    if args.lr_grid:
        return _print_lr_grid(experiment_dir, args.json)
    return _print_results(experiment_dir, args.probes, "json" if args.json else "csv" if args.csv else "table")


def _print_lr_grid(experiment_dir, as_json: bool) -> int:
    from plasticity_ray.storage import write_json_atomic
    from plasticity_ray.sweep.lr_grid import format_lr_grid, lr_grid_table
    from plasticity_ray.sweep.results import tables

    try:
        table = lr_grid_table(tables(experiment_dir)["trials"])
    except ValueError as err:
        print(f"error: {experiment_dir}: {err}", file=sys.stderr)
        return 2
    write_json_atomic(experiment_dir / "lr_grid.json", table)
    if as_json:
        print(json.dumps(table, indent=2))
    else:
        print(format_lr_grid(table))
        print(f"\ntable: {experiment_dir / 'lr_grid.json'}")
    return 0


def _print_results(experiment_dir, probes: bool, output: str = "table") -> int:
    """The trial table (and the probe table) as a table, JSON or CSV; also written as CSV files."""
    from plasticity_ray.sweep.results import PROBE_COLUMNS, TRIAL_COLUMNS, format_table, tables, to_csv, write_tables

    result = tables(experiment_dir)
    if not result["trials"]:
        print(f"error: {experiment_dir}: no runs here (a run directory holds spec.json)", file=sys.stderr)
        return 2
    written = write_tables(experiment_dir, result)
    if output == "json":
        print(json.dumps(result, indent=2))
    elif output == "csv":
        print(to_csv(result["probes"], PROBE_COLUMNS) if probes else to_csv(result["trials"], TRIAL_COLUMNS), end="")
    else:
        print(format_table(result["trials"], TRIAL_COLUMNS))
        if probes:
            print()
            print(format_table(result["probes"], PROBE_COLUMNS))
        print(f"\ntables: {', '.join(map(str, written))}")
        print(f"TensorBoard: tensorboard --logdir {experiment_dir}")
    return 0


def _analyze(args) -> int:
    from pathlib import Path

    dirs = [Path(d) for d in args.experiment_dirs]
    missing = [d for d in dirs if not d.is_dir()]
    if missing:
        print(f"error: {', '.join(map(str, missing))}: not a directory", file=sys.stderr)
        return 2
    try:
        return _print_analysis(dirs, Path(args.out) if args.out else None)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


def _print_analysis(dirs, out=None) -> int:
    from plasticity_ray.analysis.report import MITIGATION_COLUMNS, ONSET_COLUMNS, analyze
    from plasticity_ray.sweep.results import format_table

    result = analyze(dirs, out)
    print(format_table(result.onsets, [c for c in ONSET_COLUMNS if c != "message"]))
    for row in result.onsets:
        print(f"  {row['trial_id']}: {row['message']}")
    if len({r["variant"] for r in result.mitigations}) > 1:
        print("\nvariants side by side (mean over seeds; cost = last-cycle train loss vs 'none'):")
        print(format_table(result.mitigations, MITIGATION_COLUMNS))
    if result.fits:
        print(f"best scaling fit (leave-one-out RMSE): {result.fits['best']}")
    for name, why in result.skipped:
        print(f"skipped {name}: {why}")
    print(f"report, tables and figures: {result.out_dir / 'report.md'} ({len(result.written)} files)")
    return 0


def _fit_onset(args) -> int:
    from pathlib import Path

    from plasticity_ray.analysis.fits import fit_onsets, format_fits, read_onset_table

    try:
        params, onsets = read_onset_table(Path(args.table))
        result = fit_onsets(params, onsets, args.predict or [], args.tokens_per_task)
    except (OSError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(json.dumps(result, indent=2) if args.json else format_fits(result))
    return 0


def _bench(args, argv: list[str]) -> int:
    from pathlib import Path

    from plasticity_ray.storage import write_json_atomic

    if args.bench_command == "data":
        from plasticity_ray.bench.data import bench_data

        record = bench_data(argv, steps=args.steps, pool_rows=args.pool_rows)
    else:
        from plasticity_ray.bench.train import bench_train

        record = bench_train(argv, args.sizes.split(","), args.seq_len, args.batch_tokens, args.tokenizer,
                             args.steps, args.warmup)
    print(json.dumps(record, indent=2))
    if args.out:
        write_json_atomic(Path(args.out), record)
        print(f"written to {args.out}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="plasticity-ray",
        description="Study loss of plasticity in GPT-style language models on Ray.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    sizes = commands.add_parser("sizes", help="print the paper's eight model sizes (Table I) and LRs (Table II)")
    sizes.add_argument("--json", action="store_true", help="print a JSON list instead of a table")

    validate = commands.add_parser("validate", help="check experiment spec files")
    validate.add_argument("specs", nargs="+", metavar="SPEC", help="YAML spec file(s)")

    data = commands.add_parser("data", help="prepare token shards and inspect them")
    data_commands = data.add_subparsers(dest="data_command", required=True, metavar="DATA_COMMAND")
    prepare = data_commands.add_parser("prepare", help="tokenize and pack every language of a spec (skips finished ones)")
    prepare.add_argument("spec", metavar="SPEC")
    stats = data_commands.add_parser("stats", help="token and document counts of the prepared data")
    stats.add_argument("spec", metavar="SPEC")
    stats.add_argument("--json", action="store_true", help="print JSON instead of a table")
    stats.add_argument("--verify", action="store_true", help="also check every shard's checksum")

    train = commands.add_parser("train", help="train one continual (or stationary) run on the current Ray")
    train.add_argument("spec", metavar="SPEC")
    train.add_argument("--size", help="model size (Table I name or L<layers>-d<hidden>)")
    train.add_argument("--lr", type=float, help="learning rate (default: the spec's, 'paper' = Appendix A rule)")
    train.add_argument("--workers", type=int, help="Ray Train workers (DDP)")
    train.add_argument("--gpus-per-worker", type=float, help="GPUs per worker (0: CPU)")
    train.add_argument("--storage", help="storage path for data, checkpoints and results")

    sweep = commands.add_parser("sweep", help="run every trial of a spec's sweep (grid or Optuna search) on Ray Tune")
    sweep.add_argument("spec", metavar="SPEC")
    sweep.add_argument("--storage", help="storage path for data, checkpoints and results (shared storage on a cluster)")
    sweep.add_argument("--resume", action="store_true", help="continue the sweep stopped in the same storage")

    submit = commands.add_parser(
        "submit", help="submit a sweep to a Ray cluster as a Ray job (arguments after -- go to `sweep`, e.g. -- --resume)")
    submit.add_argument("spec", metavar="SPEC", help="spec file inside this project (the job uploads the project)")
    submit.add_argument("--address", required=True, help="the cluster's dashboard, e.g. http://127.0.0.1:8265")
    submit.add_argument("--storage", help="storage path on the cluster (shared storage mounted on every node, e.g. NFS)")
    submit.add_argument("--follow", action="store_true", help="print the job's logs until it ends; exit 0 if it succeeded")

    probe = commands.add_parser("probe", help="probe one checkpoint here: train a copy on the probe language, print its AUC")
    probe.add_argument("checkpoint", nargs="?", metavar="CHECKPOINT", help="a checkpoint directory")
    probe.add_argument("--spec", required=True, help="the experiment spec the checkpoint belongs to")
    probe.add_argument("--baseline", action="store_true", help="probe a freshly initialised model instead")
    probe.add_argument("--index", type=int, default=0, help="probe number (picks the data when not same_data_order)")
    probe.add_argument("--json", action="store_true")
    diagnose = commands.add_parser("diagnose", help="the spec's diagnostics of one checkpoint")
    diagnose.add_argument("checkpoint", metavar="CHECKPOINT", help="a checkpoint directory")
    diagnose.add_argument("--spec", required=True, help="the experiment spec the checkpoint belongs to")
    diagnose.add_argument("--previous", help="checkpoint of the previous probe point (for weight_distance)")
    diagnose.add_argument("--json", action="store_true")

    results = commands.add_parser("results", help="trial and probe tables of an experiment directory (no Ray needed)")
    results.add_argument("experiment_dir", metavar="EXPERIMENT_DIR", help="<storage_path>/<experiment name>")
    output = results.add_mutually_exclusive_group()
    output.add_argument("--json", action="store_true", help='print {"trials": [...], "probes": [...]}')
    output.add_argument("--csv", action="store_true", help="print CSV (the trial table, or with --probes the probe table)")
    results.add_argument("--probes", action="store_true", help="also show the per-probe table")
    results.add_argument("--lr-grid", action="store_true",
                         help="Table II: best and interpolated learning rate per size, and the exponent alpha")

    analyze = commands.add_parser("analyze", help="onsets, scaling fits, the paper's figures and a report.md")
    analyze.add_argument("experiment_dirs", nargs="+", metavar="EXPERIMENT_DIR",
                         help="one or more <storage>/<experiment> directories (several are combined)")
    analyze.add_argument("--out", help="where to write (default: EXPERIMENT_DIR/analysis of the first)")

    fit = commands.add_parser("fit-onset", help="Appendix B's four scaling fits of onset vs parameters (Table V)")
    fit.add_argument("table", metavar="TABLE.csv", help="CSV with columns params,onset (e.g. results/paper/table_iv.csv)")
    fit.add_argument("--json", action="store_true", help='print {"models": {...}, "best": ..., "predictions": [...]}')
    fit.add_argument("--predict", type=float, nargs="+", metavar="PARAMS", help="sizes to predict the onset of")
    fit.add_argument("--tokens-per-task", type=float, help="also give predictions in tokens (the paper: 5e9)")

    bench = commands.add_parser("bench", help="benchmarks; results are JSON records with device, date and command")
    bench_commands = bench.add_subparsers(dest="bench_command", required=True, metavar="BENCH")
    bench_data = bench_commands.add_parser("data", help="tokenization, preparation and training-stream throughput")
    bench_data.add_argument("--steps", type=int, default=256, help="steps of 256 × 2,049 ids streamed per mode")
    bench_data.add_argument("--pool-rows", type=int, default=8192, help="rows per synthetic language pool")
    bench_data.add_argument("--out", help="also write the record to this JSON file")
    bench_train = bench_commands.add_parser("train", help="training tokens/s, memory and MFU, bare and in Ray Train")
    bench_train.add_argument("--sizes", default="5M,106M,314M", help="comma-separated sizes")
    bench_train.add_argument("--seq-len", type=int, default=2048)
    bench_train.add_argument("--batch-tokens", type=int, default=524_288, help="tokens per optimizer step")
    bench_train.add_argument("--tokenizer", default="qwen3", choices=["qwen3", "byte"], help="sets the vocabulary")
    bench_train.add_argument("--steps", type=int, default=20, help="timed steps")
    bench_train.add_argument("--warmup", type=int, default=5, help="untimed steps first (compilation)")
    bench_train.add_argument("--out", help="also write the record to this JSON file")
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    # `submit SPEC ... -- --resume`: what follows `--` goes to the sweep on the cluster.
    extra = argv[argv.index("--") + 1 :] if "--" in argv else []
    argv = argv[: argv.index("--")] if "--" in argv else argv
    args = build_parser().parse_args(argv)
    commands = {
        "sizes": lambda: _print_sizes(args.json), "validate": lambda: _validate(args.specs),
        "data": lambda: _data(args), "train": lambda: _train(args), "sweep": lambda: _sweep(args),
        "submit": lambda: _submit(args, extra), "probe": lambda: _probe_or_diagnose(args),
        "diagnose": lambda: _probe_or_diagnose(args), "results": lambda: _results(args),
        "analyze": lambda: _analyze(args), "fit-onset": lambda: _fit_onset(args), "bench": lambda: _bench(args, argv),
    }
    return commands[args.command]()


if __name__ == "__main__":
    sys.exit(main())
