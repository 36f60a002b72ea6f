"""A run's rows in the result tables: one trial row, and one row per probe point with the
diagnostics measured there and the AUC normalised by the run's baseline (Appendix B). Read from
what the run wrote (`analysis.runs`): no torch, no Ray."""

from __future__ import annotations

import statistics

from plasticity_ray.analysis.groups import replicate_aucs
from plasticity_ray.analysis.runs import Run
from plasticity_ray.rundir import COMPLETE_FILE

TRIAL_COLUMNS = ["trial_id", "label", "size", "lr", "seed", "status", "tokens_seen", "last_train_loss", "val_score",
                 "probes_done", "latest_auc", "auc_change_percent", "alarms", "first_alarm", "stopped_after_tasks",
                 "stop_reason"]
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
            "replicate_aucs": replicate_aucs(r), "auc_sd": replicate_sd(replicate_aucs(r)),
            "normalized_auc": r["auc"] / run.baseline if run.baseline else None,
            "auc_change_percent": change,
            "weight_magnitude": d.get("weight_magnitude"),
            "dormant_percent": (d.get("dormant_units") or {}).get("percent"),
            "lazy_heads_percent": (d.get("attention_entropy") or {}).get("lazy_percent"),
            "collapsed_heads_percent": (d.get("attention_entropy") or {}).get("collapsed_percent"),
            "weight_distance": d.get("weight_distance"),
        })
    return rows


def replicate_sd(values: list[float]) -> float | None:
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
        "stopped_after_tasks": run.stopped["after_tasks"] if run.stopped else None,
        "stop_reason": run.stopped["reason"] if run.stopped else None,
    }
    points = _probe_rows(run, row)
    regular = run.cycle_end_probes
    row.update({
        "probes_done": len(points),
        "latest_auc": regular[-1]["auc"] if regular else None,
        "auc_change_percent": run.auc_change(regular)[-1] if regular else None,
    })
    return row, points
