"""`plasticity-ray analyze`: onsets, tables, fits and figures of one or more experiments, written
next to them with a report.md that embeds the figures."""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from pathlib import Path

from plasticity_ray.analysis import figures
from plasticity_ray.analysis.groups import GROUP_COLUMNS, RunGroup, group_row, group_runs
from plasticity_ray.analysis.onset import LEVEL, Onset, find_onset
from plasticity_ray.analysis.runs import Run, load_runs
from plasticity_ray.analysis.scaling import POINT_COLUMNS, family_fits
from plasticity_ray.errors import UserError
from plasticity_ray.storage import require_dir, write_bytes_atomic, write_json_atomic
from plasticity_ray.tables import format_table, markdown_table, to_csv

RUN_ONSET_COLUMNS = ["trial_id", "variant", "size", "params", "lr", "seed", "mode", "probes", "onset_tasks", "onset_tokens", "status",
                 "first_alarm_tasks", "alarm_lead_tasks", "message"]

# (file stem, caption, drawing function)
RUN_FIGURES = [
    ("fig2_auc_change", "% change of the probe AUC at each cycle end relative to the end of cycle 1 (Eq. 1) against "
     "cycles trained: one line per run, or per group of seeds their mean with its interval (thin lines: each "
     "seed); a rising line is plasticity being lost.", figures.fig_auc_change),
    ("fig4_stationary", "The same for runs on a stationary mixture of languages, relative to the first probe, against "
     "tokens.", figures.fig_stationary),
    ("fig5_correlates", "Average weight magnitude and % dormant MLP units at each probe point; dotted lines mark "
     "each run's onset.", figures.fig_correlates),
    ("fig6_dormant_layers", "% dormant MLP units per layer at each probe point.", figures.fig_dormant_layers),
    ("fig7_attention", "% lazy and % collapsed attention heads, and every head's mean attention entropy at the "
     "last probe point.", figures.fig_attention),
]
GROUP_FIGURES = [
    ("fig9_onset", "Probe AUC divided by the probe-language-alone AUC (mean over a group's seeds and probe replicates), "
     "its centred moving average (window 3), the onset (the minimum of the smoothed curve, Appendix B) and its "
     "interval.", figures.fig_onset_curves),
    ("fig_mitigations", "Left: % change of the cycle-end probes' AUC (Eq. 1) against cycles for each variant (mitigation), "
     "mean over seeds: a flatter line keeps more plasticity. Right: each variant's last % change with its interval "
     "over seeds, its onset with its interval and its verdict (filled: loss of plasticity significant after Holm's "
     "adjustment). One row per size.", figures.fig_mitigations),
]
FIT_FIGURES = [
    ("fig3_onset_scaling", "Onset against non-embedding parameters on log-log axes, per family (variant, learning-rate "
     "rule): the onsets its fit used with their intervals, the log-log fit and its confidence band.",
     figures.fig_onset_scaling),
    ("fig10_fits", "The four models of Appendix B fitted to each family's onsets, each with its confidence band.",
     figures.fig_fits),
]


@dataclass
class Analysis:
    out_dir: Path
    onsets: list[dict]  # one row per run group (runs that differ only in their seed)
    run_onsets: list[dict]  # one row per run
    families: list[dict]  # one scaling fit per (variant, learning-rate rule); see analysis.scaling
    fit_points: list[dict]
    written: list[Path] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (figure or table, why)
    mitigations: list[dict] = field(default_factory=list)
    level: float = LEVEL
    stopped: list[dict] = field(default_factory=list)  # runs stopped early (schedule.stop): trial_id, after_tasks, reason


def onset_rows(runs: list[Run]) -> tuple[list[dict], dict[str, Onset]]:
    rows, onsets = [], {}
    for run in runs:
        o = find_onset([run.tasks_trained(p) for p in run.probes], [p["auc"] for p in run.probes], run.baseline)
        onsets[run.trial_id] = o
        rows.append({
            "trial_id": run.trial_id, "variant": run.variant, "size": run.size, "params": run.params, "mode": run.mode,
            "lr": run.lr, "seed": run.spec["seed"], "probes": len(run.probes), "onset_tasks": o.task_instance,
            "onset_tokens": o.task_instance * run.tokens_per_task if o.task_instance is not None else None,
            "status": o.status, "message": o.message,
            **_alarm_lead(run, o),
        })
    return rows, onsets


