"""The adaptive protocol's decisions (`analysis.adaptive`) and its simulation (`bench adaptive`):
what is probed near the minimum, what is kept, and when a group stops."""

import numpy as np
import pytest

from plasticity_ray.analysis.adaptive import FIRST_LOOK, Policy, decide, running_minimum, sequential_p_values
from plasticity_ray.analysis.onset import find_onset, rotation_p_values
from plasticity_ray.bench.adaptive import CYCLES, adaptive_runs, layout, run_cell, table_iv_onsets

GROUPS = 500
ALLOWANCE = 2 * np.sqrt(0.1 * 0.9 / GROUPS)  # two standard errors of a 10% rate


def test_every_look_is_the_rotation_test_of_its_prefix():
    rng = np.random.default_rng(4)
    samples = 1 + rng.normal(0, 0.003, (5, 3, 12)) + np.linspace(0, 0.01, 12) ** 2 * 40
    sequential = sequential_p_values(samples, np.random.default_rng(9), 300)
    for look in range(3, 13):
        alone = rotation_p_values(samples[:, :, :look], np.random.default_rng(9), 300)
        np.testing.assert_allclose(sequential[:, look - 3], alone)


def test_the_running_minimum_is_find_onsets_minimum_of_every_prefix():
    rng = np.random.default_rng(2)
    curve = rng.normal(1, 0.01, 20)
    minima = running_minimum(curve)
    for look in range(4, 21):
        onset = find_onset(list(range(look)), curve[:look].tolist())
        centre = int(np.argmin(np.convolve(curve[:look], np.ones(3) / 3, "valid"))) + 1
        assert minima[look - 3] == centre
        if onset.task_instance is not None:
            assert onset.task_instance == centre


def _curves(values, seeds=3, spread=0.001):
    """Seeds around one curve, each shifted by its own level (which moves no rise)."""
    return np.array([[v + spread * ((s * 7 + j * 3) % 5 - 2) / 2 + 0.01 * s for j, v in enumerate(values)]
                     for s in range(seeds)])


def test_the_window_is_probed_once_the_minimum_is_bracketed_and_only_its_cycles_are_kept():
    policy = Policy(cycles=48, window_cycles=2, margin_cycles=None, draws=500)  # no stop: every look counts
    falling = [1.0 - 0.01 * j for j in range(6)]
    early = decide(_curves(falling), policy)
    assert early.minimum == 4 and not early.bracketed and early.probe_cycles == ()
    assert [c for c in range(10) if early.keeps(c)] == [3, 4, 5, 6, 7, 8, 9]  # may all be near a later minimum
    assert decide(_curves(falling), policy, final=True).probe_cycles == (3, 4, 5)  # the last minimum's window
    # Minimum at cycle 4 (0-based), then three cycle ends that rise a little.
    turned = decide(_curves(falling[:5] + [0.975, 0.98, 0.985, 0.99]), policy)
    assert turned.minimum == 4 and turned.bracketed and turned.probe_cycles == (3, 4, 5, 6)
    # Cycles 3-6 (the window) and from n - K = 7 on (cycle ends whose windows are not all measured).
    assert [c for c in range(12) if turned.keeps(c)] == [3, 4, 5, 6, 7, 8, 9, 10, 11]
    later = decide(_curves(falling[:5] + [0.975, 0.98, 0.985, 0.99, 0.995, 1.0, 1.005]), policy)
    assert [c for c in range(14) if later.keeps(c)] == [3, 4, 5, 6, 10, 11, 12, 13]


def test_a_clear_rise_stops_the_group_after_its_margin_and_says_why():
    policy = Policy(cycles=48, window_cycles=2, margin_cycles=3, draws=2000)
    assert policy.threshold == pytest.approx(0.1 / 45)  # Bonferroni over looks 4 … 48
    values = [1.0 - 0.004 * j for j in range(6)] + [0.98 + 0.004 * j for j in range(1, 10)]
    decision = decide(_curves(values, spread=0.0004), policy)
    assert decision.confirmed_at is not None and decision.p_value <= policy.threshold
    assert decision.stop_after == decision.confirmed_at - 1 + 3
    assert decision.confirmed_minimum == 5
    assert decision.reason.startswith(f"onset confirmed at the end of cycle {decision.confirmed_at} (rise after the "
                                      "minimum at cycle 6, sequential p = ")
    # The same rise with one seed measures no training noise: never stopped.
    alone = decide(_curves(values, seeds=1), policy)
    assert alone.p_value is None and alone.stop_after is None and alone.reason is None
    # Without a stop policy the rise is still tested, and nothing stops.
    assert decide(_curves(values, spread=0.0004), Policy(48, 2, None, draws=2000)).stop_after is None


def test_the_simulation_decides_as_decide_does():
    """The vectorised simulation's stops and probed cycles are those of `decide`, look by look."""
    rng = np.random.default_rng(11)
    cycle_ends = 1 + rng.normal(0, 0.003, (6, 3, 16)) + 0.05 * (np.arange(16) / 15 - 0.3) ** 2
    policy = Policy(16, 2, 2, draws=400)
    runs = adaptive_runs(cycle_ends, policy, 400, np.random.default_rng(policy.seed))
    assert 0 < (runs["stop_after"] < 15).sum() < 6  # some groups stop, some do not
    for g in range(6):
        decision = decide(cycle_ends[g], policy, final=True)  # every look, stopping where the group stops
        stop = 15 if decision.stop_after is None else decision.stop_after
        assert runs["stop_after"][g] == stop
        assert set(np.flatnonzero(runs["probed_cycles"][g])) == set(decision.probe_cycles)


@pytest.mark.parametrize("cell", [
    {"noise": "ar1_0.9", "seeds": 3, "onset": None},
    {"noise": "student_t3", "seeds": 2, "onset": None},
    {"noise": "gaussian", "seeds": 3, "onset": 54},
    {"noise": "random_walk", "seeds": 5, "onset": 118},
], ids=lambda c: f"{c['noise']}-{c['seeds']}-{c['onset']}")
def test_the_adaptive_protocol_keeps_the_answer_and_stops_no_more_often_than_its_error(cell):
    """A fast seeded subset of `plasticity-ray bench adaptive`."""
    result = run_cell({**cell, "sizes": []}, GROUPS, 500, np.random.SeedSequence(3), 1.0,
                      Policy(CYCLES, 2, 2, draws=500))
    assert result["stopped_before_true_onset"] <= 0.10 + ALLOWANCE
    assert result["same_onset_inside_window"] >= 0.95 - 2 * np.sqrt(0.05 * 0.95 / GROUPS)
    assert result["peak_kept_max"] <= 2 * (2 + 1 + 1)  # K + 1 cycles beyond the lag of 1: the bound
    if cell["onset"] is not None:
        assert result["tasks_trained"] < 1 and result["probes_run"] < 0.6
        assert result["adaptive_error_tasks_median"] <= result["paper_error_tasks_median"] + 8


def test_table_iv_onsets_are_read_with_their_sizes():
    assert table_iv_onsets() == {6: ["5M", "12M"], 16: ["27M"], 18: ["39M"], 54: ["53M", "83M"], 62: ["106M"],
                                 118: ["314M"]}
