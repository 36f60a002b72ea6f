"""The paper's figures, drawn from an experiment's runs with matplotlib.

Each `fig_*` returns a matplotlib Figure, or raises `Skip` saying which data it lacks, so the report
can list what it left out and why.
"""

from __future__ import annotations

import math

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from scipy import stats  # noqa: E402

from plasticity_ray.analysis.fits import FORMULAS, MODELS, band, predictor  # noqa: E402
from plasticity_ray.analysis.groups import RunGroup, group_runs  # noqa: E402
from plasticity_ray.analysis.onset import Onset, mean_interval  # noqa: E402
from plasticity_ray.analysis.runs import Run  # noqa: E402

MAX_PANELS = 8


class Skip(Exception):
    """The figure cannot be drawn from this experiment; the message says why."""


def _continual(runs: list[Run], least: int = 1, cycle_ends: bool = False) -> list[Run]:
    chosen = [r for r in runs if r.mode == "continual" and len(r.cycle_end_probes if cycle_ends else r.probes) >= least]
    if not chosen:
        raise Skip(f"no continual run with at least {least}{' cycle-end' if cycle_ends else ''} probe(s)")
    return chosen


def _panels(count: int, width: float = 4.2, height: float = 3.2):
    count = min(count, MAX_PANELS)
    cols = min(count, 4)
    rows = math.ceil(count / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(width * cols, height * rows), squeeze=False)
    for ax in axes.flat[count:]:
        ax.set_visible(False)
    return fig, list(axes.flat[:count])


def _measured(runs: list[Run], diagnostic: str) -> list[Run]:
    chosen = [r for r in _continual(runs) if any(diagnostic in d for d in r.diagnostics.values())]
    if not chosen:
        raise Skip(f"no {diagnostic} diagnostics")
    return chosen


def _integer_ticks(ax) -> None:
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))


def _by_size(runs: list[Run]) -> list[Run]:
    return sorted(runs, key=lambda r: (r.params, r.trial_id))


def _change_plot(chosen: list[Run], x, xlabel: str, ylabel: str, title: str) -> plt.Figure:
    """Eq. (1)'s % change of probe AUC at the cycle-end probes against `x(run, probe)`: per group of
    runs that differ only in their seed, the mean over seeds with its t-interval band (each seed a
    thin line), or the single run's line."""
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for group in sorted(group_runs(chosen), key=lambda g: (g.first.params, g.name)):
        if len(group.runs) == 1:
            run = group.first
            probes = run.cycle_end_probes
            ax.plot([x(run, p) for p in probes], run.auc_change(probes), marker="o", ms=3, label=run.label)
            continue
        points = min(len(r.cycle_end_probes) for r in group.runs)
        changes = np.array([r.auc_change(r.cycle_end_probes[:points]) for r in group.runs], float)
        xs = [x(group.first, p) for p in group.first.cycle_end_probes[:points]]
        spread = [mean_interval(list(column), group.level) for column in changes.T]
        mean = np.array([m for m, _ in spread])
        half = np.array([h for _, h in spread])
        line, = ax.plot(xs, mean, marker="o", ms=3, label=f"{group.name}, mean of {len(group.runs)} seeds")
        ax.fill_between(xs, mean - half, mean + half, color=line.get_color(), alpha=0.15, lw=0,
                        label=f"{group.level:.0%} interval of the mean")
        for row in changes:
            ax.plot(xs, row, color=line.get_color(), lw=0.6, alpha=0.4)
    ax.axhline(0, color="grey", lw=0.8, ls="--")
    ax.set(xlabel=xlabel, ylabel=ylabel, title=title)
    ax.legend(fontsize=8)
    return fig


def fig_auc_change(runs: list[Run], onsets: dict[str, Onset]) -> plt.Figure:
    """Fig. 2: % change of the cycle-end probes' AUC relative to the first cycle's vs cycle, one line per run."""
    return _change_plot(_continual(runs, least=2, cycle_ends=True), lambda run, p: run.cycles(p),
                        "cycles trained (each cycle = every language once)", "% change in probe AUC vs cycle 1",
                        "Plasticity over continual training (Eq. 1; above 0 = learns the probe language slower)")


