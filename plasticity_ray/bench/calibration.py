"""`plasticity-ray bench calibration`: the verdict and the onset interval of `analysis.onset`, run on
simulated groups of seeds whose truth is known, under noise they do not assume.

A group is S seeds × R probe replicates × J probe points. Each seed has its own level, its own
training noise along its probe points (the noise model) and each replicate its own probe noise:

    gaussian          training and probe noise independent N(0, σ) at every point
    ar1_0.5, ar1_0.9  training noise AR(1) along a seed's points (ρ 0.5, 0.9), marginal sd σ
    random_walk       training noise a random walk (steps N(0, σ/2)): a seed's curve drifts
    student_t3        training and probe noise Student t with 3 df, scaled to sd σ
    language_offsets  gaussian, plus Table III's offset of the language trained just before each
                      probe (zh, de, ru; 5M column, relative to the average of the eight)

Truths: a flat curve (no loss of plasticity: the verdict's false-loss rate), and Figure 2's size on
Figure 9's shape: a decline of 1% to a minimum at 35% of the run, then a rise of 1% over the rest
(the verdict's power; the interval's coverage of the known onset). σ = 0.3% of the AUC by default.
Layouts: 12 cycle ends (one probe after ru every 8 tasks), 8 cycles probed after zh, de and ru
(Appendix B's extended probing, 24 points), and 8 cycles probed after de and ru (16 points: two
probe positions, whose offset a 3-point moving average does not cancel, as in mitigations_demo).
One seed gives no verdict and no interval; its probe-noise-only figures are measured to show why.

The robustness grid checks only the interval (which is cheap), over onset positions, noise sizes and
the share of α each paired comparison gets (`onset.PAIR_SHARE` is chosen from it).
"""

from __future__ import annotations

import os
import time
from concurrent.futures import ProcessPoolExecutor
from typing import Callable

import numpy as np

from plasticity_ray.analysis.onset import (DRAWS, LEVEL, PAIR_SHARE, by_position, find_onset, onset_sets,
                                           rotation_p_values)

NOISE_MODELS = ("gaussian", "ar1_0.5", "ar1_0.9", "random_walk", "student_t3", "language_offsets")
SEEDS = (1, 2, 3, 5)
REPLICATES = (1, 3)
SIGMA = 0.003
# Table III, 5M column: AUC on Vietnamese after each language, relative to the average of the eight.
TABLE_III_OFFSET = {"zh": 3.0634 / 3.0562 - 1, "de": 3.0560 / 3.0562 - 1, "ru": 3.0793 / 3.0562 - 1}
GRID_NOISE = ("gaussian", "ar1_0.9", "random_walk")
GRID_SIGMA = (0.003, 0.006, 0.012)
GRID_ONSET_AT = (0.1, 0.2, 0.5)
GRID_SEEDS = (2, 3, 5)
GRID_SHARES = (1, 2, 3, 5)


def layout(name: str) -> tuple[np.ndarray, list[str]]:
    """Tasks trained at each probe and the language trained just before it."""
    if name == "cycle_ends":
        return np.arange(1, 13) * 8, ["ru"] * 12
    after = {"extended": ((2, "zh"), (6, "de"), (8, "ru")), "two_positions": ((6, "de"), (8, "ru"))}[name]
    points = [(8 * c + at, lang) for c in range(8) for at, lang in after]
    return np.array([t for t, _ in points]), [lang for _, lang in points]


LAYOUTS = ("cycle_ends", "extended", "two_positions")
GRID_LAYOUTS = ("cycle_ends", "extended")  # the interval alone does not compare positions


def true_curve(tasks: np.ndarray, onset_at: float | None, depth: float = 0.01, rise: float = 0.01) -> np.ndarray:
    """Normalised AUC: flat (onset_at None), or falling by `depth` (quadratic) to a minimum at
    `onset_at` of the run and rising by `rise` (linearly) to its end."""
    t = tasks.astype(float)
    if onset_at is None:
        return np.ones_like(t)
    end, bottom = t.max(), onset_at * t.max()
    return 1 + np.where(t < bottom, depth * ((bottom - t) / bottom) ** 2, rise * (t - bottom) / (end - bottom))


def simulate(rng: np.random.Generator, model: str, groups: int, seeds: int, replicates: int,
             curve: np.ndarray, languages: list[str], sigma: float = SIGMA) -> np.ndarray:
    """AUCs: groups × seeds × replicates × points."""
    shape, points = (groups, seeds, 1, len(curve)), len(curve)
    if model == "student_t3":
        def draw(size):
            return rng.standard_t(3, size) * sigma / np.sqrt(3)
    else:
        def draw(size):
            return rng.normal(0, sigma, size)
    if model.startswith("ar1_"):
        rho = float(model.split("_")[1])
        shocks = rng.normal(0, sigma * np.sqrt(1 - rho**2), shape)
        training = np.empty(shape)
        training[..., 0] = rng.normal(0, sigma, shape[:-1])
        for j in range(1, points):
            training[..., j] = rho * training[..., j - 1] + shocks[..., j]
    elif model == "random_walk":
        training = np.cumsum(rng.normal(0, sigma / 2, shape), -1)
    else:
        training = draw(shape)
    offsets = np.array([TABLE_III_OFFSET[lang] for lang in languages]) if model == "language_offsets" else 0.0
    values = (curve + offsets + rng.normal(0, 0.02, (groups, seeds, 1, 1)) + training
              + draw((groups, seeds, replicates, points)))
    return values


