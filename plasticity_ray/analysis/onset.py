"""From a run's probe AUCs to the onset of plasticity loss (§V-A, Appendix B).

Eq. (1): the % change of each probe's AUC relative to AUC₁, the probe after the first cycle (a run
picks it: `Run.auc_reference`). Appendix B: every probe's AUC (cycle ends and extended probes) divided
by the probe-language-alone AUC (the baseline), smoothed by a centred moving average of window 3;
the onset is the task-instance number (tasks trained so far) at the minimum of the smoothed curve.
Dividing by the baseline does not move the minimum, so runs without a baseline still get an onset.

Beyond the paper: `group_onset` gives the onset of a group of seeds (and probe replicates) with an
interval and a verdict on plasticity loss, both calibrated by the tests' simulations.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import numpy as np

WINDOW = 3


def percent_change(aucs: list[float], reference: float) -> list[float]:
    """Eq. (1): 100 · (AUC_k / AUC_1 − 1), with AUC_1 = `reference`."""
    return [100.0 * (a / reference - 1.0) for a in aucs]


def moving_average(values: list[float], window: int = WINDOW) -> list[float | None]:
    """Centred moving average; None where the window does not fit (the ends)."""
    half = window // 2
    return [sum(values[i - half : i + half + 1]) / window if half <= i < len(values) - half else None
            for i in range(len(values))]


@dataclass(frozen=True)
class Onset:
    task_instance: int | None  # tasks trained at the onset probe; None when there is none to report
    status: str  # "found", "not_yet" (still improving at the last probe), "from_start", "too_few"
    message: str
    tasks: list[int] = field(default_factory=list)  # tasks trained at each probe used
    values: list[float] = field(default_factory=list)  # normalised AUC (or AUC) at each probe
    smoothed: list[float | None] = field(default_factory=list)


def find_onset(tasks: list[int], aucs: list[float | None], baseline: float | None = None,
               window: int = WINDOW) -> Onset:
    """The onset from probes after `tasks` tasks with these AUCs (missing AUCs are skipped). Ties
    go to the earliest minimum. A minimum at the last smoothed point is "not yet": the curve is
    still falling; at the first, "from_start": it rises from the first probes on."""
    points = sorted((t, a) for t, a in zip(tasks, aucs) if a is not None and math.isfinite(a))
    skipped = len(tasks) - len(points)
    note = f" ({skipped} missing probe(s) skipped)" if skipped else ""
    xs = [t for t, _ in points]
    ys = [a / baseline if baseline else a for _, a in points]
    if len(points) < window:
        return Onset(None, "too_few", f"{len(points)} probe(s){note}: an onset needs at least {window}", xs, ys,
                     [None] * len(ys))
    smoothed = moving_average(ys, window)
    inner = [i for i, v in enumerate(smoothed) if v is not None]
    best = min(inner, key=lambda i: (smoothed[i], i))
    if best == inner[-1] and len(inner) > 1:
        return Onset(None, "not_yet", f"no onset yet: the smoothed AUC is lowest at the last window "
                     f"(after {xs[best]} tasks){note}", xs, ys, smoothed)
    if best == inner[0] and len(inner) > 1:
        return Onset(xs[best], "from_start", f"the smoothed AUC rises from the first window on: onset at or "
                     f"before {xs[best]} tasks{note}", xs, ys, smoothed)
    return Onset(xs[best], "found", f"onset after {xs[best]} tasks{note}", xs, ys, smoothed)


LEVEL = 0.9  # the confidence level of every interval and the verdict's test (α = 1 − LEVEL)
DRAWS = 4000  # parametric bootstrap draws; seeded, so a table reads the same every time


@dataclass(frozen=True)
class GroupOnset:
    """The onset of a group of runs that differ only in their seed (each probe point measured by
    its probe replicates), with how sure it is. `onset` is Appendix B's, on the group's mean curve."""

    onset: Onset
    seeds: int
    replicates: int  # probe replicates per probe point (the fewest, where they differ)
    level: float
    noise: str | None  # what the spread was estimated from: "seeds" or "probe replicates"; None: nothing
    noise_sd: float | None  # of one point of the mean curve
    interval: tuple[int, int] | None  # onset interval in tasks trained, at `level`
    rise: float | None  # smoothed curve: last window − minimum (normalised AUC units)
    p_value: float | None  # of a rise this large on a flat curve with this noise
    why_no_interval: str | None = None

    @property
    def verdict(self) -> str:
        if self.p_value is None:
            return "no verdict"
        return "significant" if self.p_value < 1 - self.level else "not distinguishable from noise"

    @property
    def message(self) -> str:
        """The onset, its interval and the verdict in words."""
        if self.why_no_interval:
            return f"{self.onset.message}; no interval: {self.why_no_interval}"
        lo, hi = self.interval
        return (f"{self.onset.message} [{lo}, {hi}] ({self.level:.0%} interval, from {self.noise}); loss of plasticity: "
                f"{self.verdict} (rise after the minimum {self.rise:+.4f}, p = {self.p_value:.3g})")


def _noise(means: np.ndarray, replicates: list[list[list[float]]]) -> tuple[np.ndarray, int, str] | None:
    """Variance of each point of the group's mean curve, its degrees of freedom, and the source.
    Seeds (≥ 2): the seed × point residuals after removing each seed's level (a seed that is better
    everywhere moves neither the minimum nor the rise). One seed: the spread of its probe replicates."""
    seeds, points = means.shape
    if seeds >= 2:
        residual = means - means.mean(1, keepdims=True) - means.mean(0, keepdims=True) + means.mean()
        df = (seeds - 1) * (points - 1)
        return np.full(points, (residual**2).sum() / df / seeds), df, "seeds"
    counts = np.array([len(values) for values in replicates[0]])
    df = int((counts - 1).sum())
    if df == 0:
        return None
    squares = sum(((np.asarray(v) - np.mean(v)) ** 2).sum() for v in replicates[0])
    return squares / df / counts, df, "probe replicates"


def group_onset(tasks: list[int], replicates: list[list[list[float] | None]], level: float = LEVEL,
                draws: int = DRAWS, seed: int = 0) -> GroupOnset:
    """`replicates[s][j]`: the (normalised) AUCs of seed s's probe replicates after `tasks[j]` tasks,
    None where that probe is missing (the point is then left out for the whole group).

    The interval is a parametric bootstrap: Gaussian noise of the estimated size (its own
    uncertainty included: σ̂²·df/χ²_df, as a t-statistic has it) is added to the mean
    curve, the onset is found again in every draw, and the interval is the shortest range of tasks
    that holds `level` of those onsets (and the onset itself). The verdict tests the rise of the smoothed curve from its
    minimum to its last window against the rise that flat curves with the same noise show by chance:
    a one-sided test at α = 1 − level. The rise statistic divided by the noise estimate is pivotal, so
    the test's false-loss rate on flat curves is α whatever the noise."""
    order = sorted(range(len(tasks)), key=lambda j: tasks[j])
    kept = [j for j in order if all(run[j] for run in replicates)]
    xs = [tasks[j] for j in kept]
    values = [[list(run[j]) for j in kept] for run in replicates]
    means = np.array([[np.mean(v) for v in run] for run in values]).reshape(len(values), len(kept))
    curve = means.mean(0)
    onset = find_onset(xs, curve.tolist())
    fewest = min((len(v) for run in values for v in run), default=0)
    skipped = len(tasks) - len(kept)
    if skipped:
        onset = replace(onset, message=f"{onset.message} ({skipped} probe point(s) missing in some run left out)")

    def without(why: str) -> GroupOnset:
        return GroupOnset(onset, len(values), fewest, level, None, None, None, None, None, why)

    if onset.status == "too_few":
        return without("too few probe points")
    noise = _noise(means, values)
    if noise is None:
        return without("one seed and one probe replicate measure no noise (add seeds, e.g. sweep.grid.seed: "
                       "[0, 1], or probe.replicates: 2)")
    variance, df, source = noise
    rng = np.random.default_rng(seed)
    scale = np.sqrt(variance[None, :] * df / rng.chisquare(df, (draws, 1)))
    noise_draws = scale * rng.standard_normal((draws, len(curve)))
    smoothed_draws = _smooth(curve + noise_draws)
    onsets = np.asarray(xs)[smoothed_draws.argmin(1) + WINDOW // 2]
    lo, hi = _shortest(onsets, level)
    smoothed = _smooth(curve[None, :])[0]
    estimate = xs[int(np.argmin(smoothed)) + WINDOW // 2]
    rise = float(smoothed[-1] - smoothed.min())
    null = _smooth(noise_draws)
    null_rise = null[:, -1] - null.min(1)
    p_value = float((1 + np.sum(null_rise >= rise)) / (draws + 1))
    return GroupOnset(onset, len(values), fewest, level, source, float(np.sqrt(variance.mean())),
                      (int(min(lo, estimate)), int(max(hi, estimate))), rise, p_value)


def _shortest(values: np.ndarray, level: float) -> tuple[float, float]:
    """The shortest interval [lo, hi] that holds at least `level` of `values`."""
    ordered = np.sort(values)
    inside = int(np.ceil(level * len(ordered)))
    widths = ordered[inside - 1 :] - ordered[: len(ordered) - inside + 1]
    start = int(np.argmin(widths))
    return ordered[start], ordered[start + inside - 1]


def _smooth(curves: np.ndarray) -> np.ndarray:
    """The centred moving average of each row, where the window fits."""
    return np.lib.stride_tricks.sliding_window_view(curves, WINDOW, axis=1).mean(-1)


def mean_interval(values: list[float], level: float = LEVEL) -> tuple[float, float | None]:
    """The mean of independent measurements and the half-width of its t-interval at `level`
    (None for one measurement)."""
    from scipy import stats

    mean = float(np.mean(values))
    if len(values) < 2:
        return mean, None
    se = float(np.std(values, ddof=1) / np.sqrt(len(values)))
    return mean, float(stats.t.ppf((1 + level) / 2, len(values) - 1) * se)
