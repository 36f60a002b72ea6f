"""Result tables of an experiment directory, read from what the runs wrote (no Ray needed).

One *trial* is one run directory (`<experiment>/<run id>/`, holding spec.json). The trial table has
one row per run; the probe table one row per probe point, with the diagnostics measured there and
the AUC normalised by the run's baseline (Appendix B); the group table one row per group of runs
that differ only in their seed, with its conclusions and their uncertainty (`analysis.groups`).
"""

from __future__ import annotations

from pathlib import Path

from plasticity_ray.analysis.groups import GROUP_COLUMNS, group_row, group_runs, replicate_aucs
from plasticity_ray.analysis.runs import load_run
from plasticity_ray.analysis.tables import PROBE_COLUMNS, TRIAL_COLUMNS, replicate_sd, trial
from plasticity_ray.errors import UserError
from plasticity_ray.rundir import run_dirs
from plasticity_ray.storage import require_dir, write_bytes_atomic
from plasticity_ray.tables import to_csv

def tables(experiment_dir: Path) -> dict[str, list[dict]]:
    """{"trials": [...], "probes": [...], "groups": [...]} for every run in the experiment directory."""
    trials, probes = [], []
    runs = [load_run(run_dir) for run_dir in run_dirs(experiment_dir)]
    for run in runs:
        row, points = trial(run)
        trials.append(row)
        probes += points
    return {"trials": trials, "probes": probes, "groups": [group_row(g) for g in group_runs(runs)]}


def write_tables(experiment_dir: Path, result: dict[str, list[dict]]) -> list[Path]:
    """trials.csv, probes.csv and groups.csv next to the runs (atomically); returns their paths."""
    paths = [experiment_dir / "trials.csv", experiment_dir / "probes.csv", experiment_dir / "groups.csv"]
    write_bytes_atomic(paths[0], to_csv(result["trials"], TRIAL_COLUMNS).encode())
    write_bytes_atomic(paths[1], to_csv(result["probes"], PROBE_COLUMNS).encode())
    write_bytes_atomic(paths[2], to_csv(result["groups"], GROUP_COLUMNS).encode())
    return paths


def experiment_tables(experiment_dir: Path) -> tuple[dict[str, list[dict]], list[Path]]:
    """The experiment's tables, also written as CSV next to the runs (and where)."""
    require_dir(experiment_dir)
    result = tables(experiment_dir)
    if not result["trials"]:
        raise UserError(f"{experiment_dir}: no runs here (a run directory holds spec.json)")
    return result, write_tables(experiment_dir, result)


def format_probes(run_dir: Path, language: str) -> list[str]:
    """A run's probe AUCs with Eq. (1)'s % change, as `train` prints them at its end."""
    run = load_run(run_dir)
    if run.baseline is None and not run.probes:
        return []
    lines = [f"  probes ({run_dir / 'probes'}): AUC of {language} validation loss, lower = learns faster"]
    if run.baseline is not None:
        lines.append(f"    {'fresh model (baseline)':<28} {run.baseline:.4f}")
    reference = run.auc_reference
    if reference is not None:
        lines.append(f"    % change: Eq. (1) against the probe after task {run.tasks_trained(reference)} (AUC₁)")
    for r, change in zip(run.probes, run.auc_change(run.probes)):
        where = f"cycle {r['cycle'] + 1}, after {r['language'] or 'mixture'}"
        sd = replicate_sd(replicate_aucs(r))
        spread = f" ± {sd:.4f} (sd of {len(replicate_aucs(r))} replicates)" if sd is not None else ""
        lines.append(f"    {where:<28} {r['auc']:.4f}" + (f"  {change:+.2f}%" if change is not None else "") + spread)
    return lines
