"""The onset interval and the plasticity-loss verdict, checked for calibration on synthetic groups
whose true curve and noise are known: seeded simulations, a few seconds in all."""

import numpy as np
import pytest

from plasticity_ray.analysis.onset import find_onset, group_onset, mean_interval

TASKS = [4 * k for k in range(1, 13)]  # twelve probe points, every 4 tasks
T = np.asarray(TASKS, float)
# Figure 9's shape: the normalised AUC falls while the model still gains, then rises slowly; its
# smoothed minimum is at 16 tasks, with neighbours close enough that noise can move it.
PAPER_SHAPE = 1 - 0.10 * (1 - np.exp(-T / 8)) + 0.0015 * T
TRUE_ONSET = find_onset(TASKS, PAPER_SHAPE.tolist()).task_instance


def synthetic_group(rng, curve, seeds, replicates, seed_sd, probe_sd):
    """AUCs of `seeds` runs × `replicates` probes: each seed has its own level and its own noise at
    every point (training noise), each probe replicate its own (probe noise)."""
    level = rng.normal(0, 0.02, (seeds, 1, 1))
    training = rng.normal(0, seed_sd, (seeds, 1, len(curve)))
    values = curve + level + training + rng.normal(0, probe_sd, (seeds, replicates, len(curve)))
    return [[list(values[s, :, j]) for j in range(len(curve))] for s in range(seeds)]


def test_the_true_onset_is_inside_the_shape():
    assert TRUE_ONSET == 16


@pytest.mark.parametrize("seeds, replicates, seed_sd, probe_sd", [
    (2, 1, 0.010, 0.010),  # two seeds, one probe each
    (3, 2, 0.010, 0.020),  # three seeds, two probe replicates
    (1, 3, 0.000, 0.010),  # one seed, three probe replicates (no training noise in the truth)
])
def test_90_percent_intervals_cover_the_true_onset_85_to_95_percent_of_the_time(seeds, replicates, seed_sd, probe_sd):
    rng = np.random.default_rng(2026)
    groups = 400
    covered, widths = 0, []
    for g in range(groups):
        result = group_onset(TASKS, synthetic_group(rng, PAPER_SHAPE, seeds, replicates, seed_sd, probe_sd), seed=g)
        lo, hi = result.interval
        covered += lo <= TRUE_ONSET <= hi
        widths.append(hi - lo)
    assert 0.85 <= covered / groups <= 0.95
    assert 0 < np.mean(widths) < 24  # an interval that says something, not the whole run


@pytest.mark.parametrize("seeds, replicates, seed_sd", [(2, 1, 0.01), (4, 2, 0.01), (1, 3, 0.0)])
def test_flat_pure_noise_curves_are_called_loss_no_more_often_than_the_nominal_rate(seeds, replicates, seed_sd):
    # One seed: only probe noise can be measured, so the truth has no training noise (the README says
    # that one seed's verdict speaks about probe noise only).
    rng = np.random.default_rng(7)
    groups = 400
    flat = np.ones(len(TASKS))
    calls = [group_onset(TASKS, synthetic_group(rng, flat, seeds, replicates, seed_sd, 0.01), seed=g).verdict
             for g in range(groups)]
    rate = calls.count("significant") / groups
    allowance = 2 * np.sqrt(0.1 * 0.9 / groups)  # two standard errors of a 10% rate over 400 groups
    assert rate <= 0.10 + allowance
    assert rate >= 0.10 - allowance  # and calibrated, not merely conservative


def test_a_real_rise_is_called_loss():
    rng = np.random.default_rng(3)
    rising = 1 - 0.05 * (1 - np.exp(-T / 4)) + 0.004 * T
    calls = [group_onset(TASKS, synthetic_group(rng, rising, 2, 2, 0.01, 0.01), seed=g).verdict for g in range(100)]
    assert calls.count("significant") >= 95


def test_one_seed_and_one_replicate_give_no_interval_and_say_why():
    result = group_onset(TASKS, [[[v] for v in PAPER_SHAPE]])
    assert result.interval is None and result.p_value is None and result.verdict == "no verdict"
    assert result.onset.task_instance == 16  # the onset itself is still Appendix B's
    assert "one seed and one probe replicate measure no noise" in result.message
    assert "probe.replicates" in result.message


def test_a_probe_missing_in_one_seed_leaves_the_point_out_for_the_group():
    rng = np.random.default_rng(0)
    runs = synthetic_group(rng, PAPER_SHAPE, 2, 1, 0.01, 0.01)
    runs[1][5] = None
    result = group_onset(TASKS, runs)
    assert TASKS[5] not in result.onset.tasks and len(result.onset.tasks) == 11
    assert "1 probe point(s) missing in some run left out" in result.message


def test_mean_interval_is_a_t_interval():
    mean, half = mean_interval([1.0, 3.0], level=0.9)
    assert mean == 2.0 and half == pytest.approx(6.3138, rel=1e-4)  # t(0.95, 1) · 1
    assert mean_interval([5.0]) == (5.0, None)