def fig_stationary(runs: list[Run], onsets: dict[str, Onset]) -> plt.Figure:
    """Fig. 4: the same for stationary (mixture) runs, against tokens."""
    chosen = [r for r in runs if r.mode == "stationary" and len(r.probes) >= 2]
    if not chosen:
        raise Skip("no stationary run with at least 2 probes")
    return _change_plot(chosen, lambda run, p: p["tokens_seen"], "tokens trained", "% change in probe AUC vs first probe",
                        "Plasticity under a stationary mixture of languages")


def fig_onset_curves(groups: list[RunGroup]) -> plt.Figure:
    """Fig. 9: normalised AUC per probe (the mean over a group's seeds and probe replicates), its
    moving average, the onset and its interval, one panel per group of runs that differ only in seed."""
    chosen = [g for g in groups if g.first.mode == "continual" and len(g.onset.onset.values) >= 3]
    if not chosen:
        raise Skip("no continual run with at least 3 probes")
    fig, axes = _panels(len(chosen))
    for ax, group in zip(axes, sorted(chosen, key=lambda g: (g.first.params, g.name))):
        evidence, o = group.onset, group.onset.onset
        normalised = group.normalised
        ax.plot(o.tasks, o.values, "o-", color="tab:blue", ms=3, label="AUC / probe-language-alone AUC"
                if normalised else "AUC (no baseline probe)")
        if evidence.noise_sd is not None:
            half = stats.norm.ppf((1 + evidence.level) / 2) * evidence.noise_sd
            ax.fill_between(o.tasks, np.array(o.values) - half, np.array(o.values) + half, color="tab:blue", alpha=0.15,
                            lw=0, label=f"{evidence.level:.0%} band of a point (from {evidence.noise}"
                            + (": probe noise only)" if evidence.noise == "probe replicates" else ")"))
        inner = [(t, v) for t, v in zip(o.tasks, o.smoothed) if v is not None]
        ax.plot(*zip(*inner), color="gold", lw=2, label="moving average (3)")
        if o.task_instance is not None:
            lo, hi = evidence.interval or (o.task_instance, o.task_instance)
            interval = f" [{lo}, {hi}] ({evidence.level:.0%})" if evidence.interval else " (no interval)"
            ax.errorbar([o.task_instance], [o.smoothed[o.tasks.index(o.task_instance)]], fmt="o", color="red", ms=7,
                        xerr=[[o.task_instance - lo], [hi - o.task_instance]], capsize=4,
                        label=f"onset: {o.task_instance} tasks{interval}")
        ax.set(title=f"{group.name}, {len(group.runs)} seed(s)", xlabel="tasks trained",
               ylabel="normalised AUC" if normalised else "AUC")
        ax.legend(fontsize=7)
    fig.suptitle("Onset of plasticity loss: minimum of the smoothed probe AUC (Appendix B)")
    fig.tight_layout()
    return fig


def diagnostic_series(run: Run, key) -> tuple[list[float], list[float]]:
    xs, ys = [], []
    for p in run.probes:
        value = key(run.diagnostics.get(p["task_index"], {}))
        if value is not None:
            xs.append(run.cycles(p))
            ys.append(value)
    return xs, ys


def fig_correlates(runs: list[Run], onsets: dict[str, Onset]) -> plt.Figure:
    """Fig. 5: average weight magnitude and % dormant units vs cycle, the onset marked."""
    series = {
        "average |weight|": lambda d: d.get("weight_magnitude"),
        "% dormant MLP units": lambda d: (d.get("dormant_units") or {}).get("percent"),
    }
    chosen = [r for r in _continual(runs) if any(diagnostic_series(r, k)[0] for k in series.values())]
    if not chosen:
        raise Skip("no weight_magnitude or dormant_units diagnostics")
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for ax, (name, key) in zip(axes, series.items()):
        for run in _by_size(chosen):
            xs, ys = diagnostic_series(run, key)
            if xs:
                line, = ax.plot(xs, ys, marker="o", ms=3, label=run.label)
                onset = onsets[run.trial_id].task_instance
                if onset is not None:
                    ax.axvline(onset / run.languages, color=line.get_color(), ls=":", lw=1)
        ax.set(xlabel="cycles trained", ylabel=name, title=f"{name} (dotted: onset)")
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
        else:
            ax.text(0.5, 0.5, "not measured", ha="center", va="center", transform=ax.transAxes, color="grey")
    fig.suptitle("Correlates of plasticity loss")
    fig.tight_layout()
    return fig