def _true_onset(tasks: np.ndarray, curve: np.ndarray) -> int:
    return find_onset(tasks.tolist(), curve.tolist()).task_instance


def run_cell(cell: dict, groups: int, draws: int, seed_sequence: np.random.SeedSequence, level: float = LEVEL) -> dict:
    """One noise model × seeds × replicates × layout: false-loss rate, power, coverage, width."""
    rng = np.random.default_rng(seed_sequence)
    tasks, languages = layout(cell["layout"])
    seeds, replicates = cell["seeds"], cell["replicates"]
    alpha = 1 - level
    out = dict(cell)
    for truth, onset_at in (("flat", None), ("shaped", 0.35)):
        curve = true_curve(tasks, onset_at)
        values = simulate(rng, cell["noise"], groups, seeds, replicates, curve, languages)
        if seeds >= 2:
            samples, key = values.mean(2), ""
        elif replicates >= 2:  # one seed: its replicates, blind to its training noise
            samples, key = values[:, 0], "probe_noise_"
        else:
            continue
        p = rotation_p_values(by_position(samples, languages), rng, draws)
        if truth == "flat":
            out[f"{key}false_loss"] = float(np.mean(p < alpha))
        else:
            out[f"{key}power"] = float(np.mean(p < alpha))
            lo, hi = onset_sets(samples, tasks, level)
            true = _true_onset(tasks, curve)
            out["true_onset"] = true
            out[f"{key}coverage"] = float(np.mean((lo <= true) & (true <= hi)))
            out[f"{key}mean_width_tasks"] = float(np.mean(hi - lo))
    out["verdicts_given"] = seeds >= 2
    return out


def run_grid_cell(cell: dict, groups: int, seed_sequence: np.random.SeedSequence, level: float = LEVEL) -> dict:
    """The interval alone, for each share of α per paired comparison."""
    rng = np.random.default_rng(seed_sequence)
    tasks, languages = layout(cell["layout"])
    curve = true_curve(tasks, cell["onset_at"])
    true = _true_onset(tasks, curve)
    samples = simulate(rng, cell["noise"], groups, cell["seeds"], 1, curve, languages, cell["sigma"]).mean(2)
    out = dict(cell, true_onset=true)
    for share in GRID_SHARES:
        lo, hi = onset_sets(samples, tasks, level, share)
        out[f"coverage_share_{share}"] = float(np.mean((lo <= true) & (true <= hi)))
        out[f"width_share_{share}"] = float(np.mean(hi - lo) / tasks.max())
    return out


def _cells(seeds: tuple[int, ...], replicates: tuple[int, ...], models: tuple[str, ...]) -> list[dict]:
    return [{"layout": lay, "noise": model, "seeds": s, "replicates": r}
            for lay in LAYOUTS for model in models for s in seeds for r in replicates
            if not (model == "language_offsets" and lay == "cycle_ends")]  # every cycle end follows ru


def _grid_cells() -> list[dict]:
    return [{"layout": lay, "noise": model, "sigma": sigma, "onset_at": at, "seeds": s}
            for lay in GRID_LAYOUTS for model in GRID_NOISE for sigma in GRID_SIGMA for at in GRID_ONSET_AT
            for s in GRID_SEEDS]


def _call(job):
    function, args = job
    return function(*args)