MITIGATION_COLUMNS = ["size", "variant", "runs", "auc_change_percent", "auc_change_pm", "onset_tasks", "onset_lo",
                      "onset_hi", "onsets", "verdict", "p_adjusted", "last_cycle_train_loss", "train_loss_cost_percent",
                      "weight_magnitude_change_percent", "dormant_change_points", "lazy_heads_change_points",
                      "collapsed_heads_change_points"]
# What each diagnostic's change from the first probe point to the last is, in the side-by-side table.
DIAGNOSTIC_CHANGES = {
    "weight_magnitude_change_percent": (lambda d: d.get("weight_magnitude"), "ratio"),
    "dormant_change_points": (lambda d: (d.get("dormant_units") or {}).get("percent"), "difference"),
    "lazy_heads_change_points": (lambda d: (d.get("attention_entropy") or {}).get("lazy_percent"), "difference"),
    "collapsed_heads_change_points": (lambda d: (d.get("attention_entropy") or {}).get("collapsed_percent"), "difference"),
}


def _mean(values):
    values = [v for v in values if v is not None]
    return sum(values) / len(values) if values else None


def _diagnostic_change(run: Run, value, how: str) -> float | None:
    """A diagnostic at the run's last probe point against its first (ratio: in %; difference: in points)."""
    series = figures.diagnostic_series(run, value)[1]
    if len(series) < 2:
        return None
    return 100 * (series[-1] / series[0] - 1) if how == "ratio" else series[-1] - series[0]


def mitigation_table(groups: list[RunGroup], onsets: dict[str, Onset]) -> list[dict]:
    """Per size and variant (a group of seeds), side by side: the probe AUC's % change (Eq. 1) with
    its interval, the group's onset with its interval, its multiplicity-adjusted verdict, each run's
    own onset, the last cycle's train loss with its cost against the size's "none", and how the
    diagnostics moved from the first probe point to the last (mean over seeds)."""
    chosen = [g for g in groups if g.first.mode == "continual" and all(r.cycle_end_probes for r in g.runs)]
    rows = []
    for group in sorted(chosen, key=lambda g: (g.first.params, g.first.variant != "none", g.first.variant)):
        row = group_row(group)
        rows.append({
            **{k: row[k] for k in ("size", "variant", "auc_change_percent", "auc_change_pm", "onset_tasks", "onset_lo",
                                   "onset_hi", "verdict", "p_adjusted")},
            "runs": len(group.runs),
            "onsets": " ".join(str(onsets[r.trial_id].task_instance) if onsets[r.trial_id].task_instance is not None
                               else onsets[r.trial_id].status for r in group.runs),
            "last_cycle_train_loss": _mean([r.last_cycle_loss() for r in group.runs]),
            **{name: _mean([_diagnostic_change(r, value, how) for r in group.runs])
               for name, (value, how) in DIAGNOSTIC_CHANGES.items()},
        })
    for row in rows:
        baseline = next((r["last_cycle_train_loss"] for r in rows if r["size"] == row["size"] and r["variant"] == "none"),
                        None)
        loss = row["last_cycle_train_loss"]
        row["train_loss_cost_percent"] = 100 * (loss / baseline - 1) if baseline and loss is not None else None
    return rows


MITIGATIONS_KEY = ("the probe AUC's % change (Eq. 1, last cycle end against the first) and the onset with their "
                   "{level:.0%} intervals over seeds; the verdict on loss of plasticity, its p-value Holm-adjusted over "
                   "every group of the analysis; cost = last-cycle train loss against 'none'; |w|, dormant units and lazy "
                   "heads: change from the first probe point to the last, mean over seeds")
SIDE_BY_SIDE = ["size", "variant", "seeds", "AUC change %", "onset (tasks)", "verdict", "p (Holm)", "train-loss cost %",
                "|w| %", "dormant pp", "lazy heads pp"]


