"""Data preparation: documents → clean → tokenize (Ray Data tasks) → pack → Parquet shards.

One location per data configuration: ``<storage>/prepared/<tokenizer>-<fingerprint>``, where the
fingerprint hashes every data field except the language lists, so changing the source, tokenizer,
sequence length or pool sizes writes somewhere new instead of mixing. Work is done per language;
a language whose two units (train, validation) are complete is skipped, so re-running is cheap and
an interrupted run resumes. Rows are cut on the driver from the ordered token stream (Ray Data
keeps the order), so the result is the same on every run and only the final, less-than-a-row
tail of each pool is left out (its size is recorded).
"""

from __future__ import annotations

import contextlib
import copy
import functools
import hashlib
import json
import logging
import re
import time
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import ray

from plasticity_ray.data.shards import DataError, Packer, Unit, UnitWriter
from plasticity_ray.data.sources import documents
from plasticity_ray.data.tokenizers import get_tokenizer, tokenizer_class
from plasticity_ray.spec import DataSpec, ExperimentSpec
from plasticity_ray.storage import storage_dir, write_json_atomic

FORMAT = 1
SPLITS = ("train", "validation")
DOCS_PER_BATCH = 256


def data_fingerprint(data: DataSpec) -> str:
    config = data.model_dump(mode="json", exclude={"languages", "probe_language"})
    return hashlib.sha256(json.dumps({"format": FORMAT, **config}, sort_keys=True).encode()).hexdigest()[:12]


def prepared_root(spec: ExperimentSpec) -> Path:
    return storage_dir(spec.storage_path) / "prepared" / f"{spec.data.tokenizer}-{data_fingerprint(spec.data)}"


def all_languages(data: DataSpec) -> list[str]:
    return [*data.languages, data.probe_language]


@functools.lru_cache(maxsize=None)
def _cached_tokenizer(name: str):
    return get_tokenizer(name)  # once per Ray worker process, which Ray reuses across tasks


def tokenize_batch(batch: pa.Table, tokenizer: str) -> pa.Table:
    """A batch of documents → their token ids, each followed by the separator (empty ones dropped)."""
    tok = _cached_tokenizer(tokenizer)
    texts = [unicodedata.normalize("NFC", t or "").strip() for t in batch.column("text").to_pylist()]
    keep = [i for i, t in enumerate(texts) if t]
    encoded = tok.encode_batch([texts[i] for i in keep])
    lengths = np.array([len(e) + 1 for e in encoded], dtype=np.int32)
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32)
    values = np.empty(offsets[-1], dtype=np.int32)
    for ids, end in zip(encoded, offsets[1:]):
        values[end - len(ids) - 1 : end - 1] = ids
        values[end - 1] = tok.eot_id
    splits = batch.column("split").take(pa.array(keep, type=pa.int64()))
    return pa.table({"split": splits, "ids": pa.ListArray.from_arrays(pa.array(offsets), pa.array(values))})


@dataclass(frozen=True)
class Prepared:
    """Prepared data for a spec: the root, its manifest and one Unit per (language, split)."""

    root: Path
    manifest: dict
    units: dict[tuple[str, str], Unit]

    def unit(self, language: str, split: str) -> Unit:
        return self.units[(language, split)]

    def stats(self) -> dict:
        languages = {}
        for (language, split), unit in self.units.items():
            entry = languages.setdefault(language, {})
            key = "val" if split == "validation" else "train"
            info = self.manifest["languages"][language][split]
            entry[f"{key}_tokens"] = unit.rows * unit.row_len
            entry[f"{key}_rows"] = unit.rows
            entry[f"{key}_documents"] = info["documents"]
            entry["reader"] = self.manifest["languages"][language].get("reader", "")
        return {"tokenizer": self.manifest["tokenizer"]["name"], "seq_len": self.manifest["seq_len"],
                "path": str(self.root), "languages": languages}


