"""`plasticity-ray bench comparison SPEC --out DIR`: a spec's whole sweep (e.g. the mitigation
comparison) run from nothing on this machine's local Ray and timed, then analysed; the record keeps
the command, commit, date and wall time, the sizing the spec's header comment states (decided before
the run), every variant side by side and every group's conclusion, with the analysis files the
README points to. `--reanalyze` analyses the runs of an existing record again with this checkout's
analysis (the training, its commit and wall time stay the record's; `analysed` says when, by what,
and the record keeps the verdicts it replaces)."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Callable

from plasticity_ray.analysis.report import SIDE_BY_SIDE, analyze, side_by_side
from plasticity_ray.bench.record import header
from plasticity_ray.errors import UserError
from plasticity_ray.spec import grid_points, load_spec, with_overrides
from plasticity_ray.storage import write_json_atomic
from plasticity_ray.tables import markdown_table

KEPT = ("report.md", "mitigations.csv", "onsets.csv", "fig_mitigations.png")


def sizing(spec_path: Path) -> list[str]:
    """The spec file's leading comment: how the comparison was sized, committed before it ran."""
    lines = []
    for line in spec_path.read_text().splitlines():
        if not line.startswith("#"):
            break
        lines.append(line.lstrip("# ").rstrip())
    return lines


def bench_comparison(argv: list[str], spec_path: Path, out_dir: Path, storage: str | None = None,
                     say: Callable[[str], None] = print) -> dict:
    from plasticity_ray.runtime import check_resources, init_ray
    from plasticity_ray.sweep.tune import run_sweep
    from plasticity_ray.trial import experiment_dir

    started = header(argv)
    spec = load_spec(spec_path)
    if storage:
        spec = with_overrides(spec, {"storage_path": storage})
    if experiment_dir(spec).exists():
        raise UserError(f"{experiment_dir(spec)}: holds this experiment already; the comparison is timed from "
                        "nothing (move it, or pass --storage)")
    init_ray()
    for point in grid_points(spec):
        check_resources(with_overrides(spec, point))
    began = time.monotonic()
    summary = run_sweep(spec, say=say)
    wall = time.monotonic() - began
    if summary.unfinished or summary.errors:
        raise UserError(f"{summary.experiment_dir}: {summary.unfinished} trial(s) unfinished, {len(summary.errors)} "
                        f"failed; nothing recorded")
    result = analyze([summary.experiment_dir])
    record = {
        **started, "spec": str(spec_path), "sizing": sizing(spec_path), "trials": summary.trials,
        "wall_s": round(wall, 1), "level": result.level, "experiment_dir": str(summary.experiment_dir),
        "variants": result.mitigations, "conclusions": [row["message"] for row in result.onsets],
    }
    _keep(result.out_dir, out_dir, record)
    return record


def reanalyze_comparison(argv: list[str], out_dir: Path) -> dict:
    """The runs of `out_dir/record.json` analysed again; the rest of the record kept."""
    record_file = out_dir / "record.json"
    if not record_file.exists():
        raise UserError(f"{record_file}: missing (run the comparison first)")
    old = json.loads(record_file.read_text())
    experiment = Path(old["experiment_dir"])
    if not experiment.exists():
        raise UserError(f"{experiment}: the record's runs are not on this machine; the comparison must run again")
    result = analyze([experiment])
    replaced = old.get("replaced_verdicts", []) + [{
        "analysed": old.get("analysed", {k: old[k] for k in ("commit", "date", "command")}),
        "verdicts": {row["variant"]: [row["verdict"], row["p_adjusted"]] for row in old["variants"]}}]
    record = {**old, "analysed": header(argv), "level": result.level, "variants": result.mitigations,
              "conclusions": [row["message"] for row in result.onsets], "replaced_verdicts": replaced}
    _keep(result.out_dir, out_dir, record)
    return record


def _keep(analysis_dir: Path, out_dir: Path, record: dict) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    for name in KEPT:
        if (analysis_dir / name).exists():
            shutil.copyfile(analysis_dir / name, out_dir / name)
    write_json_atomic(out_dir / "record.json", record)


def format_comparison(record: dict) -> str:
    """The record's variants side by side, as the README quotes them."""
    return "\n".join(markdown_table(side_by_side(record["variants"]), SIDE_BY_SIDE))