def side_by_side(rows: list[dict]) -> list[dict]:
    """`mitigation_table` rows for reading: each estimate next to its interval."""
    def change(r):
        if r["auc_change_percent"] is None:
            return "-"
        pm = f" ± {r['auc_change_pm']:.2f}" if r["auc_change_pm"] is not None else ""
        return f"{r['auc_change_percent']:+.2f}{pm}"

    def onset(r):
        if r["onset_tasks"] is None:
            return "-"
        return f"{r['onset_tasks']} [{r['onset_lo']}, {r['onset_hi']}]" if r["onset_lo"] is not None else str(r["onset_tasks"])

    return [{"size": r["size"], "variant": r["variant"], "seeds": r["runs"], "AUC change %": change(r),
             "onset (tasks)": onset(r), "verdict": r["verdict"], "p (Holm)": _fmt(r["p_adjusted"], ".3g"),
             "train-loss cost %": _fmt(r["train_loss_cost_percent"], "+.2f"),
             "|w| %": _fmt(r["weight_magnitude_change_percent"], "+.1f"), "dormant pp": _fmt(r["dormant_change_points"], "+.2f"),
             "lazy heads pp": _fmt(r["lazy_heads_change_points"], "+.1f")} for r in rows]


def _alarm_lead(run: Run, onset: Onset) -> dict:
    """When the first alarm fired (tasks trained) and how many tasks before the probe-measured onset:
    positive = an early warning."""
    first = run.alarms[0]["task"] + 1 if run.alarms else None
    lead = onset.task_instance - first if first is not None and onset.task_instance is not None else None
    return {"first_alarm_tasks": first, "alarm_lead_tasks": lead}


def language_table(runs: list[Run]) -> list[dict]:
    """Table III: mean AUC of probes by the language trained just before, per size."""
    cells: dict[tuple[str, str], list[float]] = {}
    for run in runs:
        for p in run.probes:
            if p.get("language"):
                cells.setdefault((run.size, p["language"]), []).append(p["auc"])
    return [{"size": size, "preceding_language": lang, "probes": len(v), "mean_auc": sum(v) / len(v)}
            for (size, lang), v in sorted(cells.items())]


def _save(fig, stem: Path) -> list[Path]:
    import matplotlib.pyplot as plt

    paths = []
    for suffix in (".png", ".svg"):
        buffer = io.BytesIO()
        fig.savefig(buffer, format=suffix[1:], dpi=120, bbox_inches="tight")
        write_bytes_atomic(stem.with_suffix(suffix), buffer.getvalue())
        paths.append(stem.with_suffix(suffix))
    plt.close(fig)
    return paths


