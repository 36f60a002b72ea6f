"""What a run directory holds, read once for the result tables and the analysis: its spec, metric
rows, probe AUCs, baseline, diagnostics and alarms. Reads files only (through `rundir`): no torch,
no Ray."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

from plasticity_ray.analysis.onset import percent_change
from plasticity_ray.model.sizes import resolve_size
from plasticity_ray.rundir import (
    DIAGNOSTICS, METRICS_FILE, PROBES, SPEC_FILE, read_alarms, read_jsonl, read_job_rows, run_dirs, stopped_early,
)


@dataclass
class Run:
    path: Path
    spec: dict
    probes: list[dict]  # ok probe rows of probe points, by task index
    baseline: float | None
    diagnostics: dict[int, dict]  # task index → ok diagnostics row
    metrics: list[dict] = field(default_factory=list)
    alarms: list[dict] = field(default_factory=list)
    stopped: dict | None = None  # {"after_tasks", "reason"}: its group stopped it early (schedule.stop)

    @property
    def trial_id(self) -> str:
        return self.path.name

    @property
    def size(self) -> str:
        return self.spec["model"]["size"]

    @property
    def params(self) -> int:
        return resolve_size(self.size).non_embedding_params

    @property
    def mode(self) -> str:
        return self.spec["schedule"]["mode"]

    @property
    def languages(self) -> int:
        return len(self.spec["data"]["languages"])

    @property
    def tokens_per_task(self) -> int:
        return self.spec["schedule"]["tokens_per_task"]

    @property
    def variant(self) -> str:
        """What the run changes: its sweep variant's name, else its mitigations ("none")."""
        return self.spec.get("label") or mitigations_label(self.spec)

    @property
    def lr(self) -> float:
        lr = self.spec["optimizer"]["lr"]
        return resolve_size(self.size).paper_lr if lr == "paper" else lr

    @property
    def lr_rule(self) -> str:
        """How the LR was chosen: the paper's per-size rule (Table II) or one fixed value."""
        lr = self.spec["optimizer"]["lr"]
        return "paper LR" if lr == "paper" else f"lr {float(lr):.3g}"

    @property
    def label(self) -> str:
        extra = f", {self.variant}" if self.variant != "none" else ""
        return f"{self.size} (lr {self.lr:.2g}, seed {self.spec['seed']}{extra})"

    def tasks_trained(self, probe: dict) -> int:
        return probe["task_index"] + 1

    @cached_property
    def cycle_end_probes(self) -> list[dict]:
        """Figure 2's series: the probes at cycle ends (stationary runs: every probe, Figure 4's),
        without the extended probes after chosen languages mid-cycle (Appendix B)."""
        if self.mode == "stationary":
            return self.probes
        return [p for p in self.probes if self.tasks_trained(p) % self.languages == 0]

    @property
    def auc_reference(self) -> dict | None:
        """Eq. (1)'s AUC₁: the probe at the end of the first cycle (stationary: the first probe), or
        the earliest cycle-end probe there is when that one is missing."""
        return next(iter(self.cycle_end_probes), None)

    def auc_change(self, probes: list[dict]) -> list[float | None]:
        """Eq. (1)'s % change of each probe's AUC against `auc_reference` (None without one)."""
        reference = self.auc_reference
        if reference is None:
            return [None] * len(probes)
        return percent_change([p["auc"] for p in probes], reference["auc"])

    def cycles(self, probe: dict) -> float:
        return self.tasks_trained(probe) / self.languages

    def last_cycle_loss(self) -> float | None:
        """Mean training loss over the last cycle's metric rows (the train-loss cost of a mitigation)."""
        if not self.metrics:
            return None
        last = max(r["cycle"] for r in self.metrics)
        losses = [r["loss"] for r in self.metrics if r["cycle"] == last]
        return sum(losses) / len(losses)


def mitigations_label(spec_json: dict) -> str:
    """A short name for a run's mitigations, e.g. "shrink_perturb(shrink=0.8,noise=0.01)"; "none"."""
    parts = []
    for m in spec_json.get("mitigations", []):
        args = ",".join(f"{k}={v}" for k, v in m.items() if k != "name" and (k, v) != ("every", "task"))
        parts.append(f"{m['name']}({args})" if args else m["name"])
    if spec_json.get("model", {}).get("attention_sink"):
        parts.append("attention_sink")
    if spec_json.get("model", {}).get("activation", "gelu") != "gelu":
        parts.append(f"{spec_json['model']['activation']}_features")
    if spec_json.get("model", {}).get("normalize_activations"):
        parts.append("normalized_activations")
    return "+".join(parts) or "none"


def load_run(path: Path) -> Run:
    probes = [r for r in read_job_rows(path, PROBES) if r.get("status") == "ok"]
    baseline = next((r["auc"] for r in probes if r.get("checkpoint") is None), None)
    points = sorted((r for r in probes if r.get("task_index") is not None), key=lambda r: r["task_index"])
    diagnostics = {r["task_index"]: r for r in read_job_rows(path, DIAGNOSTICS) if r.get("status") == "ok"}
    metrics = [r for r in read_jsonl(path / METRICS_FILE) if "loss" in r]
    return Run(path, json.loads((path / SPEC_FILE).read_text()), points, baseline, diagnostics, metrics,
               read_alarms(path), stopped_early(path))


def load_runs(experiment_dirs: list[Path]) -> list[Run]:
    return [load_run(p) for d in experiment_dirs for p in run_dirs(d)]