def fig_dormant_layers(runs: list[Run], onsets: dict[str, Onset]) -> plt.Figure:
    """Fig. 6: % dormant units per layer (rows) at each probe (columns), one heatmap per run."""
    chosen = _measured(runs, "dormant_units")
    fig, axes = _panels(len(chosen))
    for ax, run in zip(axes, _by_size(chosen)):
        probes = [p for p in run.probes if "dormant_units" in run.diagnostics.get(p["task_index"], {})]
        grid = np.array([run.diagnostics[p["task_index"]]["dormant_units"]["per_layer_percent"] for p in probes]).T
        image = ax.imshow(grid, aspect="auto", origin="lower", cmap="magma",
                          extent=(0.5, len(probes) + 0.5, -0.5, grid.shape[0] - 0.5))
        ax.set(title=run.label, xlabel="probe (1 = first)", ylabel="layer")
        _integer_ticks(ax)
        fig.colorbar(image, ax=ax, label="% dormant")
    fig.suptitle("Dormant MLP units per layer over training")
    fig.tight_layout()
    return fig


def fig_attention(runs: list[Run], onsets: dict[str, Onset]) -> plt.Figure:
    """Fig. 7: % lazy and % collapsed heads vs cycle, and each head's mean entropy at the last probe."""
    chosen = _by_size(_measured(runs, "attention_entropy"))[: MAX_PANELS - 2]
    fig, axes = _panels(2 + len(chosen))
    for ax, (name, key) in zip(axes[:2], (("% lazy heads", "lazy_percent"), ("% collapsed heads", "collapsed_percent"))):
        for run in chosen:
            xs, ys = diagnostic_series(run, lambda d: (d.get("attention_entropy") or {}).get(key))
            ax.plot(xs, ys, marker="o", ms=3, label=run.label)
        ax.set(xlabel="cycles trained", ylabel=name, title=name)
        ax.legend(fontsize=7)
    for ax, run in zip(axes[2:], chosen):
        last = [d for _, d in sorted(run.diagnostics.items()) if "attention_entropy" in d][-1]["attention_entropy"]
        image = ax.imshow(np.array(last["per_head"]), aspect="auto", origin="lower", cmap="viridis", vmin=0,
                          vmax=last["h_max"])
        ax.set(title=f"{run.label}\nentropy per head, last probe", xlabel="head", ylabel="layer")
        _integer_ticks(ax)
        fig.colorbar(image, ax=ax, label=f"mean entropy (max {last['h_max']:.2f})")
    fig.suptitle("Attention: lazy heads (entropy near the maximum) and collapsed heads (near 0)")
    fig.tight_layout()
    return fig


def _fitted(families: list[dict]) -> list[dict]:
    fitted = [f for f in families if f["fit"]]
    if not fitted:
        raise Skip("no family (variant, learning-rate rule) has onsets of 3 model sizes to fit")
    return fitted