def format_stats(stats: dict, usage: dict) -> str:
    """`data stats` as a table: per language its pools, and how many passes the run needs over each
    (`schedule.pool_usage`), or for the probe language what share of its pool one probe reads."""
    lines = [f"{stats['tokenizer']} tokens, rows of seq_len {stats['seq_len']} + 1, in {stats['path']}",
             f"{'lang':<5} {'train tokens':>14} {'val tokens':>12} {'train docs':>10} {'val docs':>8}  "
             f"{'read by':<28}  pool passes"]
    for lang, s in stats["languages"].items():
        use = usage.get(lang)
        if use is None:
            note = "probe language (probes off)"
        elif use.get("per") == "probe":
            share = use["rows_needed"] / use["pool_rows"]
            note = f"probe language: each probe reads {share:.0%} of the pool" + (" (rows repeat)" if share > 1 else "")
        else:
            note = f"{use['passes']}" + (" (rows repeat)" if use["passes"] > 1 else "")
        lines.append(f"{lang:<5} {s['train_tokens']:>14,} {s['val_tokens']:>12,} {s['train_documents']:>10,} "
                     f"{s['val_documents']:>8,}  {s['reader']:<28}  {note}")
    return "\n".join(lines)


def _manifest_path(root: Path) -> Path:
    return root / "manifest.json"


def _expected_header(spec: ExperimentSpec) -> dict:
    tokenizer = tokenizer_class(spec.data.tokenizer)
    return {
        "format": FORMAT,
        "fingerprint": data_fingerprint(spec.data),
        "tokenizer": {"name": tokenizer.name, "vocab_size": tokenizer.vocab_size, "eot_id": tokenizer.eot_id},
        "seq_len": spec.data.seq_len,
        "data": spec.data.model_dump(mode="json", exclude={"languages", "probe_language"}),
    }


def _read_manifest(root: Path, spec: ExperimentSpec) -> dict | None:
    path = _manifest_path(root)
    if not path.exists():
        return None
    try:
        manifest = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise DataError(f"{path}: unreadable manifest ({err}); move it aside to prepare again") from None
    expected = _expected_header(spec)
    for key, value in expected.items():
        if manifest.get(key) != value:
            raise DataError(
                f"{path}: does not match the spec's data section ({key}: manifest has {manifest.get(key)!r}, "
                f"spec needs {value!r}); nothing was changed"
            )
    return manifest


def load_prepared(spec: ExperimentSpec, languages: list[str] | None = None) -> Prepared:
    """The prepared data a spec needs; DataError if any of it is missing or inconsistent."""
    root = prepared_root(spec)
    manifest = _read_manifest(root, spec)
    if manifest is None:
        raise DataError(f"{root}: no prepared data for this spec; run `plasticity-ray data prepare SPEC` first")
    units = {}
    for language in languages or all_languages(spec.data):
        if language not in manifest["languages"]:
            raise DataError(f"{language}: not prepared in {root}; run `plasticity-ray data prepare SPEC`")
        for split in SPLITS:
            info = manifest["languages"][language][split]
            unit = Unit(root, language, split, info["rows"], spec.data.seq_len + 1, tuple(info["shards"]))
            unit.verify()
            units[(language, split)] = unit
    return Prepared(root, manifest, units)


def _prepare_language(spec: ExperimentSpec, root: Path, language: str, say: Callable[[str], None]) -> dict:
    writers = {s: UnitWriter(root, language, s, spec.data.seq_len + 1) for s in SPLITS}
    try:
        return _write_language(spec, language, writers, say)
    except BaseException as err:
        for writer in writers.values():
            writer.abort()
        cause = _data_error_in(err)
        if cause is not None and cause is not err:
            raise cause from None  # the DataError a Ray task raised, without Ray's wrapping
        raise


def _data_error_in(err: BaseException) -> DataError | None:
    """The DataError behind an exception. A Ray Data task's error reaches the driver as a
    UserCodeException that keeps only the text of the original traceback, so read it from there."""
    if isinstance(err, DataError):
        return err
    found = re.findall(rf"{DataError.__module__}\.DataError: (.+)", str(err))
    return DataError(found[-1]) if found else None


