"""From a run's probe AUCs to the onset of plasticity loss (§V-A, Appendix B).

Eq. (1): the % change of each probe's AUC relative to AUC₁, the probe after the first cycle (a run
picks it: `Run.auc_reference`). Appendix B: every probe's AUC (cycle ends and extended probes) divided
by the probe-language-alone AUC (the baseline), smoothed by a centred moving average of window 3;
the onset is the task-instance number (tasks trained so far) at the minimum of the smoothed curve.
Dividing by the baseline does not move the minimum, so runs without a baseline still get an onset.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

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