def _fit_points(family: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The family's fitted points (the same as `onset_fits.json`'s): sizes, onsets, and the onsets'
    interval half-widths below and above (0 without an interval)."""
    points = family["points"]
    onsets = np.array([p["onset_tasks"] for p in points], float)
    low = np.array([p["onset_lo"] if p["onset_lo"] is not None else t for p, t in zip(points, onsets)], float)
    high = np.array([p["onset_hi"] if p["onset_hi"] is not None else t for p, t in zip(points, onsets)], float)
    return np.array([p["params"] for p in points], float), onsets, np.vstack([onsets - low, high - onsets])


def fig_onset_scaling(families: list[dict], level: float) -> plt.Figure:
    """Fig. 3: onset vs non-embedding parameters on log-log axes, for each family the onsets its fit
    used (with their intervals), the log-log fit and its confidence band."""
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    for family in _fitted(families):
        params, onsets, errors = _fit_points(family)
        m = family["fit"]["models"]["log_log"]
        points = ax.errorbar(params, onsets, yerr=errors, fmt="o", capsize=3,
                             label=f"{family['family']}: onsets ({level:.0%} interval)")
        colour = points.lines[0].get_color()
        grid = np.geomspace(params.min() / 1.5, params.max() * 1.5, 100)
        ax.plot(grid, predictor("log_log", m["a"], m["b"])(grid), color=colour,
                label=f"ln T = {m['a']:.2f} + {m['b']:.3f}·ln P (R² {m['r2']:.3f})")
        ax.fill_between(grid, *band("log_log", params, onsets, grid, level), color=colour, alpha=0.2, lw=0)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set(xlabel="non-embedding parameters P", ylabel="onset T (task instances)",
           title=f"Onset of plasticity loss vs model size (bands: {level:.0%} confidence of each fit)")
    ax.legend(fontsize=7)
    return fig


def fig_fits(families: list[dict], level: float) -> plt.Figure:
    """Fig. 10: the four fitted models over the data, each with its confidence band, one panel per family."""
    fitted = _fitted(families)
    fig, axes = _panels(len(fitted), width=7, height=4.5)
    for ax, family in zip(axes, fitted):
        params, onsets, errors = _fit_points(family)
        fits = family["fit"]
        ax.errorbar(params, onsets, yerr=errors, fmt="ko", capsize=3, label="onsets fitted")
        grid = np.linspace(params.min(), params.max(), 200)
        for name in MODELS:
            m = fits["models"][name]
            line, = ax.plot(grid, predictor(name, m["a"], m["b"])(grid),
                            label=f"{name}: {FORMULAS[name]} (LOO RMSE {m['loo_rmse']:.3g})")
            ax.fill_between(grid, *band(name, params, onsets, grid, level), color=line.get_color(), alpha=0.1, lw=0)
        ax.set(xlabel="non-embedding parameters P", ylabel="onset T (task instances)",
               title=f"{family['family']}: four models, {level:.0%} bands (best by LOO RMSE: {fits['best']})")
        ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def fig_mitigations(groups: list[RunGroup]) -> plt.Figure:
    """Per size, two panels: the % change of probe AUC vs cycle per variant (mean over seeds), and
    each variant's last % change with its interval over seeds, its onset interval and verdict."""
    chosen = [g for g in groups if g.first.mode == "continual" and g.auc_change is not None]
    if len({g.first.variant for g in chosen}) < 2:
        raise Skip("every run has the same variant: nothing to compare")
    sizes = sorted({g.first.size for g in chosen}, key=lambda s: next(g.first.params for g in chosen if g.first.size == s))
    rows = max(len([g for g in chosen if g.first.size == s]) for s in sizes)
    fig, axes = plt.subplots(len(sizes), 2, figsize=(13, max(3.5, 0.38 * rows + 1.5) * len(sizes)), squeeze=False)
    for (curves, forest), size in zip(axes, sizes):
        members = sorted((g for g in chosen if g.first.size == size), key=lambda g: (g.first.variant != "none",
                                                                                    g.first.variant))
        for y, group in enumerate(reversed(members)):
            variant = group.first.variant
            by_cycle: dict[float, list[float]] = {}
            for run in group.runs:
                for probe, change in zip(run.cycle_end_probes, run.auc_change(run.cycle_end_probes)):
                    by_cycle.setdefault(run.cycles(probe), []).append(change)
            xs = sorted(by_cycle)
            line, = curves.plot(xs, [sum(by_cycle[x]) / len(by_cycle[x]) for x in xs], marker="o", ms=3,
                                lw=2.5 if variant == "none" else 1.2, color="black" if variant == "none" else None,
                                label=f"{variant} ({len(group.runs)} seeds)")
            mean, half, _ = group.auc_change
            o = group.onset
            significant = o.verdict == "significant"
            forest.errorbar(mean, y, xerr=half if half is not None else None, fmt="o", color=line.get_color(), capsize=3,
                            mfc=line.get_color() if significant else "white")
            onset = o.onset.label
            if o.interval:
                onset += f" [{o.interval[0]}, {o.interval[1]}]"
            forest.annotate(f"{onset}; {o.verdict}", (1.01, y), xycoords=("axes fraction", "data"), fontsize=7,
                            va="center", annotation_clip=False)
        forest.set_yticks(range(len(members)), [g.first.variant for g in reversed(members)], fontsize=8)
        forest.axvline(0, color="grey", lw=0.8, ls="--")
        forest.set(xlabel=f"% change of probe AUC, last cycle end vs first (± {chosen[0].level:.0%} interval over seeds)",
                   title=f"{size}: filled = loss of plasticity significant (Holm-adjusted)")
        curves.axhline(0, color="grey", lw=0.8, ls="--")
        curves.set(xlabel="cycles trained", ylabel="% change in probe AUC vs cycle 1", title=size)
        curves.legend(fontsize=6, ncol=2)
    fig.suptitle("Which mitigation keeps plasticity? (lower = learns the probe language faster)")
    fig.tight_layout()
    fig.subplots_adjust(right=0.8)
    return fig