def _write_language(spec: ExperimentSpec, language: str, writers: dict[str, UnitWriter], say: Callable[[str], None]) -> dict:
    data = spec.data
    row_len = data.seq_len + 1
    caps = {s: data.pool_tokens(language, s) for s in SPLITS}
    cap_rows = {s: None if caps[s] is None else max(1, caps[s] // row_len) for s in SPLITS}
    packers = {s: Packer(row_len) for s in SPLITS}
    docs = {s: 0 for s in SPLITS}
    tokens = {s: 0 for s in SPLITS}
    started, last_report = time.time(), time.time()
    texts, reader = documents(data, language)
    stream = texts.map_batches(
        tokenize_batch, fn_kwargs={"tokenizer": data.tokenizer}, batch_size=DOCS_PER_BATCH, batch_format="pyarrow"
    )
    for batch in stream.iter_batches(batch_format="pyarrow", batch_size=None):
        for split in SPLITS:
            if cap_rows[split] is not None and writers[split].rows_added >= cap_rows[split]:
                continue
            ids = batch.column("ids").filter(pc.equal(batch.column("split"), split))
            docs[split] += len(ids)
            flat = pc.list_flatten(ids).to_numpy()
            tokens[split] += len(flat)
            rows = packers[split].add(flat)
            if cap_rows[split] is not None:
                rows = rows[: cap_rows[split] - writers[split].rows_added]
            writers[split].add(rows)
        if time.time() - last_report > 10:
            say(f"  {language}: {sum(docs.values()):,} documents, {sum(tokens.values()):,} tokens so far")
            last_report = time.time()
        if all(cap_rows[s] is not None and writers[s].rows_added >= cap_rows[s] for s in SPLITS):
            break
    for split in SPLITS:
        if writers[split].rows_added == 0:
            raise DataError(
                f"{language}: no {split} data ({docs[split]:,} documents, {tokens[split]:,} tokens: "
                f"fewer than one row of seq_len + 1 = {row_len} tokens)"
            )
    units = {
        s: writers[s].finish(documents=docs[s], source_tokens=tokens[s], dropped_tail_tokens=len(packers[s].tail))
        for s in SPLITS
    }
    units["reader"] = reader
    elapsed = time.time() - started
    say(
        f"  {language}: train {units['train']['rows']:,} rows ({units['train']['tokens']:,} tokens), "
        f"validation {units['validation']['rows']:,} rows; {sum(tokens.values()) / elapsed:,.0f} tokens/s ({reader})"
    )
    return units


def prepare(spec: ExperimentSpec, say: Callable[[str], None] = print) -> Prepared:
    """Prepare every language of the spec (training languages and the probe language)."""
    root = prepared_root(spec)
    manifest = _read_manifest(root, spec) or {**_expected_header(spec), "languages": {}}
    ready = all(language in manifest["languages"] for language in all_languages(spec.data))
    say(f"{spec.data.tokenizer} data of {len(all_languages(spec.data))} languages ready in {root}" if ready
        else f"preparing {spec.data.tokenizer} data in {root}")
    ray_data_logger = logging.getLogger("ray.data")
    level = ray_data_logger.level
    ray_data_logger.setLevel(logging.WARNING)  # we print our own progress, per language
    try:
        with ordered_datasets():  # rows are cut from the stream in order
            for language in all_languages(spec.data):
                if language in manifest["languages"]:
                    if not ready:
                        say(f"  {language}: already prepared, skipped")
                    continue
                units = _prepare_language(spec, root, language, say)
                manifest["languages"][language] = units
                write_json_atomic(_manifest_path(root), manifest)
    finally:
        ray_data_logger.setLevel(level)
    return load_prepared(spec)


@contextlib.contextmanager
def ordered_datasets(progress_bars: bool = True):
    """Ray Data datasets created inside keep their blocks in order (and, with `progress_bars`
    off, draw none); the process-wide DataContext is as before afterwards — a dataset keeps the
    context it was created with."""
    context = ray.data.DataContext.get_current()
    saved = context.execution_options, context.enable_progress_bars
    context.execution_options = copy.copy(saved[0])
    context.execution_options.preserve_order = True
    context.enable_progress_bars = saved[1] and progress_bars
    try:
        yield
    finally:
        context.execution_options, context.enable_progress_bars = saved
