"""The task schedule and the training stream: order, freshness, exact resume, the mixture."""

import numpy as np
import pytest

from plasticity_ray.data.schedule import (
    LanguageStream, mixture_quotas, pool_usage, rows_per_task, task_info, task_rows, task_stream,
)
from plasticity_ray.data.shards import ROW_GROUP_ROWS
from plasticity_ray.spec import ALL_LANGUAGES, with_overrides


def _collect(ds):
    return np.concatenate([b["ids"] for b in ds.iter_batches(batch_size=None, batch_format="numpy")])


def test_continual_follows_the_language_order(demo_spec):
    languages = demo_spec.data.languages
    for i in range(demo_spec.tasks):
        task = task_info(demo_spec, i)
        assert (task.cycle, task.position, task.language) == (i // len(languages), i % len(languages), languages[i % 8])


def test_the_schedule_is_deterministic_for_a_seed(demo_prepared, demo_spec):
    a, b = task_rows(demo_spec, demo_prepared, 10), task_rows(demo_spec, demo_prepared, 10)
    assert np.array_equal(a.rows, b.rows) and np.array_equal(a.languages, b.languages)
    other = task_rows(with_overrides(demo_spec, {"seed": 1}), demo_prepared, 10)
    assert not np.array_equal(a.rows, other.rows)


@pytest.mark.parametrize("pool", [1, 127, 128, 1000, 3900])
def test_a_pass_visits_every_row_once_and_the_next_pass_reshuffles(pool):
    stream = LanguageStream(pool, seed=0, language="zh")
    first, second = stream.rows(0, pool), stream.rows(pool, 2 * pool)
    assert np.array_equal(np.sort(first), np.arange(pool))
    assert np.array_equal(np.sort(second), np.arange(pool))
    if pool > 1:
        assert not np.array_equal(first, second)


def test_positions_are_computed_directly_not_replayed():
    stream = LanguageStream(1000, seed=3, language="ru")
    whole = stream.rows(0, 5000)
    rng = np.random.default_rng(0)
    for a in rng.integers(0, 4900, size=20):
        b = a + rng.integers(1, 100)
        assert np.array_equal(LanguageStream(1000, seed=3, language="ru").rows(a, b), whole[a:b])


def test_rows_are_shuffled_across_row_groups():
    first = LanguageStream(4096, seed=0, language="en").rows(0, 256)
    assert len(np.unique(first // ROW_GROUP_ROWS)) >= 4


def test_a_language_gets_fresh_rows_each_cycle_until_its_pool_runs_out(demo_prepared, demo_spec):
    pool = demo_prepared.unit("en", "train").rows
    per_task = rows_per_task(demo_spec)
    fresh_cycles = pool // per_task
    assert fresh_cycles >= 2
    seen = np.concatenate([task_rows(demo_spec, demo_prepared, 8 * c).rows for c in range(fresh_cycles)])
    assert len(np.unique(seen)) == len(seen)
    usage = pool_usage(demo_spec, demo_prepared)
    assert usage["en"] == {"rows_needed": demo_spec.schedule.cycles * per_task, "pool_rows": pool, "passes": 1}
    assert usage["zh"]["passes"] == 2  # the demo's small Chinese pool repeats: reported, not hidden


def test_the_stream_delivers_the_scheduled_rows_and_resumes_exactly(demo_prepared, demo_spec):
    index, start_step = 9, 5
    plan = task_rows(demo_spec, demo_prepared, index)
    whole = _collect(task_stream(demo_spec, demo_prepared, index))
    assert whole.shape == (rows_per_task(demo_spec), demo_spec.data.seq_len + 1)
    pool = demo_prepared.unit(plan.task.language, "train").read_all()
    assert np.array_equal(whole, pool[plan.rows])
    resumed = _collect(task_stream(demo_spec, demo_prepared, index, start_step=start_step))
    assert np.array_equal(resumed, whole[start_step * demo_spec.global_sequences :])


def test_ranks_stream_their_slices_of_every_global_batch(demo_prepared, demo_spec):
    whole = _collect(task_stream(demo_spec, demo_prepared, 4, start_step=14))
    b = demo_spec.global_sequences // 2
    halves = [_collect(task_stream(demo_spec, demo_prepared, 4, start_step=14, rank=r, world_size=2)) for r in (0, 1)]
    for step in range(2):
        assert np.array_equal(whole[step * 2 * b : step * 2 * b + b], halves[0][step * b : (step + 1) * b])
        assert np.array_equal(whole[step * 2 * b + b : (step + 1) * 2 * b], halves[1][step * b : (step + 1) * b])


@pytest.fixture(scope="module")
def stationary(demo_spec):
    weights = {lang: 1.0 for lang in demo_spec.data.languages} | {"en": 3.0, "ja": 0.5}
    return with_overrides(demo_spec, {"schedule.mode": "stationary", "schedule.mixture_weights": weights})


def test_the_stationary_mixture_is_uniform_by_default(demo_spec):
    """§V-B's mixture of the eight languages, none favoured, when no weights are given."""
    plain = with_overrides(demo_spec, {"schedule.mode": "stationary"})
    assert plain.schedule.mixture_weights is None
    quotas = mixture_quotas(plain)
    per_task = rows_per_task(plain)
    assert list(quotas) == ["en", "zh", "fr", "ja", "es", "de", "pt", "ru"] and sum(quotas.values()) == per_task
    assert max(quotas.values()) - min(quotas.values()) <= 1 and min(quotas.values()) == per_task // 8


def test_stationary_quotas_match_the_weights(stationary):
    quotas = mixture_quotas(stationary)
    per_task = rows_per_task(stationary)
    assert sum(quotas.values()) == per_task
    weights = stationary.schedule.mixture_weights
    total = sum(weights.values())
    for lang, quota in quotas.items():
        assert abs(quota - per_task * weights[lang] / total) < 1  # within one row per task


def test_stationary_tasks_mix_languages_within_every_batch(demo_prepared, stationary):
    plan = task_rows(stationary, demo_prepared, 3)
    assert task_info(stationary, 3).language is None
    quotas = mixture_quotas(stationary)
    counts = {ALL_LANGUAGES[c]: n for c, n in zip(*np.unique(plan.languages, return_counts=True))}
    assert counts == quotas
    batch = stationary.global_sequences
    for step in range(stationary.steps_per_task):
        assert len(np.unique(plan.languages[step * batch : (step + 1) * batch])) >= 4
    # Each language's rows continue its own stream: task 3 takes positions [3q, 4q).
    en = ALL_LANGUAGES.index("en")
    stream = LanguageStream(demo_prepared.unit("en", "train").rows, stationary.seed, "en")
    assert np.array_equal(plan.rows[plan.languages == en], stream.rows(3 * quotas["en"], 4 * quotas["en"]))


def test_stationary_stream_reads_each_row_from_its_language(demo_prepared, stationary):
    plan = task_rows(stationary, demo_prepared, 2)
    got = _collect(task_stream(stationary, demo_prepared, 2, start_step=10))
    start = 10 * stationary.global_sequences
    pools = {}
    for k, (code, row) in enumerate(zip(plan.languages[start:], plan.rows[start:])):
        lang = ALL_LANGUAGES[code]
        pools.setdefault(lang, demo_prepared.unit(lang, "train").read_all())
        assert np.array_equal(got[k], pools[lang][row])