def analyze(experiment_dirs: list[Path], out_dir: Path | None = None, level: float = LEVEL) -> Analysis:
    """Everything above for the runs of `experiment_dirs`, written to `out_dir` (default: the first
    experiment's `analysis/`), with intervals at `level`."""
    for experiment_dir in experiment_dirs:
        require_dir(experiment_dir)
    runs = load_runs(experiment_dirs)
    if not runs:
        raise UserError(f"no runs in {', '.join(map(str, experiment_dirs))} (a run directory holds spec.json)")
    out_dir = out_dir or experiment_dirs[0] / "analysis"  # made by the first file written there
    rows, onsets = onset_rows(runs)
    run_groups = group_runs(runs, level)
    groups = [group_row(g) for g in run_groups]
    families, fit_points = family_fits(groups, level)
    result = Analysis(out_dir, groups, rows, families, fit_points, level=level,
                      stopped=[{"trial_id": r.trial_id, **r.stopped} for r in runs if r.stopped])

    write_bytes_atomic(out_dir / "onsets.csv", to_csv(groups, GROUP_COLUMNS).encode())
    write_bytes_atomic(out_dir / "run_onsets.csv", to_csv(rows, RUN_ONSET_COLUMNS).encode())
    result.written += [out_dir / "onsets.csv", out_dir / "run_onsets.csv"]
    by_language = language_table(runs)
    if len({r["preceding_language"] for r in by_language}) > 1:
        write_bytes_atomic(out_dir / "auc_by_language.csv",
                           to_csv(by_language, ["size", "preceding_language", "probes", "mean_auc"]).encode())
        result.written.append(out_dir / "auc_by_language.csv")
    else:
        result.skipped.append(("auc_by_language.csv", "every probe follows the same language"))

    result.mitigations = mitigation_table(run_groups, onsets)
    if len({r["variant"] for r in result.mitigations}) > 1:
        write_bytes_atomic(out_dir / "mitigations.csv", to_csv(result.mitigations, MITIGATION_COLUMNS).encode())
        result.written.append(out_dir / "mitigations.csv")
    else:
        result.skipped.append(("mitigations.csv", "every run has the same variant: nothing to compare"))

    if fit_points:
        write_bytes_atomic(out_dir / "fit_points.csv", to_csv(fit_points, POINT_COLUMNS).encode())
        result.written.append(out_dir / "fit_points.csv")
    if any(f["fit"] for f in families):
        write_json_atomic(out_dir / "onset_fits.json", {"level": level, "families": families})
        result.written.append(out_dir / "onset_fits.json")
    else:
        why = "; ".join(f"{f['family']}: {f['why_no_fit']}" for f in families) or "no continual run groups"
        result.skipped.append(("onset_fits.json", why))

    captions = []
    jobs = [(stem, caption, lambda f=fn: f(runs, onsets)) for stem, caption, fn in RUN_FIGURES]
    jobs += [(stem, caption, lambda f=fn: f(run_groups)) for stem, caption, fn in GROUP_FIGURES]
    jobs += [(stem, caption, lambda f=fn: f(families, level)) for stem, caption, fn in FIT_FIGURES]
    for stem, caption, draw in jobs:
        try:
            fig = draw()
        except figures.Skip as why:
            result.skipped.append((stem, str(why)))
            continue
        result.written += _save(fig, out_dir / stem)
        captions.append((stem, caption))
    write_bytes_atomic(out_dir / "report.md", _report(experiment_dirs, rows, by_language, result, captions).encode())
    result.written.append(out_dir / "report.md")
    return result


def format_analysis(result: Analysis) -> str:
    """What `analyze` (and the end of `sweep`) prints: each run's onset, each group's conclusion in
    words, the variants side by side, the best fit, what was skipped and where the report is."""
    lines = [format_table(result.run_onsets, [c for c in RUN_ONSET_COLUMNS if c != "message"])]
    lines += [f"  {row['trial_id']}: {row['message']}" for row in result.run_onsets]
    lines += [f"  {r['trial_id']} stopped early after {r['after_tasks']} tasks: {r['reason']}" for r in result.stopped]
    lines += ["\nconclusions per run group (runs that differ only in their seed):" + _tested(result)]
    lines += [f"  {row['message']}" for row in result.onsets]
    if len({r["variant"] for r in result.mitigations}) > 1:
        lines += [f"\nvariants side by side ({MITIGATIONS_KEY.format(level=result.level)}):",
                  format_table(side_by_side(result.mitigations), SIDE_BY_SIDE)]
    for family in result.families:
        if family["fit"]:
            best = family["fit"]["best"]
            lines.append(f"scaling fit of {family['family']}: best (leave-one-out RMSE) {best}, b = "
                         f"{_coefficient(family['fit'], best, 'b')}; {_fit_count(family)}")
    lines += [f"skipped {name}: {why}" for name, why in result.skipped]
    lines.append(f"report, tables and figures: {result.out_dir / 'report.md'} ({len(result.written)} files)")
    return "\n".join(lines)


def _fit_count(family: dict) -> str:
    left = family["left_out"]
    reasons = "; ".join(f"{x['group']}: {x['why']}" for x in left)
    return f"{len(family['points'])} onset(s) fitted, {len(left)} left out" + (f" ({reasons})" if left else "")


def _tested(result: Analysis) -> str:
    tested = next((g["groups_tested"] for g in result.onsets if g["groups_tested"]), 0)
    if tested > 1:
        return (f" The verdicts of the {tested} groups tested are one family: p-values are Holm-adjusted (family-wise "
                f"error at {1 - result.level:.0%}), the adjusted one decides.")
    return f" {tested} group tested: no adjustment for multiplicity needed." if tested else " No group has a verdict."


