"""Onset detection on curves whose answer is known by construction, and its edge cases."""

import pytest

from plasticity_ray.analysis.onset import find_onset, moving_average, percent_change


def test_percent_change_is_eq_1():
    assert percent_change([4.0, 3.0, 5.0], 4.0) == [0.0, -25.0, 25.0]
    assert percent_change([3.0, 6.0], 4.0) == [-25.0, 50.0]
    assert percent_change([], 4.0) == []


def test_moving_average_is_centred_with_window_3():
    assert moving_average([3.0, 6.0, 9.0, 0.0]) == [None, 6.0, 5.0, None]


def test_a_valley_gives_its_bottom_as_the_onset():
    tasks = [8, 16, 24, 32, 40, 48, 56]
    aucs = [5.0, 4.6, 4.3, 4.1, 4.3, 4.6, 5.0]  # symmetric valley at 32
    onset = find_onset(tasks, aucs, baseline=5.0)
    assert (onset.task_instance, onset.status) == (32, "found")
    assert onset.values[0] == pytest.approx(1.0)  # normalised by the baseline
    assert onset.smoothed[0] is None and onset.smoothed[3] == pytest.approx((4.3 + 4.1 + 4.3) / 3 / 5.0)


def test_the_moving_average_overrides_a_single_noisy_dip():
    # The raw minimum is the outlier at 16; the smoothed minimum is the broad valley at 40.
    tasks = [8, 16, 24, 32, 40, 48, 56]
    aucs = [5.0, 3.0, 5.0, 4.0, 3.6, 3.8, 5.5]
    assert find_onset(tasks, aucs).task_instance == 40


def test_the_baseline_does_not_move_the_onset_and_order_does_not_matter():
    tasks, aucs = [8, 16, 24, 32, 40], [5.0, 4.0, 3.0, 3.5, 4.5]
    expected = find_onset(tasks, aucs).task_instance
    assert find_onset(tasks[::-1], aucs[::-1], baseline=4.2).task_instance == expected == 24


def test_a_falling_curve_has_no_onset_yet_and_a_rising_one_starts_at_once():
    tasks = [8, 16, 24, 32, 40]
    falling = find_onset(tasks, [5.0, 4.8, 4.6, 4.4, 4.2])
    assert falling.task_instance is None and falling.status == "not_yet" and "no onset yet" in falling.message
    rising = find_onset(tasks, [4.0, 4.2, 4.4, 4.6, 4.8])
    assert (rising.task_instance, rising.status) == (16, "from_start")
    # What a figure writes beside each group: words, not the status's name.
    assert (falling.label, rising.label) == ("no onset yet", "onset ≤ 16")
    assert find_onset([8, 16], [5.0, 4.0]).label == "too few probes"
    assert find_onset(tasks, [5.0, 4.0, 3.0, 3.5, 4.5]).label == "onset 24"


def test_ties_go_to_the_earliest_minimum():
    onset = find_onset([1, 2, 3, 4, 5, 6], [5.0, 4.0, 4.0, 4.0, 4.0, 5.0])
    assert onset.task_instance == 3 and onset.status == "found"


def test_too_few_and_missing_probes_are_reported_not_raised():
    few = find_onset([8, 16], [5.0, 4.0])
    assert few.task_instance is None and few.status == "too_few" and "at least 3" in few.message
    gaps = find_onset([8, 16, 24, 32, 40], [5.0, None, 4.0, float("nan"), 4.5])
    assert gaps.status == "found" and gaps.task_instance == 24 and "2 missing probe(s) skipped" in gaps.message
    assert find_onset([], []).status == "too_few"
