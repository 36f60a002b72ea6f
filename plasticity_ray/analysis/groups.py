"""Runs that differ only in their seed, taken together: the group's mean curve, its % change (Eq. 1)
with its spread, its onset (Appendix B) with an interval, and the verdict on plasticity loss, in
numbers (`group_row`) and in words (`group_sentence`). Seeds measure training noise; probe
replicates measure probe noise (see `onset.group_onset`)."""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from functools import cached_property

from plasticity_ray.analysis.onset import LEVEL, GroupOnset, group_onset, holm, mean_interval
from plasticity_ray.analysis.runs import Run

GROUP_COLUMNS = ["group", "size", "params", "variant", "lr", "lr_rule", "mode", "seeds", "replicates", "probes", "cycles",
                 "auc_change_percent", "auc_change_pm", "onset_tasks", "onset_lo", "onset_hi", "onset_tokens",
                 "status", "verdict", "p_value", "p_adjusted", "groups_tested", "noise", "probe_noise_p_value",
                 "message"]


def replicate_aucs(probe: dict) -> list[float]:
    """A probe row's replicate AUCs (rows written before replicates existed hold one)."""
    return probe.get("replicate_aucs") or [probe["auc"]]


@dataclass
class RunGroup:
    runs: list[Run]  # by seed
    level: float = LEVEL

    @property
    def first(self) -> Run:
        return self.runs[0]

    @property
    def name(self) -> str:
        run = self.first
        extra = f", {run.variant}" if run.variant != "none" else ""
        return f"{run.size} (lr {run.lr:.2g}{extra})"

    @property
    def seeds(self) -> list[int]:
        return [run.spec["seed"] for run in self.runs]

    @property
    def normalised(self) -> bool:
        """Whether the curves are divided by each run's baseline (only when every run has one)."""
        return all(r.baseline for r in self.runs)

    def _normalised(self, run: Run, probe: dict) -> list[float]:
        return [a / run.baseline for a in replicate_aucs(probe)] if self.normalised else replicate_aucs(probe)

    @cached_property
    def onset(self) -> GroupOnset:
        """Over every probe (Appendix B), each divided by its run's baseline when all runs have one."""
        tasks = sorted({run.tasks_trained(p) for run in self.runs for p in run.probes})
        curves = []
        for run in self.runs:
            by_tasks = {run.tasks_trained(p): self._normalised(run, p) for p in run.probes}
            curves.append([by_tasks.get(t) for t in tasks])
        positions = [t % self.first.languages for t in tasks] if self.first.mode == "continual" else None
        return group_onset(tasks, curves, self.level, positions=positions)

    @cached_property
    def auc_change(self) -> tuple[float, float | None, float] | None:
        """Eq. (1) at the last cycle-end probe all runs reached: (mean %, ± half-width at `level` or
        None, cycles). The spread is over seeds; with one seed, over its probe replicates (replicate r
        of the last probe against replicate r of the reference: independent pairs)."""
        ends = [run.cycle_end_probes for run in self.runs]
        if not all(len(e) >= 2 for e in ends):
            return None
        last = min(len(e) for e in ends) - 1
        cycles = self.first.cycles(ends[0][last])
        if len(self.runs) >= 2:
            changes = [100 * (e[last]["auc"] / e[0]["auc"] - 1) for e in ends]
        else:
            pairs = zip(replicate_aucs(ends[0][last]), replicate_aucs(ends[0][0]))
            changes = [100 * (a / b - 1) for a, b in pairs]
        mean, half = mean_interval(changes, self.level)
        return mean, half, cycles


def group_runs(runs: list[Run], level: float = LEVEL) -> list[RunGroup]:
    """Runs whose specs are equal but for the seed, in the order of their first run. The groups'
    verdicts are one family of tests: their p-values are Holm-adjusted over the groups tested."""
    groups: dict[str, RunGroup] = {}
    for run in runs:
        key = json.dumps({k: v for k, v in run.spec.items() if k != "seed"}, sort_keys=True)
        groups.setdefault(key, RunGroup([], level)).runs.append(run)
    for group in groups.values():
        group.runs.sort(key=lambda r: r.spec["seed"])
    found = list(groups.values())
    adjusted = holm([g.onset.p_value for g in found])
    tests = sum(p is not None for p in adjusted)
    for group, p in zip(found, adjusted):
        if p is not None:
            group.onset = replace(group.onset, p_adjusted=p, tests=tests)  # replaces the cached value
    return found


def _members(group: RunGroup) -> str:
    seeds = len(group.runs)
    replicates = group.onset.replicates
    text = f"{seeds} seed{'s' if seeds != 1 else ''}"
    return text + (f" × {replicates} probe replicates" if replicates > 1 else "")


def group_row(group: RunGroup) -> dict:
    o = group.onset
    change = group.auc_change
    run = group.first
    return {
        "group": group.name, "size": run.size, "params": run.params, "variant": run.variant, "lr": run.lr, "lr_rule": run.lr_rule,
        "mode": run.mode, "seeds": len(group.runs), "replicates": o.replicates, "probes": len(o.onset.tasks),
        "cycles": change[2] if change else None,
        "auc_change_percent": change[0] if change else None, "auc_change_pm": change[1] if change else None,
        "onset_tasks": o.onset.task_instance,
        "onset_lo": o.interval[0] if o.interval else None, "onset_hi": o.interval[1] if o.interval else None,
        "onset_tokens": o.onset.task_instance * run.tokens_per_task if o.onset.task_instance is not None else None,
        "status": o.onset.status, "verdict": o.verdict, "p_value": o.p_value, "p_adjusted": o.p_adjusted,
        "groups_tested": o.tests if o.p_value is not None else None, "noise": o.noise,
        "probe_noise_p_value": o.probe_noise_p_value,
        "message": group_sentence(group),
    }


def group_sentence(group: RunGroup) -> str:
    """E.g. "L2-d128 (lr 0.003) (2 seeds): probe AUC +3.1% ± 2.0% after 4 cycles; onset after 16
    tasks [12, 24] (90% interval, from seeds); loss of plasticity: significant (…)"."""
    parts = []
    change = group.auc_change
    if change:
        mean, half, cycles = change
        spread = f" ± {half:.1f}% ({group.level:.0%})" if half is not None else " (no spread: one seed, one replicate)"
        parts.append(f"probe AUC {mean:+.1f}%{spread} after {cycles:g} cycles (Eq. 1)")
    parts.append(group.onset.message)
    return f"{group.name} ({_members(group)}): " + "; ".join(parts)
