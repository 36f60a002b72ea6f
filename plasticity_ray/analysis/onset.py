"""From a run's probe AUCs to the onset of plasticity loss (§V-A, Appendix B).

Eq. (1): the % change of each probe's AUC relative to AUC₁, the probe after the first cycle (a run
picks it: `Run.auc_reference`). Appendix B: every probe's AUC (cycle ends and extended probes) divided
by the probe-language-alone AUC (the baseline), smoothed by a centred moving average of window 3;
the onset is the task-instance number (tasks trained so far) at the minimum of the smoothed curve.
Dividing by the baseline does not move the minimum, so runs without a baseline still get an onset.

Beyond the paper: `group_onset` gives the onset of a group of seeds (and probe replicates) with an
interval and a verdict on plasticity loss, both compared across seeds and calibrated by the study of
`plasticity-ray bench calibration` on noise they do not assume (drift, AR(1), heavy tails, language
offsets); `holm` adjusts the verdicts of many groups.
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

    @property
    def label(self) -> str:
        """A few words for a figure: where the onset is, or why there is none."""
        if self.status == "not_yet":
            return "no onset yet"
        if self.status == "too_few":
            return "too few probes"
        return f"onset {'≤ ' if self.status == 'from_start' else ''}{self.task_instance}"


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
DRAWS = 4000  # random rotations of the verdict's test; seeded, so a table reads the same every time
# The onset set keeps every probe point that no other point beats in a one-sided paired t-test over
# seeds at α / PAIR_SHARE. The calibration study's robustness grid (`plasticity-ray bench
# calibration`) chose 5: the first share whose worst cell covers above 85% (90.2%); with α per
# comparison the worst cell covered 66.8% (a long flat bottom, strongly correlated noise).
PAIR_SHARE = 5
ONE_SEED = "one seed: probe noise only; no verdict on loss of plasticity (add seeds, e.g. sweep.grid.seed: [0, 1, 2])"


@dataclass(frozen=True)
class GroupOnset:
    """The onset of a group of runs that differ only in their seed (each probe point measured by
    its probe replicates), with how sure it is. `onset` is Appendix B's, on the group's mean curve.
    The seed is the unit of replication: `interval` and `p_value` compare seeds, so whatever
    correlation one seed's curve has along its probe points (each inherits the weights of the one
    before) is accounted for. With one seed they are None and the probe-noise-only figures (from
    its probe replicates, blind to training noise) are kept apart."""

    onset: Onset
    seeds: int
    replicates: int  # probe replicates per probe point (the fewest, where they differ)
    level: float
    noise: str | None  # what the spread was estimated from: "seeds", "probe replicates"; None: nothing
    noise_sd: float | None  # of one point of the mean curve
    interval: tuple[int, int] | None  # onset interval in tasks trained, at `level` (seeds only)
    rise: float | None  # smoothed curve, each probe position against itself: last window − minimum
    p_value: float | None  # of a rise this large on a flat curve (rotation test over seeds)
    why_no_interval: str | None = None
    probe_noise_interval: tuple[int, int] | None = None  # one seed: from its probe replicates only
    probe_noise_p_value: float | None = None
    p_adjusted: float | None = None  # Holm-adjusted over the `tests` groups of one analysis
    tests: int = 1

    @property
    def verdict(self) -> str:
        p = self.p_adjusted if self.p_adjusted is not None else self.p_value
        if p is None:
            return "no verdict"
        return "significant" if p < 1 - self.level else "not distinguishable from noise"

    @property
    def message(self) -> str:
        """The onset, its interval and the verdict in words."""
        if self.probe_noise_p_value is not None:
            lo, hi = self.probe_noise_interval
            return (f"{self.onset.message}; {ONE_SEED}; probe noise only: onset [{lo}, {hi}], rise after the minimum "
                    f"{self.rise:+.4f} (p = {self.probe_noise_p_value:.3g} against probe noise alone)")
        if self.why_no_interval:
            return f"{self.onset.message}; no interval: {self.why_no_interval}"
        lo, hi = self.interval
        adjusted = (f"; Holm-adjusted over {self.tests} groups: {self.p_adjusted:.3g}"
                    if self.p_adjusted is not None and self.tests > 1 else "")
        return (f"{self.onset.message} [{lo}, {hi}] ({self.level:.0%} interval, from {self.noise}); loss of plasticity: "
                f"{self.verdict} (rise after the minimum {self.rise:+.4f}, p = {self.p_value:.3g}{adjusted})")


def group_onset(tasks: list[int], replicates: list[list[list[float] | None]], level: float = LEVEL,
                draws: int = DRAWS, seed: int = 0, positions: list[int] | None = None) -> GroupOnset:
    """`replicates[s][j]`: the (normalised) AUCs of seed s's probe replicates after `tasks[j]` tasks,
    None where that probe is missing (the point is then left out for the whole group).

    Each seed's curve is the mean of its replicates. The interval is `onset_sets`' and the verdict
    `rotation_p_values`' (both in `level`'s terms), over seeds; with one seed, the same over its
    probe replicates, reported as probe noise only and never as a verdict. `positions[j]`: where in
    the cycle probe j is (what language precedes it); the verdict compares each position with
    itself (`by_position`), so the offset between probes after different languages is no rise."""
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
    rng = np.random.default_rng(seed)
    if len(values) >= 2:
        samples, source = means, "seeds"
    elif fewest >= 2:  # one seed: its replicates, point by point (the fewest where counts differ)
        samples, source = np.array([[v[r] for v in values[0]] for r in range(fewest)]), "probe replicates"
    else:
        return without("one seed and one probe replicate measure no noise (add seeds, e.g. sweep.grid.seed: "
                       "[0, 1, 2], or probe.replicates: 3 for probe noise alone)")
    lo, hi = onset_sets(samples[None], np.asarray(xs), level)
    tested = by_position(samples, None if positions is None else [positions[j] for j in kept])
    rise = float(_rise(tested.mean(0)))
    p_value = float(rotation_p_values(tested[None], rng, draws)[0])
    noise_sd = float(np.sqrt(samples.var(0, ddof=1).mean() / len(samples)))
    interval = (int(lo[0]), int(hi[0]))
    if source == "seeds":
        return GroupOnset(onset, len(values), fewest, level, source, noise_sd, interval, rise, p_value)
    return GroupOnset(onset, 1, fewest, level, source, noise_sd, None, rise, None,
                      probe_noise_interval=interval, probe_noise_p_value=p_value)


def by_position(samples: np.ndarray, positions: list | None) -> np.ndarray:
    """Each curve (row) less the mean of its own points at the same position in the cycle, plus its
    overall mean: a probe's AUC depends on the language trained just before it (the paper's Table
    III) by far more than a CPU-scale run's trend, and probes at several positions would make that
    offset look like a rise. The same linear map for every curve, so the rotation test stays exact."""
    if positions is None or len(set(positions)) < 2:
        return samples
    adjusted = samples.astype(float).copy()
    where = np.asarray(positions)
    for position in set(positions):
        at = where == position
        adjusted[..., at] -= samples[..., at].mean(-1, keepdims=True)
    return adjusted + samples.mean(-1, keepdims=True)


def rotation_p_values(samples: np.ndarray, rng: np.random.Generator, draws: int = DRAWS) -> np.ndarray:
    """p-values of the rise of the smoothed mean curve (last window − minimum) on a flat curve, for
    `samples[g]` (S curves × J points) of each group g: a rotation test (Langsrud 2005). On a flat
    curve the S curves are exchangeable draws around one level, and for Gaussian noise their joint
    law is unchanged by any rotation of the S curves among themselves, whatever the covariance along
    the J points (AR, random walk). So the mean curve (the rotation that sums the curves equally)
    is one draw among √S·uᵀY/S for u uniform on the sphere: the p-value is the share of random
    rotations whose rise is at least the observed one. A shift of any curve's level moves no rise."""
    groups, seeds, points = samples.shape
    observed = _rise(samples.mean(1))
    u = rng.standard_normal((draws, seeds))
    u /= np.linalg.norm(u, axis=1, keepdims=True) * np.sqrt(seeds)
    at_least = np.zeros(groups, int)
    for start in range(0, groups, 64):  # (64 × draws × points) floats at a time
        chunk = samples[start : start + 64]
        at_least[start : start + 64] = (_rise(u @ chunk) >= observed[start : start + 64, None]
                                        - 1e-12).sum(1)
    return (1 + at_least) / (draws + 1)


