"""Result tables of an experiment directory, read from what the runs wrote (no Ray needed).

One *trial* is one run directory (`<experiment>/<run id>/`, holding spec.json). The trial table has
one row per run; the probe table one row per probe point, with the diagnostics measured there and
the AUC normalised by the run's baseline (Appendix B); the group table one row per group of runs
that differ only in their seed, with its conclusions and their uncertainty (`analysis.groups`).
"""

from __future__ import annotations

import csv
import io
import statistics
from pathlib import Path

from plasticity_ray.analysis.groups import GROUP_COLUMNS, group_row, group_runs, replicate_aucs
from plasticity_ray.analysis.runs import Run, load_run
from plasticity_ray.errors import UserError
from plasticity_ray.rundir import COMPLETE_FILE, run_dirs
from plasticity_ray.storage import write_bytes_atomic

TRIAL_COLUMNS = ["trial_id", "label", "size", "lr", "seed", "status", "tokens_seen", "last_train_loss", "val_score",
                 "probes_done", "latest_auc", "auc_change_percent", "alarms", "first_alarm"]
PROBE_COLUMNS = ["trial_id", "size", "lr", "seed", "cycle", "task_index", "language", "auc", "auc_sd", "normalized_auc",
                 "auc_change_percent", "weight_magnitude", "dormant_percent", "lazy_heads_percent",
                 "collapsed_heads_percent", "weight_distance"]


def _probe_rows(run: Run, trial: dict) -> list[dict]:
    rows = []
    for r, change in zip(run.probes, run.auc_change(run.probes)):
        d = run.diagnostics.get(r["task_index"], {})
        rows.append({
            "trial_id": trial["trial_id"], "size": trial["size"], "lr": trial["lr"], "seed": trial["seed"],
            "cycle": r.get("cycle"), "task_index": r["task_index"], "language": r.get("language"), "auc": r["auc"],
            "replicate_aucs": replicate_aucs(r), "auc_sd": _sd(replicate_aucs(r)),
            "normalized_auc": r["auc"] / run.baseline if run.baseline else None,
            "auc_change_percent": change,
            "weight_magnitude": d.get("weight_magnitude"),
            "dormant_percent": (d.get("dormant_units") or {}).get("percent"),
            "lazy_heads_percent": (d.get("attention_entropy") or {}).get("lazy_percent"),
            "collapsed_heads_percent": (d.get("attention_entropy") or {}).get("collapsed_percent"),
            "weight_distance": d.get("weight_distance"),
        })
    return rows


def _sd(values: list[float]) -> float | None:
    """The spread of a probe's replicates (None for one)."""
    return statistics.stdev(values) if len(values) > 1 else None


VAL_SCORE_LAST = 10  # Table II: "averaging the last 10 validation-loss measurements"


def trial(run: Run) -> tuple[dict, list[dict]]:
    """One run's trial row and its probe rows."""
    run_dir = run.path
    val_losses = [r["val_loss"] for r in run.metrics if "val_loss" in r][-VAL_SCORE_LAST:]
    last = run.metrics[-1] if run.metrics else {}
    first_alarm = run.alarms[0] if run.alarms else None
    row = {
        "trial_id": run.trial_id, "label": run.spec.get("label"), "size": run.size, "lr": run.lr,
        "seed": run.spec["seed"], "status": "complete" if (run_dir / COMPLETE_FILE).exists() else "incomplete",
        "tokens_seen": last.get("tokens_seen", 0), "last_train_loss": last.get("loss"),
        "val_score": sum(val_losses) / len(val_losses) if val_losses else None,
        "alarms": len(run.alarms),
        "first_alarm": f"{first_alarm['signal']} after task {first_alarm['task'] + 1}" if first_alarm else None,
    }
    points = _probe_rows(run, row)
    regular = run.cycle_end_probes
    row.update({
        "probes_done": len(points),
        "latest_auc": regular[-1]["auc"] if regular else None,
        "auc_change_percent": run.auc_change(regular)[-1] if regular else None,
    })
    return row, points


def tables(experiment_dir: Path) -> dict[str, list[dict]]:
    """{"trials": [...], "probes": [...], "groups": [...]} for every run in the experiment directory."""
    trials, probes = [], []
    runs = [load_run(run_dir) for run_dir in run_dirs(experiment_dir)]
    for run in runs:
        row, points = trial(run)
        trials.append(row)
        probes += points
    return {"trials": trials, "probes": probes, "groups": [group_row(g) for g in group_runs(runs)]}


def to_csv(rows: list[dict], columns: list[str]) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue()


def write_tables(experiment_dir: Path, result: dict[str, list[dict]]) -> list[Path]:
    """trials.csv, probes.csv and groups.csv next to the runs (atomically); returns their paths."""
    paths = [experiment_dir / "trials.csv", experiment_dir / "probes.csv", experiment_dir / "groups.csv"]
    write_bytes_atomic(paths[0], to_csv(result["trials"], TRIAL_COLUMNS).encode())
    write_bytes_atomic(paths[1], to_csv(result["probes"], PROBE_COLUMNS).encode())
    write_bytes_atomic(paths[2], to_csv(result["groups"], GROUP_COLUMNS).encode())
    return paths


def experiment_tables(experiment_dir: Path) -> tuple[dict[str, list[dict]], list[Path]]:
    """The experiment's tables, also written as CSV next to the runs (and where)."""
    if not experiment_dir.is_dir():
        raise UserError(f"{experiment_dir}: not a directory")
    result = tables(experiment_dir)
    if not result["trials"]:
        raise UserError(f"{experiment_dir}: no runs here (a run directory holds spec.json)")
    return result, write_tables(experiment_dir, result)


def format_table(rows: list[dict], columns: list[str]) -> str:
    def cell(value) -> str:
        if isinstance(value, float):
            return f"{value:.4g}"
        return "-" if value is None else str(value)

    body = [[cell(r.get(c)) for c in columns] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in body)) if body else len(c) for i, c in enumerate(columns)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths))]
    lines += ["  ".join(v.ljust(w) for v, w in zip(row, widths)) for row in body]
    return "\n".join(lines)


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
        sd = _sd(replicate_aucs(r))
        spread = f" ± {sd:.4f} (sd of {len(replicate_aucs(r))} replicates)" if sd is not None else ""
        lines.append(f"    {where:<28} {r['auc']:.4f}" + (f"  {change:+.2f}%" if change is not None else "") + spread)
    return lines
