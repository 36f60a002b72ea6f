"""Probing and stopping decided while a group of runs trains, from its cycle-end probes alone.

Two opt-in policies; the paper's specs probe every point and train every task (its Figure 2 needs
the whole curve). Both read the group's *mean cycle-end curve* (the seeds of one sweep point, each
cycle end's AUC) as probes land, so every seed of a group gets the same probe points and stops at
the same cycle, and `group_onset` sees one layout.

Near the minimum (Appendix B: "we only extended probing in cycles near the minimum of the line"):
the extended probe points (after zh and de) are kept as weights, not probed. Once the smoothed
(window 3) cycle-end curve has its minimum at cycle m with at least one window after it (bracketed),
the kept points of cycles m − K + 1 … m + K are probed (now, or once trained). A smoothed value never changes once its
window is measured, so no measured cycle end but the minimum can ever become the minimum: after n
cycle ends only the minimum's window and the cycles from n − K on (whose cycle ends' windows are not
complete yet) can be probed later. Every other kept point is released, so a run keeps at most
2 × (3K + the cycles it trains ahead of its probes) points, and a later minimum gets its own window.

Onset confirmed: at each look (n cycle ends measured in every seed, n ≥ 4) the rise of the smoothed
mean curve after its minimum is tested by `onset.rotation_p_values`' rotation test over seeds, all
looks from one set of rotations; the rise is confirmed at the first look whose p-value is at most
α / (N − 3), N the cycle-end probes of the whole schedule: Bonferroni over every look the test can
take (4 … N), so the chance that a flat curve is ever confirmed is at most α, whatever the
dependence between looks. The group then trains `margin_cycles` more cycles and stops. One seed
measures no training noise: it is never stopped.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from plasticity_ray.analysis.onset import DRAWS, LEVEL, WINDOW, _smooth
from plasticity_ray.spec import ExperimentSpec

FIRST_LOOK = WINDOW + 1  # cycle ends before the smoothed curve can have a minimum with a window after it


@dataclass(frozen=True)
class Policy:
    cycles: int  # cycle-end probes of the whole schedule (N)
    window_cycles: int | None = None  # K: probe kept points of the K cycles each side of the minimum; None: off
    margin_cycles: int | None = None  # M: cycles trained after the rise is confirmed; None: never stop
    level: float = LEVEL
    draws: int = DRAWS
    seed: int = 0  # of the rotations: a decision taken again (a resumed run) is the same
    confirm_at: int | None = None  # debug.confirm_onset_at_look: the rise counts as confirmed at this look

    @property
    def threshold(self) -> float:
        """The p-value at or below which one look confirms the rise: α shared over every look."""
        return (1 - self.level) / max(1, self.cycles - FIRST_LOOK + 1)


def policy_of(spec: ExperimentSpec) -> Policy | None:
    """The spec's adaptive policies (probe.extended.near_minimum, schedule.stop.onset_confirmed);
    None when neither is on."""
    extended, stop = spec.probe.extended, spec.onset_stop
    near = extended.near_minimum if extended else None
    if near is None and stop is None:
        return None
    return Policy(spec.schedule.cycles, near.cycles if near else None, stop.margin_cycles if stop else None,
                  stop.level if stop else LEVEL, confirm_at=spec.debug.confirm_onset_at_look)


@dataclass(frozen=True)
class Decision:
    looks: int  # cycle ends measured in every seed of the group
    minimum: int | None  # cycle (0-based) whose end is the smoothed minimum; None: fewer than WINDOW looks
    bracketed: bool  # a smoothed window after the minimum: the minimum is inside the curve so far
    probe_cycles: tuple[int, ...]  # cycles whose kept points are probed: every window opened so far
    window_cycles: int  # K
    p_value: float | None  # of the rise at this look; None: one seed, or too few looks
    confirmed_at: int | None  # the first look that confirmed the rise
    confirmed_minimum: int | None  # the minimum's cycle at that look
    stop_after: int | None  # the last cycle (0-based) to train; None: train every cycle
    forced: bool = False  # confirmed by debug.confirm_onset_at_look, not by the test

    def keeps(self, cycle: int) -> bool:
        """Whether a kept point of `cycle` may still be probed: near the minimum, or near a cycle end
        whose smoothed value is not measured yet."""
        if self.minimum is None:
            return True
        near_minimum = self.minimum - self.window_cycles < cycle <= self.minimum + self.window_cycles
        return near_minimum or cycle >= self.looks - self.window_cycles

    @property
    def reason(self) -> str | None:
        """Why the group stops, in words (None: it does not)."""
        if self.stop_after is None:
            return None
        if self.forced:
            return (f"onset taken as confirmed at the end of cycle {self.confirmed_at} (debug.confirm_onset_at_look); "
                    f"stopped after cycle {self.stop_after + 1}")
        return (f"onset confirmed at the end of cycle {self.confirmed_at} (rise after the minimum at cycle "
                f"{self.confirmed_minimum + 1}, sequential p = {self.p_value:.3g}); stopped after cycle "
                f"{self.stop_after + 1}")


def running_minimum(curves: np.ndarray) -> np.ndarray:
    """For curves (… × n points), the centre index of the smoothed minimum of every prefix with at
    least WINDOW points (… × (n − WINDOW + 1)); ties go to the earliest, as in `find_onset`."""
    smoothed = _smooth(curves)
    lower = np.minimum.accumulate(smoothed, -1)
    earlier = np.concatenate([np.full(lower.shape[:-1] + (1,), np.inf), lower[..., :-1]], -1)
    steps = np.arange(smoothed.shape[-1])
    return np.maximum.accumulate(np.where(smoothed < earlier, steps, 0), -1) + WINDOW // 2


def sequential_p_values(samples: np.ndarray, rng: np.random.Generator, draws: int = DRAWS) -> np.ndarray:
    """For `samples[g]` (S curves × n points), the rotation test's p-value of the rise at every look
    (the prefix of the first k points, k = WINDOW … n): groups × (n − WINDOW + 1). Each look's p-value
    is `rotation_p_values` of that prefix with these rotations; one rotated curve serves every look."""
    groups, seeds, points = samples.shape
    u = rng.standard_normal((draws, seeds))
    u /= np.linalg.norm(u, axis=1, keepdims=True) * np.sqrt(seeds)
    observed = _prefix_rises(samples.mean(1))
    at_least = np.zeros(observed.shape, int)
    for start in range(0, groups, 64):
        rotated = _prefix_rises(u @ samples[start : start + 64])  # chunk × draws × looks
        at_least[start : start + 64] = (rotated >= observed[start : start + 64, None] - 1e-12).sum(1)
    return (1 + at_least) / (draws + 1)


def _prefix_rises(curves: np.ndarray) -> np.ndarray:
    """The last smoothed window minus the smoothed minimum, of every prefix of at least WINDOW points."""
    smoothed = _smooth(curves)
    return smoothed - np.minimum.accumulate(smoothed, -1)


def decide(cycle_ends: np.ndarray, policy: Policy, final: bool = False) -> Decision:
    """The group's decision after the cycle ends `cycle_ends` (S seeds × n looks, in cycle order).
    Cycle ends measured after the group's stop (a run that trained on while its probes ran) are not
    looked at: the decision is the one taken at the stop. `final`: the group trains no more, so its
    last minimum is its minimum and its window is probed even when the curve is lowest at its end."""
    seeds, looks = cycle_ends.shape
    window = policy.window_cycles or 0
    if looks < WINDOW:
        return Decision(looks, None, False, (), window, None, None, None, None)
    minima = running_minimum(cycle_ends.mean(0))
    p_value = confirmed_at = confirmed_minimum = stop_after = None
    if seeds >= 2:
        p_values = sequential_p_values(cycle_ends[None], np.random.default_rng(policy.seed), policy.draws)[0]
        p_value = float(p_values[-1])
        confirming = [k + WINDOW for k, p in enumerate(p_values) if k + WINDOW >= FIRST_LOOK and p <= policy.threshold]
        if policy.confirm_at is not None:
            confirming = [policy.confirm_at] if looks >= policy.confirm_at else []
        if confirming:
            confirmed_at = confirming[0]
            confirmed_minimum = int(minima[confirmed_at - WINDOW])
            p_value = float(p_values[confirmed_at - WINDOW])
            if policy.margin_cycles is not None and confirmed_at + policy.margin_cycles < policy.cycles:
                stop_after = confirmed_at - 1 + policy.margin_cycles
                if looks > stop_after + 1:
                    return decide(cycle_ends[:, : stop_after + 1], policy, final)
    last = min(policy.cycles, stop_after + 1 if stop_after is not None else policy.cycles) - 1
    if final:
        last = min(last, looks - 1)  # no more cycles come
    probe_cycles: set[int] = set()
    if policy.window_cycles is not None:  # every window a look opened: its points are probed now or once trained
        for look, minimum in enumerate(minima.tolist(), WINDOW):
            if minimum < look - 1 - WINDOW // 2 or (final and look == looks):
                probe_cycles.update(range(max(0, minimum - window + 1), min(last, minimum + window) + 1))
    minimum = int(minima[-1])
    return Decision(looks, minimum, minimum < looks - 1 - WINDOW // 2, tuple(sorted(probe_cycles)), window, p_value,
                    confirmed_at, confirmed_minimum, stop_after, policy.confirm_at is not None)