def onset_sets(samples: np.ndarray, tasks: np.ndarray, level: float = LEVEL,
               share: float = PAIR_SHARE) -> tuple[np.ndarray, np.ndarray]:
    """(lo, hi) tasks of each group's onset interval, for `samples[g]` (S curves × J points): the
    smoothed points (window centres) that no other smoothed point beats — is lower than in a
    one-sided paired t-test over the S curves at α/`share` — and the interval their range. The
    paired differences are per seed, so the test holds whatever the correlation along a seed's
    curve; the onset estimate is always inside."""
    from scipy import stats

    groups, seeds, points = samples.shape
    smoothed = _smooth(samples)
    centres = np.asarray(tasks)[WINDOW // 2 : WINDOW // 2 + smoothed.shape[2]]
    quantile = stats.t.ppf(1 - (1 - level) / share, seeds - 1)
    lo, hi = np.empty(groups, int), np.empty(groups, int)
    for start in range(0, groups, 128):
        chunk = smoothed[start : start + 128]
        difference = chunk[:, :, :, None] - chunk[:, :, None, :]  # group × seed × k × j: how far k is above j
        margin = difference.mean(1) - quantile * difference.std(1, ddof=1) / np.sqrt(seeds)
        beaten = (margin > 0).any(2)
        lo[start : start + 128] = np.where(beaten, np.iinfo(int).max, centres).min(1)
        hi[start : start + 128] = np.where(beaten, np.iinfo(int).min, centres).max(1)
    return lo, hi


def _rise(curves: np.ndarray) -> np.ndarray:
    """Last smoothed window minus the smoothed minimum, along the last axis."""
    smoothed = _smooth(curves)
    return smoothed[..., -1] - smoothed.min(-1)


def _smooth(curves: np.ndarray) -> np.ndarray:
    """The centred moving average along the last axis, where the window fits."""
    total = curves[..., : curves.shape[-1] - WINDOW + 1].copy()
    for shift in range(1, WINDOW):
        total += curves[..., shift : curves.shape[-1] - WINDOW + 1 + shift]
    return total / WINDOW


def mean_interval(values: list[float], level: float = LEVEL) -> tuple[float, float | None]:
    """The mean of independent measurements and the half-width of its t-interval at `level`
    (None for one measurement)."""
    from scipy import stats

    mean = float(np.mean(values))
    if len(values) < 2:
        return mean, None
    se = float(np.std(values, ddof=1) / np.sqrt(len(values)))
    return mean, float(stats.t.ppf((1 + level) / 2, len(values) - 1) * se)


def holm(p_values: list[float | None]) -> list[float | None]:
    """Holm's step-down adjustment (family-wise error at α over the tested groups, under any
    dependence between them); None (no test) stays None and does not count as a test."""
    tested = sorted((p, i) for i, p in enumerate(p_values) if p is not None)
    adjusted: list[float | None] = [None] * len(p_values)
    running = 0.0
    for rank, (p, i) in enumerate(tested):
        running = max(running, min(1.0, (len(tested) - rank) * p))
        adjusted[i] = running
    return adjusted
