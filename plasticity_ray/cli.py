"""`plasticity-ray` command line: parses arguments and calls the package; nothing else lives here.

Every command is a function of its parsed arguments (`set_defaults(func=...)`) that returns the
exit code. Bad input anywhere is a `UserError`, printed once here as one message (exit 2).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from plasticity_ray.errors import UserError
from plasticity_ray.storage import as_path
from plasticity_ray.spec import ExperimentSpec, SpecError, grid_points, load_spec, with_overrides


def _spec(path: str, overrides: dict | None = None) -> ExperimentSpec:
    spec = load_spec(path)
    overrides = {k: v for k, v in (overrides or {}).items() if v is not None}
    return with_overrides(spec, overrides, source="command line") if overrides else spec


def cmd_sizes(args) -> int:
    from plasticity_ray.model.sizes import format_size_table, size_table

    print(json.dumps(size_table(), indent=2) if args.json else format_size_table())
    return 0


def cmd_validate(args) -> int:
    from plasticity_ray.describe import describe

    failed = 0
    for path in args.specs:
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


def cmd_data(args) -> int:
    from plasticity_ray.data.prepare import format_stats, load_prepared, prepare
    from plasticity_ray.data.schedule import pool_usage

    spec = _spec(args.spec)
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
    print(json.dumps({**stats, "pool_usage": usage}, indent=2) if getattr(args, "json", False)
          else format_stats(stats, usage))
    return 0


def cmd_train(args) -> int:
    from ray.train import TrainingFailedError

    from plasticity_ray.analysis.adaptive import policy_of
    from plasticity_ray.probe.service import close_service
    from plasticity_ray.runtime import check_resources, init_ray
    from plasticity_ray.storage import StorageError, storage_problem
    from plasticity_ray.sweep.results import format_probes
    from plasticity_ray.trial import run_training

    spec = _spec(args.spec, {
        "model.size": args.size, "optimizer.lr": args.lr, "resources.workers": args.workers,
        "resources.gpus_per_worker": args.gpus_per_worker, "storage_path": args.storage,
    })
    if (spec.sweep.grid or spec.sweep.variants or spec.sweep.points) and args.size is None:
        print(f"note: {args.spec} has a sweep; `train` runs the base spec (size {spec.model.size}). "
              "Use `--size`, or `plasticity-ray sweep` for the whole sweep.")
    if policy_of(spec) and len(spec.sweep.grid.get("seed", [])) > 1:
        print("note: the adaptive policies decide over the run's group (the seeds of sweep.grid.seed): its kept "
              "points are probed or released, and its stop decided, as far as the other seeds have run; "
              "`plasticity-ray sweep` runs them together")
    init_ray()
    check_resources(spec)
    again = f"run `plasticity-ray {' '.join(args.argv)}` again once it answers: the run continues from its last checkpoint there"
    try:
        summary = run_training(spec)
    except (TrainingFailedError, StorageError) as err:  # a StorageError: the driver's own writes gave up
        problem = str(err) if isinstance(err, StorageError) else storage_problem(spec.storage_path)
        if problem:
            print(f"error: {problem}; {again}", file=sys.stderr)
        else:
            print(f"error: training failed after {spec.train.max_failures} restart(s): {err}", file=sys.stderr)
        return 1
    close_service(spec)
    if not summary.complete:
        print(f"error: the run stopped before the end; its checkpoints are in {summary.run_dir}", file=sys.stderr)
        return 1
    print(f"done: {summary.run_dir}")
    if summary.last:
        print(f"  final train loss {summary.last['loss']:.4f} after {summary.last['tokens_seen']:,} tokens")
    print(f"  metrics: {summary.run_dir / 'metrics.jsonl'}; TensorBoard: tensorboard --logdir {summary.run_dir}")
    for line in format_probes(summary.run_dir, spec.data.probe_language):
        print(line)
    return 0


def cmd_plan(args) -> int:
    from plasticity_ray.plan import format_plan, plan, plan_json

    onsets = None
    if args.onsets:
        from plasticity_ray.bench.adaptive import size_onsets

        onsets = size_onsets(Path(args.onsets))
    result = plan(_spec(args.spec), gpu=args.gpu, gpus=args.gpus, mfu=args.mfu, onsets=onsets)
    print(json.dumps(plan_json(result), indent=2) if args.json else "\n".join(format_plan(result)))
    return 0


def cmd_sweep(args) -> int:
    from plasticity_ray.describe import describe
    from plasticity_ray.plan import plan, summary_line
    from plasticity_ray.runtime import check_resources, init_ray
    from plasticity_ray.storage import StorageError, storage_problem
    from plasticity_ray.sweep.tune import run_sweep

    spec = _spec(args.spec, {"storage_path": args.storage})
    for line in describe(spec):
        print(line)
    print(summary_line(plan(spec)))
    init_ray()
    for point in grid_points(spec):
        check_resources(with_overrides(spec, point))
    resume = (f"continue with `plasticity-ray sweep {args.spec}{' --storage ' + args.storage if args.storage else ''} "
              "--resume`")
    try:
        summary = run_sweep(spec, resume=args.resume)
    except StorageError as err:
        problem = str(err)
    except OSError:  # Tune's own writes to storage failed
        problem = storage_problem(spec.storage_path)
        if problem is None:
            raise
    else:  # trials that failed because storage went away: said once, instead of each trial's error
        problem = storage_problem(spec.storage_path) if summary.errors else None
        if problem:
            problem += f"; {len(summary.errors)} trial(s) stopped"
    if problem:
        print(f"error: {problem}; once it answers, {resume}", file=sys.stderr)
        return 1
    print()
    _print_results(summary.experiment_dir, probes=False, groups=bool(summary.unfinished))
    if not summary.unfinished:  # the analysis ends with each group's conclusions
        print()
        _print_analysis([summary.experiment_dir])
    for line in summary.errors:
        print(f"error: trial failed for good: {line}", file=sys.stderr)
    if summary.unfinished:
        print(f"interrupted: {summary.unfinished} trial(s) unfinished; {resume}", file=sys.stderr)
        return 130
    return 1 if summary.errors else 0


def cmd_submit(args) -> int:
    from plasticity_ray.submit import follow, submit

    from plasticity_ray.plan import plan, summary_line

    spec = load_spec(args.spec)  # a broken spec fails here, not minutes later on the cluster
    print(summary_line(plan(spec)))
    client, job_id = submit(Path(args.spec), args.address, args.storage, args.extra)
    if not args.follow:
        return 0
    status = follow(client, job_id)
    print(f"{job_id}: {status.value}")
    return 0 if status.value == "SUCCEEDED" else 1


def cmd_probe_or_diagnose(args) -> int:
    from plasticity_ray.data.prepare import load_prepared
    from plasticity_ray.train.checkpoint import checkpoint_spec

    if args.command == "probe" and args.checkpoint is None and not args.baseline:
        raise UserError("probe: give a CHECKPOINT, or --baseline to probe a freshly initialised model")
    spec = load_spec(args.spec)
    path = as_path(args.checkpoint) if args.checkpoint else None
    if path is not None:
        spec = checkpoint_spec(spec, path)  # the size, LR and seed the checkpoint was trained with
    prepared = load_prepared(spec)
    if args.command == "probe":
        from plasticity_ray.probe.probe import format_probe, run_probe

        result = run_probe(spec, prepared, path, probe_index=args.index)
        print(json.dumps(result, indent=2) if args.json else format_probe(result))
    else:
        from plasticity_ray.diagnostics.run import diagnose_checkpoint, format_diagnostics

        result = diagnose_checkpoint(spec, prepared, path, args.previous)
        print(json.dumps(result, indent=2) if args.json else format_diagnostics(result))
    return 0


def cmd_results(args) -> int:
    experiment_dir = as_path(args.experiment_dir)
    if args.lr_grid:
        from plasticity_ray.sweep.lr_grid import format_lr_grid, write_lr_grid

        table, path = write_lr_grid(experiment_dir)
        print(json.dumps(table, indent=2) if args.json else f"{format_lr_grid(table)}\n\ntable: {path}")
        return 0
    return _print_results(experiment_dir, args.probes, "json" if args.json else "csv" if args.csv else "table")


def _print_results(experiment_dir: Path, probes: bool, output: str = "table", groups: bool = True) -> int:
    from plasticity_ray.analysis.tables import PROBE_COLUMNS, TRIAL_COLUMNS
    from plasticity_ray.sweep.results import experiment_tables
    from plasticity_ray.tables import format_table, to_csv

    result, written = experiment_tables(experiment_dir)
    if output == "json":
        print(json.dumps(result, indent=2))
    elif output == "csv":
        print(to_csv(result["probes"], PROBE_COLUMNS) if probes else to_csv(result["trials"], TRIAL_COLUMNS), end="")
    else:
        print(format_table(result["trials"], [c for c in TRIAL_COLUMNS if c != "stop_reason"]))
        for row in result["trials"]:
            if row.get("stop_reason"):
                print(f"  {row['trial_id']} stopped early after {row['stopped_after_tasks']} tasks: {row['stop_reason']}")
        if probes:
            print()
            print(format_table(result["probes"], PROBE_COLUMNS))
        if groups:
            print("\nper run group (runs that differ only in their seed):")
            for group in result["groups"]:
                print(f"  {group['message']}")
        print(f"\ntables: {', '.join(map(str, written))}")
        print(f"TensorBoard: tensorboard --logdir {experiment_dir}")
    return 0


def cmd_analyze(args) -> int:
    return _print_analysis([as_path(d) for d in args.experiment_dirs], as_path(args.out) if args.out else None,
                           args.level)


def _print_analysis(dirs: list[Path], out: Path | None = None, level: float | None = None) -> int:
    from plasticity_ray.analysis.onset import LEVEL
    from plasticity_ray.analysis.report import analyze, format_analysis

    print(format_analysis(analyze(dirs, out, level or LEVEL)))
    return 0


def _level(text: str) -> float:
    try:
        level = float(text)
    except ValueError:
        level = -1.0
    if not 0.5 <= level < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: a confidence level between 0.5 and 1, e.g. 0.9")
    return level


def _fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"{text!r}: a fraction in (0, 1], e.g. 0.45")
    return value


def _positive_int(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: a whole number of at least 1")
    return int(text)


def cmd_fit_onset(args) -> int:
    from plasticity_ray.analysis.fits import fit_onsets, format_fits, read_onset_table

    params, onsets = read_onset_table(Path(args.table))
    result = fit_onsets(params, onsets, args.predict or [], args.tokens_per_task, level=args.level)
    print(json.dumps(result, indent=2) if args.json else format_fits(result))
    return 0


def cmd_bench(args) -> int:
    from plasticity_ray.storage import write_json_atomic

    if args.bench_command == "data":
        from plasticity_ray.bench.data import bench_data

        record = bench_data(args.argv, steps=args.steps, pool_rows=args.pool_rows)
    elif args.bench_command == "device-check":
        from plasticity_ray.bench.device_check import device_check

        record = device_check(args.argv, cpu_sized=args.cpu_sized)
    elif args.bench_command == "main-command":
        from plasticity_ray.bench.command import bench_main_command

        record = bench_main_command(args.argv, args.runs, Path(__file__).resolve().parents[1])
    elif args.bench_command == "calibration":
        from plasticity_ray.bench.calibration import calibration_study, format_summary, summary
        from plasticity_ray.bench.record import header

        started = header(args.argv)  # the commit and date the study started from
        study = calibration_study(args.groups, args.grid_groups, args.draws, args.seed, args.workers,
                                  say=lambda line: print(line, file=sys.stderr))
        record = {**started, **study, "summary": summary(study)}
        print(format_summary(record), file=sys.stderr)
    elif args.bench_command == "comparison":
        from plasticity_ray.bench.comparison import bench_comparison, format_comparison, reanalyze_comparison

        if args.reanalyze:
            record = reanalyze_comparison(args.argv, Path(args.out))
        else:
            record = bench_comparison(args.argv, Path(args.spec), Path(args.out), args.storage,
                                      say=lambda line: print(line, file=sys.stderr))
        print(format_comparison(record))
        print(f"{record['trials']} trials in {record['wall_s']:.0f} s; record and analysis in {args.out}")
        return 0
    elif args.bench_command == "adaptive":
        from plasticity_ray.bench.adaptive import adaptive_study, format_summary, summary
        from plasticity_ray.bench.record import header
        from plasticity_ray.plan import probe_cost_in_tasks

        started = header(args.argv)
        paper = _spec(str(Path(__file__).resolve().parents[1] / "experiments" / "paper_continual.yaml"))
        study = adaptive_study(probe_cost_in_tasks(paper), args.groups, args.flat_groups, args.draws, args.seed,
                               args.workers, say=lambda line: print(line, file=sys.stderr))
        record = {**started, **study, "summary": summary(study)}
        print(format_summary(record), file=sys.stderr)
    else:
        from plasticity_ray.bench.train import bench_train

        record = bench_train(args.argv, args.sizes.split(","), args.seq_len, args.batch_tokens, args.tokenizer,
                             args.steps, args.warmup, args.rounds, args.mitigations)
    print(json.dumps(record, indent=2))
    if args.out:
        write_json_atomic(Path(args.out), record)
        print(f"written to {args.out}")
    return 0


def _simulation_arguments(parser: argparse.ArgumentParser) -> None:
    """What the simulation studies (`bench calibration`, `bench adaptive`) share."""
    parser.add_argument("--draws", type=_positive_int, default=4000, help="random rotations per test (default 4000)")
    parser.add_argument("--seed", type=int, default=2026)
    parser.add_argument("--workers", type=_positive_int, help="processes (default: one per core)")
    parser.add_argument("--out", help="also write the record to this JSON file")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="plasticity-ray",
        description="Study loss of plasticity in GPT-style language models on Ray.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    sizes = commands.add_parser("sizes", help="print the paper's eight model sizes (Table I) and LRs (Table II)")
    sizes.add_argument("--json", action="store_true", help="print a JSON list instead of a table")
    sizes.set_defaults(func=cmd_sizes)

    validate = commands.add_parser("validate", help="check experiment spec files")
    validate.add_argument("specs", nargs="+", metavar="SPEC", help="YAML spec file(s)")
    validate.set_defaults(func=cmd_validate)

    data = commands.add_parser("data", help="prepare token shards and inspect them")
    data_commands = data.add_subparsers(dest="data_command", required=True, metavar="DATA_COMMAND")
    prepare = data_commands.add_parser("prepare", help="tokenize and pack every language of a spec (skips finished ones)")
    prepare.add_argument("spec", metavar="SPEC")
    stats = data_commands.add_parser("stats", help="token and document counts of the prepared data")
    stats.add_argument("spec", metavar="SPEC")
    stats.add_argument("--json", action="store_true", help="print JSON instead of a table")
    stats.add_argument("--verify", action="store_true", help="also check every shard's checksum")
    data.set_defaults(func=cmd_data)

    train = commands.add_parser("train", help="train one continual (or stationary) run on the current Ray")
    train.add_argument("spec", metavar="SPEC")
    train.add_argument("--size", help="model size (Table I name or L<layers>-d<hidden>)")
    train.add_argument("--lr", type=float, help="learning rate (default: the spec's, 'paper' = Appendix A rule)")
    train.add_argument("--workers", type=int, help="Ray Train workers (DDP)")
    train.add_argument("--gpus-per-worker", type=float, help="GPUs per worker (0: CPU)")
    train.add_argument("--storage", help="storage path for data, checkpoints and results")
    train.set_defaults(func=cmd_train)

    plan = commands.add_parser("plan", help="what a spec will cost: tokens, FLOPs, GPU-hours, wall time and storage")
    plan.add_argument("spec", metavar="SPEC")
    plan.add_argument("--gpu", default="h100", choices=["h100", "h200", "a100"], help="the GPU to plan for")
    plan.add_argument("--gpus", type=_positive_int, default=8, help="GPUs the sweep runs on (default 8)")
    plan.add_argument("--onsets", metavar="FILE.csv",
                      help="expected onsets (tasks) per size, columns model,onset, for adaptive specs (default: "
                           "Table IV's, results/paper/table_iv.csv)")
    plan.add_argument("--mfu", type=_fraction,
                      help="model FLOPs utilisation (default: the newest results/bench record for the GPU, else 0.5)")
    plan.add_argument("--json", action="store_true", help="print the plan as JSON")
    plan.set_defaults(func=cmd_plan)

    sweep = commands.add_parser("sweep", help="run every trial of a spec's sweep (grid or Optuna search) on Ray Tune")
    sweep.add_argument("spec", metavar="SPEC")
    sweep.add_argument("--storage", help="storage path for data, checkpoints and results (shared storage on a cluster)")
    sweep.add_argument("--resume", action="store_true", help="continue the sweep stopped in the same storage")
    sweep.set_defaults(func=cmd_sweep)

    submit = commands.add_parser(
        "submit", help="submit a sweep to a Ray cluster as a Ray job (arguments after -- go to `sweep`, e.g. -- --resume)")
    submit.add_argument("spec", metavar="SPEC", help="spec file inside this project (the job uploads the project)")
    submit.add_argument("--address", required=True, help="the cluster's dashboard, e.g. http://127.0.0.1:8265")
    submit.add_argument("--storage",
                        help="storage path on the cluster: shared storage (NFS mounted on every node, or s3://bucket/prefix)")
    submit.add_argument("--follow", action="store_true", help="print the job's logs until it ends; exit 0 if it succeeded")
    submit.set_defaults(func=cmd_submit)

    probe = commands.add_parser("probe", help="probe one checkpoint here: train a copy on the probe language, print its AUC")
    probe.add_argument("checkpoint", nargs="?", metavar="CHECKPOINT", help="a checkpoint directory")
    probe.add_argument("--spec", required=True, help="the experiment spec the checkpoint belongs to")
    probe.add_argument("--baseline", action="store_true", help="probe a freshly initialised model instead")
    probe.add_argument("--index", type=int, default=0, help="probe number (picks the data when not same_data_order)")
    probe.add_argument("--json", action="store_true")
    probe.set_defaults(func=cmd_probe_or_diagnose)
    diagnose = commands.add_parser("diagnose", help="the spec's diagnostics of one checkpoint")
    diagnose.add_argument("checkpoint", metavar="CHECKPOINT", help="a checkpoint directory")
    diagnose.add_argument("--spec", required=True, help="the experiment spec the checkpoint belongs to")
    diagnose.add_argument("--previous", help="checkpoint of the previous probe point (for weight_distance)")
    diagnose.add_argument("--json", action="store_true")
    diagnose.set_defaults(func=cmd_probe_or_diagnose)

    results = commands.add_parser("results", help="trial and probe tables of an experiment directory (no Ray needed)")
    results.add_argument("experiment_dir", metavar="EXPERIMENT_DIR", help="<storage_path>/<experiment name>")
    output = results.add_mutually_exclusive_group()
    output.add_argument("--json", action="store_true", help='print {"trials": [...], "probes": [...], "groups": [...]}')
    output.add_argument("--csv", action="store_true", help="print CSV (the trial table, or with --probes the probe table)")
    results.add_argument("--probes", action="store_true", help="also show the per-probe table")
    results.add_argument("--lr-grid", action="store_true",
                         help="Table II: best and interpolated learning rate per size, and the exponent alpha")
    results.set_defaults(func=cmd_results)

    analyze = commands.add_parser("analyze", help="onsets, scaling fits, the paper's figures and a report.md")
    analyze.add_argument("experiment_dirs", nargs="+", metavar="EXPERIMENT_DIR",
                         help="one or more <storage>/<experiment> directories (several are combined)")
    analyze.add_argument("--out", help="where to write (default: EXPERIMENT_DIR/analysis of the first)")
    analyze.add_argument("--level", type=_level, help="confidence level of intervals and verdicts (default 0.9)")
    analyze.set_defaults(func=cmd_analyze)

    fit = commands.add_parser("fit-onset", help="Appendix B's four scaling fits of onset vs parameters (Table V)")
    fit.add_argument("table", metavar="TABLE.csv", help="CSV with columns params,onset (e.g. results/paper/table_iv.csv)")
    fit.add_argument("--json", action="store_true", help='print {"models": {...}, "best": ..., "predictions": [...]}')
    fit.add_argument("--predict", type=float, nargs="+", metavar="PARAMS", help="sizes to predict the onset of")
    fit.add_argument("--tokens-per-task", type=float, help="also give predictions in tokens (the paper: 5e9)")
    fit.add_argument("--level", type=_level, default=0.9, help="confidence level of the intervals (default 0.9)")
    fit.set_defaults(func=cmd_fit_onset)

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
    bench_train.add_argument("--rounds", type=int, default=5,
                             help="alternating rounds of trainer and plain-reference steps (the ratio is their median)")
    bench_train.add_argument("--mitigations", action="store_true",
                             help="also time every mitigation and model option against none (first size)")
    bench_train.add_argument("--out", help="also write the record to this JSON file")
    check = bench_commands.add_parser(
        "device-check", help="on a GPU machine: bench train at 5M/106M/314M and the whole pipeline on the GPU")
    check.add_argument("--cpu-sized", action="store_true", help="the same code at CPU size (what the tests run)")
    check.add_argument("--out", help="also write the record to this JSON file")
    bench_main = bench_commands.add_parser(
        "main-command", help="the README's main command, set-up included, timed on fresh clones of the last commit")
    bench_main.add_argument("--runs", type=int, default=3, help="runs (each in a fresh clone)")
    bench_main.add_argument("--out", help="also write the record to this JSON file")
    calibration = bench_commands.add_parser(
        "calibration", help="false-loss rate, power and onset-interval coverage of the verdict on simulated noise")
    calibration.add_argument("--groups", type=_positive_int, default=5000, help="simulated groups per cell (default 5000)")
    calibration.add_argument("--grid-groups", type=_positive_int, default=400,
                             help="groups per cell of the interval's robustness grid (default 400)")
    _simulation_arguments(calibration)
    comparison = bench_commands.add_parser(
        "comparison", help="a spec's whole sweep (e.g. the mitigation comparison) run from nothing, timed and analysed")
    comparison.add_argument("spec", help="experiment spec (its leading comment states how it was sized)")
    comparison.add_argument("--out", required=True, help="directory for record.json and the analysis it quotes")
    comparison.add_argument("--storage", help="where the runs go (default: the spec's storage_path)")
    comparison.add_argument("--reanalyze", action="store_true",
                            help="analyse the runs of the record in --out again (training, commit and wall time kept)")
    adaptive = bench_commands.add_parser(
        "adaptive", help="the adaptive protocol (probes near the minimum, confirmed-onset stops) against the "
                         "paper's, on simulated groups")
    adaptive.add_argument("--groups", type=_positive_int, default=1000,
                          help="simulated groups per cell with an onset (default 1000)")
    adaptive.add_argument("--flat-groups", type=_positive_int, default=4000,
                          help="simulated groups per flat-curve cell, where stops are errors (default 4000)")
    _simulation_arguments(adaptive)
    bench.set_defaults(func=cmd_bench)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    # `submit SPEC ... -- --resume`: what follows `--` goes to the sweep on the cluster.
    extra = argv[argv.index("--") + 1 :] if "--" in argv else []
    argv = argv[: argv.index("--")] if "--" in argv else argv
    args = build_parser().parse_args(argv)
    args.extra, args.argv = extra, argv  # the sweep's extra arguments; the command line a bench records
    try:
        return args.func(args)
    except SpecError as err:
        print(err, file=sys.stderr)  # a header line, then one line per problem
        return 2
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # the reader left (`... | head -1`): stop quietly, as Python's docs advise
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # nothing left to flush at exit
        return 1


if __name__ == "__main__":
    sys.exit(main())
