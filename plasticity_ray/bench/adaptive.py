"""`plasticity-ray bench adaptive`: the adaptive protocol (`analysis.adaptive`: extended probes near
the minimum, groups that stop once their onset is confirmed) against the paper's (every extended
point probed, every task trained), on the same simulated groups.

A group is S seeds of one size trained for the paper's 48 cycles of 8 tasks, probed after zh, de
and ru (Appendix B's layout, 144 points). Its true curve is Figure 9's shape as the calibration
study draws it (`calibration.true_curve`: a 1% decline to a minimum at Table IV's onset of the size,
then a 1% rise to the end of the run), or flat; its noise is one of the calibration study's models
at σ 0.3%. Both protocols read the same draws: the paper's sees every point; the adaptive one sees
the cycle ends up to where it stops and the extended points of the cycles its decisions probed.

Per cell (noise model × truth × seeds): how often the group onset (Appendix B's, on the mean curve)
is the same; the same among groups whose paper onset lies in the cycles the adaptive protocol
probed; how far off it is when not; how often a group stops before its true onset (a flat curve: at
all); the tasks trained and probes run; and the peak of probe-point checkpoints kept per run, with
probe results arriving `lag` cycles after their cycle ends (training goes on meanwhile).
"""

from __future__ import annotations

import os
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

import numpy as np

from plasticity_ray.analysis.adaptive import FIRST_LOOK, Policy, policy_of, running_minimum, sequential_p_values
from plasticity_ray.analysis.onset import DRAWS, LEVEL, WINDOW, find_onset
from plasticity_ray.bench.calibration import NOISE_MODELS, simulate, true_curve
from plasticity_ray.spec import ExperimentSpec
from plasticity_ray.tables import read_csv

TABLE_IV = Path(__file__).resolve().parents[2] / "results" / "paper" / "table_iv.csv"
CYCLES = 48
LANGUAGES = ("en", "zh", "fr", "ja", "es", "de", "pt", "ru")  # the paper's cycle
EXTENDED = ("zh", "de")  # Appendix B's extended probes; ru ends the cycle
SEEDS = (2, 3, 5)
WINDOW_CYCLES, MARGIN_CYCLES = 2, 2  # experiments/paper_continual_adaptive.yaml's
LAG_CYCLES = 1


def size_onsets(path: Path = TABLE_IV) -> dict[str, int]:
    """Expected onsets (tasks) by model size, from a CSV with columns model,onset (Table IV's by default)."""
    return {model: round(onset) for model, onset in read_csv(path, {"model": str, "onset": float})}


def table_iv_onsets() -> dict[int, list[str]]:
    """Table IV's onsets (tasks) and the sizes that have each."""
    onsets: dict[int, list[str]] = {}
    for size, onset in size_onsets().items():
        onsets.setdefault(onset, []).append(size)
    return onsets


@dataclass(frozen=True)
class Layout:
    """The probe points of a continual schedule: tasks trained at each, the language trained just
    before it, its cycle; cycle ends are the points after the cycle's last language."""

    tasks: np.ndarray
    languages: list[str]
    cycle_of: np.ndarray
    per_cycle: int  # tasks per cycle
    extended: int  # extended points per cycle

    @property
    def ends(self) -> np.ndarray:
        return np.flatnonzero(self.tasks % self.per_cycle == 0)


def layout(cycles: int = CYCLES, languages: tuple[str, ...] = LANGUAGES, extended: tuple[str, ...] = EXTENDED) -> Layout:
    points = [(len(languages) * c + i + 1, lang, c) for c in range(cycles) for i, lang in enumerate(languages)
              if lang in extended or i == len(languages) - 1]
    return Layout(np.array([t for t, _, _ in points]), [lang for _, lang, _ in points],
                  np.array([c for _, _, c in points]), len(languages), len([x for x in languages[:-1] if x in extended]))


