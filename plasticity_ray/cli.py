"""`plasticity-ray` command line: parses arguments and calls the package; nothing else lives here."""

from __future__ import annotations

import argparse
import json
import sys

from plasticity_ray.model.sizes import size_table
from plasticity_ray.spec import ExperimentSpec, SpecError, grid_points, load_spec, with_overrides


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


def describe(spec: ExperimentSpec) -> list[str]:
    """A few lines saying what the spec will run."""
    runs = [with_overrides(spec, point) for point in grid_points(spec)]
    s = spec.schedule
    lines = [
        f"{spec.name}: {s.mode}, {len(runs)} run(s); each {s.cycles} cycle(s) × {len(spec.data.languages)} "
        f"language(s) = {spec.tasks} tasks of {spec.steps_per_task:,} steps × {spec.batch.global_tokens:,} tokens "
        f"(warm-up {spec.warmup_steps} steps), {spec.data.tokenizer} tokenizer, seq_len {spec.data.seq_len}",
    ]
    shown = 12
    for run, point in zip(runs[:shown], grid_points(spec)):
        size = run.model.resolved
        label = ", ".join(f"{k}={v}" for k, v in point.items()) or "single run"
        lines.append(
            f"  {label}: {size.layers} layers × {size.hidden} hidden, "
            f"{size.non_embedding_params:,} non-embedding params, lr {run.lr:.3g}, seed {run.seed}"
        )
    if len(runs) > shown:
        lines.append(f"  ... and {len(runs) - shown} more")
    if spec.probe.enabled:
        after = f" and after {', '.join(spec.probe.after_languages)}" if spec.probe.after_languages else ""
        lines.append(
            f"  probes: end of every {spec.probe.every_cycles} cycle(s){after}; {spec.probe_steps:,} steps on "
            f"{spec.data.probe_language}, validation every {spec.probe.eval_every} steps"
        )
    else:
        lines.append("  probes: off")
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
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "sizes":
        return _print_sizes(args.json)
    if args.command == "validate":
        return _validate(args.specs)
    raise AssertionError(f"unhandled command {args.command}")


if __name__ == "__main__":
    sys.exit(main())