def _coefficient(fits: dict, model: str, name: str) -> str:
    m = fits["models"][model]
    interval = m.get(f"ci_{name}")
    return f"{m[name]:.4g}" + (f" [{interval[0]:.4g}, {interval[1]:.4g}]" if interval else "")


def _fmt(value, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def _report(experiment_dirs, rows, by_language, result: Analysis, captions) -> str:
    lines = [f"# Plasticity analysis of {', '.join(d.name for d in experiment_dirs)}", "",
             "## Conclusions", "", "Per group of runs that differ only in their seed; intervals at "
             f"{result.level:.0%} (see the README's Analysis section for how they are made)." + _tested(result), ""]
    lines += [f"- {g['message']}" for g in result.onsets]
    lines += ["", "## Onsets per run", "", "| run | size | params | probes | onset (tasks) | onset (tokens) | note |",
              "|---|---|---:|---:|---:|---:|---|"]
    for r in rows:
        tokens = f"{r['onset_tokens']:.3g}" if r["onset_tokens"] is not None else "-"
        lines.append(f"| {r['trial_id']} | {r['size']} | {r['params']:,} | {r['probes']} | "
                     f"{r['onset_tasks'] if r['onset_tasks'] is not None else '-'} | {tokens} | {r['message']} |")
    if result.stopped:
        lines += ["", "## Runs stopped early (schedule.stop)", "", "| run | tasks trained | why |", "|---|---:|---|"]
        lines += [f"| {r['trial_id']} | {r['after_tasks']} | {r['reason']} |" for r in result.stopped]
    for family in result.families:
        lines += ["", f"## Scaling fit (Appendix B): {family['family']}", "",
                  "| group | params | onset (tasks) | interval | verdict | fitted |", "|---|---:|---:|---|---|---|"]
        for p in (p for p in result.fit_points if p["family"] == family["family"]):
            interval = f"[{p['onset_lo']}, {p['onset_hi']}]" if p["onset_lo"] is not None else "-"
            lines.append(f"| {p['group']} | {p['params']:,} | {_fmt(p['onset_tasks'], 'd')} | {interval} | {p['verdict']} | "
                         f"{p['note']} |")
        if not family["fit"]:
            lines.append(f"\nNo fit: {family['why_no_fit']}.")
            continue
        fits = family["fit"]
        lines += ["", f"Coefficients with {result.level:.0%} confidence intervals ({_fit_count(family)}).", "",
                  "| model | formula | a | b | R² | RMSE | LOO RMSE |", "|---|---|---:|---:|---:|---:|---:|"]
        for name, m in fits["models"].items():
            lines.append(f"| {name} | {m['formula']} | {_coefficient(fits, name, 'a')} | "
                         f"{_coefficient(fits, name, 'b')} | {m['r2']:.4f} | {m['rmse']:.3f} | {m['loo_rmse']:.3f} |")
        lines.append(f"\nBest by leave-one-out RMSE: **{fits['best']}**.")
    if len({r["variant"] for r in result.mitigations}) > 1:
        lines += ["", "## Mitigations", "", f"Side by side: {MITIGATIONS_KEY.format(level=result.level)}.", ""]
        lines += markdown_table(side_by_side(result.mitigations), SIDE_BY_SIDE)
    if len({r["preceding_language"] for r in by_language}) > 1:
        lines += ["", "## Probe AUC by the preceding language (Table III)", "", "| size | language | probes | mean AUC |",
                  "|---|---|---:|---:|"]
        lines += [f"| {r['size']} | {r['preceding_language']} | {r['probes']} | {r['mean_auc']:.4f} |" for r in by_language]
    lines += ["", "## Figures", ""]
    for stem, caption in captions:
        lines += [f"![{stem}]({stem}.png)", "", f"*{caption}*", ""]
    if result.skipped:
        lines += ["## Not drawn", ""] + [f"- {name}: {why}" for name, why in result.skipped]
    return "\n".join(lines) + "\n"