def adaptive_runs(cycle_ends: np.ndarray, policy: Policy, draws: int, rng: np.random.Generator,
                  lag: int = LAG_CYCLES, extended: int = len(EXTENDED)) -> dict[str, np.ndarray]:
    """What the adaptive protocol does with each group's cycle ends (groups × S × N): the last
    cycle trained, the cycles whose extended points it probes, and the peak of kept points."""
    groups, _, cycles = cycle_ends.shape
    looks = np.arange(WINDOW, cycles + 1)  # looks at which the smoothed curve exists
    p_values = sequential_p_values(cycle_ends, rng, draws)
    confirms = (p_values <= policy.threshold) & (looks >= FIRST_LOOK)
    confirmed_at = np.where(confirms.any(1), looks[confirms.argmax(1)], cycles + policy.margin_cycles + 1)
    stop_after = np.minimum(cycles - 1, confirmed_at - 1 + policy.margin_cycles)
    minima = running_minimum(cycle_ends.mean(1))  # groups × looks
    probed = np.zeros((groups, cycles), bool)
    released = np.zeros((groups, cycles), bool)
    peak = np.zeros(groups, int)
    cycle = np.arange(cycles)[None, :]
    window = policy.window_cycles
    for k, look in enumerate(looks):  # as `Decision.keeps` and `Decision.probe_cycles` decide
        live = (look <= stop_after + 1)[:, None]  # the group still measures this look
        minimum = minima[:, k, None]
        trained = cycle <= np.minimum(look - 1 + lag, stop_after)[:, None]
        near_minimum = (minimum - window < cycle) & (cycle <= minimum + window)
        released |= live & ~near_minimum & (cycle < look - window) & ~probed
        # Every window a look opens is probed, its points now or once trained (the runs act on the union);
        # the last look's window even when the curve is lowest at its end.
        opens = (minimum < look - 1 - WINDOW // 2) | (look == stop_after + 1)[:, None]
        probed |= live & near_minimum & opens & (cycle <= stop_after[:, None])
        kept = (trained & ~probed & ~released).sum(1) * extended
        peak = np.where(live[:, 0], np.maximum(peak, kept), peak)
    return {"stop_after": stop_after, "probed_cycles": probed, "peak_kept": peak}


def _onset_task(tasks: np.ndarray, curve: np.ndarray) -> int | None:
    return find_onset(tasks.tolist(), curve.tolist()).task_instance


def run_cell(cell: dict, groups: int, draws: int, seed_sequence: np.random.SeedSequence, probe_cost: float,
             policy: Policy, points: Layout | None = None) -> dict:
    rng = np.random.default_rng(seed_sequence)
    points = points or layout(policy.cycles)
    tasks, languages, cycle_of, ends = points.tasks, points.languages, points.cycle_of, points.ends
    total = policy.cycles * points.per_cycle
    onset = cell["onset"]
    curve = true_curve(tasks, None if onset is None else onset / total)
    values = simulate(rng, cell["noise"], groups, cell["seeds"], 1, curve, languages).mean(2)  # groups × S × points
    runs = adaptive_runs(values[:, :, ends], policy, draws, rng, extended=points.extended)
    means = values.mean(1)
    same, inside, off, paper_error, adaptive_error = [], [], [], [], []
    probes = []
    for g in range(groups):
        stop = runs["stop_after"][g]
        chosen = (cycle_of <= stop) & (np.isin(np.arange(len(tasks)), ends) | runs["probed_cycles"][g][cycle_of])
        paper = _onset_task(tasks, means[g])
        adaptive = _onset_task(tasks[chosen], means[g][chosen])
        same.append(paper == adaptive)
        inside.append(paper is not None and bool(runs["probed_cycles"][g][(paper - 1) // points.per_cycle]))
        if paper is not None and adaptive is not None and paper != adaptive:
            off.append(abs(paper - adaptive))
        if onset is not None:  # "not yet" (no onset found) counts as the end of the run
            paper_error.append(abs((paper or total) - onset))
            adaptive_error.append(abs((adaptive or total) - onset))
        probes.append(int(chosen.sum()) + 1)  # and the baseline
    same, inside = np.array(same), np.array(inside)
    trained_tasks = (runs["stop_after"] + 1) * points.per_cycle
    stopped = runs["stop_after"] < policy.cycles - 1
    before_onset = stopped & (trained_tasks < (np.inf if onset is None else onset))
    full_probes = len(tasks) + 1
    cost = (trained_tasks + probe_cost * np.array(probes)) / (total + probe_cost * full_probes)
    return {
        **cell,
        "true_onset": onset,
        "same_onset": float(same.mean()),
        "inside_window": float(inside.mean()),
        "same_onset_inside_window": float(same[inside].mean()) if inside.any() else None,
        "off_tasks_median": float(np.median(off)) if off else None,
        "off_tasks_max": int(max(off)) if off else None,
        "paper_error_tasks_median": float(np.median(paper_error)) if paper_error else None,
        "adaptive_error_tasks_median": float(np.median(adaptive_error)) if adaptive_error else None,
        "stopped": float(stopped.mean()),
        "stopped_before_true_onset": float(before_onset.mean()),
        "tasks_trained": float(trained_tasks.mean() / total),
        "probes_run": float(np.mean(probes) / full_probes),
        "compute": float(cost.mean()),
        "peak_kept_mean": float(runs["peak_kept"].mean()),
        "peak_kept_max": int(runs["peak_kept"].max()),
    }


PLAN_GROUPS, PLAN_DRAWS = 300, 1000


def expected_run(spec: ExperimentSpec, onset: int | None, seeds: int) -> dict:
    """What one run of `spec` is expected to do under its adaptive policies when its true onset is
    `onset` tasks (None: a flat curve), from PLAN_GROUPS simulated groups of `seeds` seeds on
    Gaussian noise of σ 0.3% and Figure 9's shape: the mean tasks trained and probe points probed
    (the baseline aside), and the most kept points held at once."""
    policy = replace(policy_of(spec), draws=PLAN_DRAWS, confirm_at=None)
    extended = spec.probe.extended.languages if spec.probe.extended else []
    points = layout(spec.schedule.cycles, tuple(spec.data.languages), tuple(extended))
    cell = {"noise": "gaussian", "seeds": seeds, "onset": onset, "sizes": []}
    result = run_cell(cell, PLAN_GROUPS, PLAN_DRAWS, np.random.SeedSequence(0), 1.0, policy, points)
    return {"tasks": result["tasks_trained"] * spec.tasks,
            "points": result["probes_run"] * (len(points.tasks) + 1) - 1, "kept_peak": result["peak_kept_max"]}


def _call(job):
    function, args = job
    return function(*args)


def adaptive_study(probe_cost: float, groups: int = 1000, flat_groups: int = 4000, draws: int = DRAWS,
                   seed: int = 2026, workers: int | None = None,
                   window_cycles: int = WINDOW_CYCLES, margin_cycles: int = MARGIN_CYCLES,
                   seeds: tuple[int, ...] = SEEDS, models: tuple[str, ...] = NOISE_MODELS,
                   say: Callable[[str], None] = print) -> dict:
    """Every cell seeded from (seed, cell number): the same record for any number of workers.
    `probe_cost`: what a probe point costs in training tasks (`plan.probe_cost_in_tasks`)."""
    policy = Policy(CYCLES, window_cycles, margin_cycles, LEVEL, draws)
    onsets = table_iv_onsets()
    truths: list[int | None] = [*sorted(onsets), None]
    cells = [{"noise": m, "seeds": s, "onset": t, "sizes": onsets.get(t, ["flat"])}
             for m in models for t in truths for s in seeds]
    streams = np.random.SeedSequence(seed).spawn(len(cells))
    # A flat curve's stops are the test's error, compared with its nominal level: more groups there.
    jobs = [(run_cell, (c, groups if c["onset"] is not None else flat_groups, draws, s, probe_cost, policy))
            for c, s in zip(cells, streams)]
    workers = workers or os.cpu_count() or 1
    say(f"adaptive protocol: {len(cells)} cells × {groups} groups ({flat_groups} on a flat curve) on "
        f"{workers} process(es)")
    start, results = time.monotonic(), []
    pool = ProcessPoolExecutor(workers) if workers > 1 else None
    try:
        for i, result in enumerate(pool.map(_call, jobs, chunksize=1) if pool else map(_call, jobs), 1):
            results.append(result)
            if i % 10 == 0 or i == len(jobs):
                say(f"  {i}/{len(jobs)} cells, {time.monotonic() - start:.0f} s")
    finally:
        if pool:
            pool.shutdown()
    return {
        "policy": {"near_minimum_cycles": window_cycles, "margin_cycles": margin_cycles, "level": LEVEL,
                   "per_look_threshold": policy.threshold, "draws": draws, "lag_cycles": LAG_CYCLES},
        "layout": f"{CYCLES} cycles of {len(LANGUAGES)} tasks, probes after {', '.join(EXTENDED)} and {LANGUAGES[-1]}",
        "truth": "calibration.true_curve: 1% decline to Table IV's onset, 1% rise to the end; or flat",
        "probe_cost_tasks": probe_cost, "groups_per_cell": groups, "flat_groups_per_cell": flat_groups, "seed": seed,
        "wall_s": round(time.monotonic() - start, 1), "cells": results,
    }


def summary(record: dict) -> dict:
    cells = record["cells"]
    shaped = [c for c in cells if c["true_onset"] is not None]
    return {
        "min_same_onset_inside_window": min(c["same_onset_inside_window"] for c in shaped
                                            if c["same_onset_inside_window"] is not None),
        "min_same_onset": min(c["same_onset"] for c in shaped),
        "max_stopped_before_true_onset": max(c["stopped_before_true_onset"] for c in cells),
        "nominal_error": 1 - record["policy"]["level"],
        "mean_compute": float(np.mean([c["compute"] for c in shaped])),
        "max_peak_kept": max(c["peak_kept_max"] for c in cells),
    }


def _range(values: list[float], scale: float = 100, digits: int = 0) -> str:
    low, high = min(values), max(values)
    return f"{scale * low:.{digits}f}–{scale * high:.{digits}f}"


def format_summary(record: dict) -> str:
    """The table the README quotes: per truth, over the noise models and seeds, the worst agreement,
    the median distance of each protocol's onset from the true one (worst cell), the worst early-stop
    rate, and the ranges of what was trained, probed and spent (the paper's protocol = 100%)."""
    lines = ["| sizes (Table IV onset) | same onset, minimum in the probed window (worst) | same onset, all (worst) | "
             "off the true onset, paper / adaptive (median, worst cell) | stopped before the true onset (worst) | "
             "tasks trained | probes run | compute | kept points (peak) |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    cells = record["cells"]
    for onset in dict.fromkeys(c["true_onset"] for c in cells):
        chosen = [c for c in cells if c["true_onset"] == onset]
        label = "flat (no onset)" if onset is None else f"{', '.join(chosen[0]['sizes'])} ({onset})"
        same_inside = same = off = "-"
        if onset is not None:
            same_inside = f"{100 * min(c['same_onset_inside_window'] for c in chosen):.1f}%"
            same = f"{100 * min(c['same_onset'] for c in chosen):.1f}%"
            off = (f"{max(c['paper_error_tasks_median'] for c in chosen):.0f} / "
                   f"{max(c['adaptive_error_tasks_median'] for c in chosen):.0f} tasks")
        lines.append(
            f"| {label} | {same_inside} | {same} | {off} | {100 * max(c['stopped_before_true_onset'] for c in chosen):.1f}% | "
            f"{_range([c['tasks_trained'] for c in chosen])}% | {_range([c['probes_run'] for c in chosen])}% | "
            f"{_range([c['compute'] for c in chosen])}% | {max(c['peak_kept_max'] for c in chosen)} |")
    return "\n".join(lines)