def calibration_study(groups: int = 5000, grid_groups: int = 400, draws: int = DRAWS, seed: int = 2026,
                      workers: int | None = None, seeds: tuple[int, ...] = SEEDS,
                      replicates: tuple[int, ...] = REPLICATES, models: tuple[str, ...] = NOISE_MODELS,
                      grid: bool = True, say: Callable[[str], None] = print) -> dict:
    """Every cell seeded from (seed, cell number): the same record for any number of workers."""
    cells, grid_cells = _cells(seeds, replicates, models), _grid_cells() if grid else []
    streams = np.random.SeedSequence(seed).spawn(len(cells) + len(grid_cells))
    jobs = [(run_cell, (c, groups, draws, s)) for c, s in zip(cells, streams)]
    jobs += [(run_grid_cell, (c, grid_groups, s)) for c, s in zip(grid_cells, streams[len(cells):])]
    workers = workers or os.cpu_count() or 1
    start, results = time.monotonic(), []
    say(f"calibration: {len(cells)} cells × {groups} groups and {len(grid_cells)} interval-grid cells × "
        f"{grid_groups} groups on {workers} process(es)")
    if workers == 1:
        iterator = map(_call, jobs)
    else:
        pool = ProcessPoolExecutor(workers)
        iterator = pool.map(_call, jobs, chunksize=1)
    try:
        for i, result in enumerate(iterator, 1):
            results.append(result)
            if i % 10 == 0 or i == len(jobs):
                say(f"  {i}/{len(jobs)} cells, {time.monotonic() - start:.0f} s")
    finally:
        if workers != 1:
            pool.shutdown()
    return {
        "method": {
            "verdict": f"rotation test over seeds (Langsrud 2005) of the smoothed curve's rise after its minimum, "
                       f"{draws} random rotations, one-sided at alpha = {1 - LEVEL:.2g}",
            "interval": f"points no other point beats in a one-sided paired t-test over seeds at alpha/{PAIR_SHARE}; "
                        "the interval is their range",
            "one_seed": "no verdict and no interval; probe-noise-only figures from the probe replicates",
        },
        "level": LEVEL, "sigma": SIGMA, "groups_per_cell": groups, "grid_groups_per_cell": grid_groups, "seed": seed,
        "wall_s": round(time.monotonic() - start, 1),
        "cells": results[: len(cells)],
        "interval_grid": results[len(cells):],
    }


def summary(record: dict) -> dict:
    """The worst cell of each figure where a verdict or interval is given, and the grid's per share."""
    given = [c for c in record["cells"] if c["verdicts_given"]]
    out = {
        "max_false_loss": max(c["false_loss"] for c in given),
        "min_coverage": min(c["coverage"] for c in given),
        "min_power": min(c["power"] for c in given),
        "one_seed_probe_noise_max_false_loss": max((c["probe_noise_false_loss"] for c in record["cells"]
                                                    if "probe_noise_false_loss" in c), default=None),
    }
    for share in GRID_SHARES:
        grid = record["interval_grid"]
        if grid:
            out[f"grid_share_{share}"] = {"min_coverage": min(c[f"coverage_share_{share}"] for c in grid),
                                          "mean_width": float(np.mean([c[f"width_share_{share}"] for c in grid]))}
    return out


def format_summary(record: dict) -> str:
    """The table the README quotes: per noise model and number of seeds, over both layouts and 1 or 3
    probe replicates, the worst false-loss rate, the power's range, the worst coverage and the
    widths' range (in tasks, of runs 64-96 tasks long)."""
    lines = ["| noise | seeds | false loss (worst) | power | coverage (worst) | interval width (tasks) |",
             "|---|---:|---:|---:|---:|---:|"]
    cells = record["cells"]
    for model in dict.fromkeys(c["noise"] for c in cells):
        for seeds in sorted({c["seeds"] for c in cells}):
            chosen = [c for c in cells if c["noise"] == model and c["seeds"] == seeds]
            if not chosen:
                continue
            if seeds == 1:
                worst = max(c.get("probe_noise_false_loss", 0.0) for c in chosen)
                lines.append(f"| {model} | 1 | none given (probe noise only would say \"significant\" on "
                             f"{100 * worst:.0f}% of flat curves) | - | none given | - |")
                continue
            power = [c["power"] for c in chosen]
            width = [c["mean_width_tasks"] for c in chosen]
            lines.append(f"| {model} | {seeds} | {100 * max(c['false_loss'] for c in chosen):.1f}% | "
                         f"{100 * min(power):.0f}–{100 * max(power):.0f}% | {100 * min(c['coverage'] for c in chosen):.1f}% | "
                         f"{min(width):.0f}–{max(width):.0f} |")
    return "\n".join(lines)


def format_calibration(record: dict) -> str:
    """Every cell: false loss, power, coverage and width per layout, noise model, seeds and replicates."""
    lines = ["| layout | noise | seeds × replicates | false loss | power | coverage | mean width (tasks) |",
             "|---|---|---|---:|---:|---:|---:|"]
    for c in record["cells"]:
        members = f"{c['seeds']} × {c['replicates']}"
        if c["verdicts_given"]:
            cells = [f"{100 * c['false_loss']:.1f}%", f"{100 * c['power']:.1f}%", f"{100 * c['coverage']:.1f}%",
                     f"{c['mean_width_tasks']:.1f}"]
        elif "probe_noise_false_loss" in c:
            cells = [f"none given (probe noise only: {100 * c['probe_noise_false_loss']:.1f}%)", "-",
                     f"none given (probe noise only: {100 * c['probe_noise_coverage']:.1f}%)", "-"]
        else:
            cells = ["none given (no noise measured)", "-", "none given", "-"]
        lines.append(f"| {c['layout']} | {c['noise']} | {members} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
