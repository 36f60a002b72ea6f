"""Which rows feed task instance i, and the Ray Data stream that delivers them.

Continual mode: task i trains on language ``languages[i % n]``, the k-th time it comes back
(k = i // n, the cycle). Each language has an endless, seeded stream over its pool: a pass visits
every row once, in a fresh shuffle; a new pass (the pool is reused) starts only when a pass is
exhausted. Task k of a language takes the next ``rows_per_task`` positions of that stream, so
data is fresh each time a language returns until its pool runs out.

Stationary mode: every task is a mixture; each language contributes a fixed quota of rows per
task (its weight's share, largest-remainder rounding), taken from its own stream as above, and the
quotas are interleaved row by row in a seeded order.

Probes and evaluations draw from the same machinery: probe k trains on the start of a stream of
its own (a seeded random subsample of the probe pool, `probe_draw`), and every evaluation set is
the start of one seeded permutation of a validation pool (`validation_sample`).

The shuffle works on row groups (ROW_GROUP_ROWS rows): a pass permutes the row groups, and rows
are shuffled again inside windows of WINDOW_GROUPS consecutive groups of that order, so a window
is read once and its rows are well mixed. Everything depends only on (seed, language, pass,
window), so any (task, step) position is computed directly, without replaying the run.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import ray.data

from plasticity_ray.data.prepare import Prepared, ordered_datasets
from plasticity_ray.data.shards import ROW_GROUP_ROWS, Unit
from plasticity_ray.spec import ALL_LANGUAGES, ExperimentSpec
from plasticity_ray.spec.protocol import Task, task_info

WINDOW_GROUPS = 8
WINDOW_ROWS = WINDOW_GROUPS * ROW_GROUP_ROWS
# Seed tags of the probe draws and the validation samples: beyond any pass number, so their seeds
# never equal a training stream's (numpy's SeedSequence ignores trailing zeros, so lengths alone
# do not keep seeds apart).
PROBE_DRAW_TAG = 2**32 - 1
VALIDATION_TAG = 2**32 - 2


def rows_per_task(spec: ExperimentSpec) -> int:
    return spec.steps_per_task * spec.global_sequences


def mixture_quotas(spec: ExperimentSpec) -> dict[str, int]:
    """Rows per task from each language in stationary mode (sums to rows_per_task)."""
    languages = spec.data.languages
    weights = spec.schedule.mixture_weights or {}
    w = np.array([weights.get(lang, 1.0 if not weights else 0.0) for lang in languages], dtype=float)
    exact = rows_per_task(spec) * w / w.sum()
    quotas = np.floor(exact).astype(int)
    for i in np.argsort(-(exact - quotas), kind="stable")[: rows_per_task(spec) - quotas.sum()]:
        quotas[i] += 1
    return dict(zip(languages, quotas.tolist()))


class LanguageStream:
    """The endless seeded order of one pool's rows: position → global row index. `draw` keys a
    stream of its own over the same pool (a probe's subsample)."""

    def __init__(self, pool_rows: int, seed: int, language: str, draw: tuple[int, ...] = ()):
        if pool_rows <= 0:
            raise ValueError(f"{language}: empty pool")
        self.n = pool_rows
        self.key = (seed, ALL_LANGUAGES.index(language), *draw)
        self.groups = -(-pool_rows // ROW_GROUP_ROWS)

    def passes_for(self, positions: int) -> int:
        return math.ceil(positions / self.n)

    @lru_cache(maxsize=4)
    def _pass(self, p: int) -> tuple[np.ndarray, np.ndarray]:
        """Row-group order of pass p, and the first position of each window (plus the end)."""
        order = np.random.default_rng([*self.key, p]).permutation(self.groups)
        sizes = np.minimum(ROW_GROUP_ROWS, self.n - order * ROW_GROUP_ROWS)
        window_sizes = np.add.reduceat(sizes, np.arange(0, self.groups, WINDOW_GROUPS))
        return order, np.concatenate([[0], np.cumsum(window_sizes)])

    def _window(self, p: int, w: int) -> np.ndarray:
        order, _ = self._pass(p)
        groups = order[w * WINDOW_GROUPS : (w + 1) * WINDOW_GROUPS]
        rows = np.concatenate([np.arange(g * ROW_GROUP_ROWS, min((g + 1) * ROW_GROUP_ROWS, self.n)) for g in groups])
        return rows[np.random.default_rng([*self.key, p, w + 1]).permutation(len(rows))]

    def rows(self, start: int, stop: int) -> np.ndarray:
        """Global row indices at stream positions [start, stop)."""
        out = []
        position = start
        while position < stop:
            p, within = divmod(position, self.n)
            _, bounds = self._pass(p)
            w = int(np.searchsorted(bounds, within, side="right")) - 1
            window = self._window(p, w)
            a = within - bounds[w]
            b = min(len(window), a + (stop - position))
            out.append(window[a:b])
            position += b - a
        return np.concatenate(out) if out else np.empty(0, dtype=np.int64)


@dataclass(frozen=True)
class TaskRows:
    """The rows of one task in training order: a language code and a row index per position."""

    task: Task
    languages: np.ndarray  # int8 index into ALL_LANGUAGES
    rows: np.ndarray  # int64 row index in that language's train pool


def _streams(spec: ExperimentSpec, prepared: Prepared) -> dict[str, LanguageStream]:
    return {
        lang: LanguageStream(prepared.unit(lang, "train").rows, spec.seed, lang) for lang in spec.data.languages
    }


def task_rows(spec: ExperimentSpec, prepared: Prepared, index: int) -> TaskRows:
    task = task_info(spec, index)
    per_task = rows_per_task(spec)
    streams = _streams(spec, prepared)
    if task.language is not None:
        stream = streams[task.language]
        rows = stream.rows(task.cycle * per_task, (task.cycle + 1) * per_task)
        codes = np.full(per_task, ALL_LANGUAGES.index(task.language), dtype=np.int8)
        return TaskRows(task, codes, rows)
    quotas = mixture_quotas(spec)
    labels = np.concatenate([np.full(q, ALL_LANGUAGES.index(lang), dtype=np.int8) for lang, q in quotas.items()])
    labels = labels[np.random.default_rng([spec.seed, len(ALL_LANGUAGES), index]).permutation(per_task)]
    rows = np.empty(per_task, dtype=np.int64)
    for lang, quota in quotas.items():
        rows[labels == ALL_LANGUAGES.index(lang)] = streams[lang].rows(index * quota, (index + 1) * quota)
    return TaskRows(task, labels, rows)


def pool_usage(spec: ExperimentSpec, prepared: Prepared) -> dict[str, dict]:
    """Per language: rows the whole run reads, rows in the pool, and how many passes that takes
    (more than 1 means the run sees some rows again: the pool is too small for the schedule). For
    the probe language, what one probe reads: more than one pass means a probe repeats rows."""
    usage = {}
    quotas = mixture_quotas(spec) if spec.schedule.mode == "stationary" else None
    for lang, stream in _streams(spec, prepared).items():
        needed = spec.tasks * quotas[lang] if quotas else spec.schedule.cycles * rows_per_task(spec)
        usage[lang] = {"rows_needed": needed, "pool_rows": stream.n, "passes": stream.passes_for(needed)}
    if spec.probe.enabled:
        pool = prepared.unit(spec.data.probe_language, "train").rows
        needed = spec.probe_steps * spec.global_sequences
        usage[spec.data.probe_language] = {"rows_needed": needed, "pool_rows": pool, "passes": math.ceil(needed / pool),
                                           "per": "probe"}
    return usage


def probe_draw(spec: ExperimentSpec, prepared: Prepared, probe_index: int, replicate: int = 0) -> np.ndarray:
    """Rows of the probe pool that probe number `probe_index` trains on, in training order: a
    seeded random subsample (whole row groups, rows shuffled within windows) drawn afresh for every
    probe (§IV-A: 5B tokens "randomly subsampled" from the 20B-token pool), or with
    `probe.same_data_order` the same rows for every probe. Depends only on (seed, probe_index,
    replicate), so a re-run probe trains on exactly the same rows."""
    unit = prepared.unit(spec.data.probe_language, "train")
    draw = () if spec.probe.same_data_order else (PROBE_DRAW_TAG, probe_index, replicate)
    stream = LanguageStream(unit.rows, spec.seed, spec.data.probe_language, draw)
    return stream.rows(0, spec.probe_steps * spec.global_sequences)


def validation_sample(spec: ExperimentSpec, prepared: Prepared, language: str, count: int) -> np.ndarray:
    """Token ids of `count` rows sampled at random from `language`'s validation pool (all of it when
    smaller), seeded by the run's seed: the same rows at every probe point, and a smaller sample is
    the start of a larger one (the dormant-unit rows are among the probe's evaluation rows)."""
    unit = prepared.unit(language, "validation")
    order = np.random.default_rng([spec.seed, ALL_LANGUAGES.index(language), VALIDATION_TAG]).permutation(unit.rows)
    return unit.take(np.sort(order[:count]))  # sorted: the mean loss does not depend on the order


def _read_rows(batch: dict, units: dict[str, Unit]) -> dict:
    """One read item (a batch of size 1) → its rows' token ids, in order."""
    codes, rows = np.asarray(batch["languages"][0]), np.asarray(batch["rows"][0])
    out = None
    for code in np.unique(codes):
        unit = units[ALL_LANGUAGES[code]]
        mask = codes == code
        if out is None:
            out = np.empty((len(codes), unit.row_len), dtype=np.int32)
        out[mask] = unit.take(rows[mask])
    return {"ids": out}


def task_stream(
    spec: ExperimentSpec, prepared: Prepared, index: int, start_step: int = 0, rank: int = 0, world_size: int = 1
) -> ray.data.Dataset:
    """Ray Data stream of task `index` from `start_step` on: a column ``ids`` of seq_len + 1 token
    ids per row, in training order; global batch s is rows [s·B, (s+1)·B), B = global sequences.
    With `world_size` > 1, the stream holds only this rank's slice of every global batch: rows
    [s·B + rank·b, s·B + (rank+1)·b), b = B / world_size. The dataset keeps its blocks in that
    order (`preserve_order`, set for it alone)."""
    plan = task_rows(spec, prepared, index)
    batch = spec.global_sequences
    if batch % world_size:
        raise ValueError(f"{batch} sequences per batch do not split over {world_size} workers")
    share = batch // world_size
    positions = np.arange(start_step * batch, len(plan.rows))
    positions = positions[(positions % batch) // share == rank]
    languages, rows = plan.languages[positions], plan.rows[positions]
    # A read item covers about one window per language it mixes, so each window it touches is
    # read once for many of its rows rather than once per few rows.
    item_rows = WINDOW_ROWS * len(np.unique(languages))
    items = [
        {"languages": languages[a : a + item_rows], "rows": rows[a : a + item_rows]}
        for a in range(0, len(rows), item_rows)
    ]
    units = {lang: prepared.unit(lang, "train") for lang in spec.data.languages}
    # In order, and without progress bars: one stream per task would flood the driver's log.
    with ordered_datasets(progress_bars=False):
        # Read tasks ask for no CPU: inside a Train worker the CPUs are all taken by the workers, and
        # a read is light I/O that must never wait for a CPU slot (Ray Data would otherwise hang).
        return ray.data.from_items(items).map_batches(
            lambda b: _read_rows(b, units), batch_size=1, batch_format="numpy", num_cpus=0
        )
