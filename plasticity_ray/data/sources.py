"""Where documents come from: one function, `documents(data_spec, language)`, three kinds of source.

Each returns a Ray Dataset with the columns ``split`` ("train" or "validation") and ``text``.
- builtin: the small corpus shipped in `plasticity_ray/data/builtin` (its own document-level split);
- hf: a Hugging Face dataset's Parquet files (hub or local directory), read in parallel;
- files: the user's .txt (one document per line), .jsonl or .parquet files.
For hf and files, a document goes to validation when a hash of its text falls below
`validation_fraction`, so the split is by document and the same on every run.
"""

from __future__ import annotations

import glob
import hashlib
import json
import lzma
import os
from pathlib import Path

import pyarrow as pa
import ray.data

from plasticity_ray.data.shards import DataError
from plasticity_ray.spec import BuiltinSource, DataSpec, FilesSource, HFSource

BUILTIN_DIR = Path(__file__).parent / "builtin"
BUILTIN_BLOCK_DOCS = 64  # documents per block, so tokenization spreads over the workers


def documents(data: DataSpec, language: str) -> ray.data.Dataset:
    source = data.source
    if isinstance(source, BuiltinSource):
        return _builtin(language)
    if isinstance(source, HFSource):
        texts = _hf(source, language)
    else:
        texts = _files(source, language)
    fraction = data.validation_fraction
    return texts.map_batches(lambda b: _assign_split(b, fraction), batch_format="pyarrow")


def _builtin(language: str) -> ray.data.Dataset:
    path = BUILTIN_DIR / f"{language}.jsonl.xz"
    if not path.exists():
        raise DataError(f"{language}: the built-in corpus has no file {path.name}")
    with lzma.open(path, "rt", encoding="utf-8") as f:
        rows = [json.loads(line) for line in f]
    table = pa.table({"split": [r["split"] for r in rows], "text": [r["text"] for r in rows]})
    return ray.data.from_arrow([table.slice(i, BUILTIN_BLOCK_DOCS) for i in range(0, len(table), BUILTIN_BLOCK_DOCS)])


def _assign_split(batch: pa.Table, fraction: float) -> pa.Table:
    texts = batch.column("text").to_pylist()
    cut = int(fraction * 2**64)
    splits = [
        "validation" if int.from_bytes(hashlib.blake2b(t.encode("utf-8"), digest_size=8).digest(), "big") < cut else "train"
        for t in texts
    ]
    return pa.table({"split": splits, "text": texts})


def _hf(source: HFSource, language: str) -> ray.data.Dataset:
    config = source.configs.get(language, language)
    pattern = source.data_files.format(config=config)
    if os.path.isdir(source.dataset):
        paths = sorted(glob.glob(os.path.join(source.dataset, pattern)))
        filesystem = None
    else:
        from huggingface_hub import HfFileSystem
        from pyarrow.fs import FSSpecHandler, PyFileSystem

        hub = HfFileSystem(token=os.environ.get("HF_TOKEN"))
        paths = sorted(hub.glob(f"datasets/{source.dataset}/{pattern}"))
        filesystem = PyFileSystem(FSSpecHandler(hub))
    if not paths:
        raise DataError(f"{language}: no files match {pattern!r} in dataset {source.dataset!r}")
    ds = ray.data.read_parquet(paths, filesystem=filesystem).select_columns([source.text_field])
    return ds.rename_columns({source.text_field: "text"}) if source.text_field != "text" else ds


def _files(source: FilesSource, language: str) -> ray.data.Dataset:
    paths: list[str] = []
    for pattern in source.paths.get(language, []):
        matches = sorted(glob.glob(os.path.expanduser(pattern)))
        if not matches:
            raise DataError(f"{language}: no file matches {pattern!r}")
        paths += matches
    if not paths:
        raise DataError(f"{language}: data.source.paths lists no files for this language")
    for path in paths:
        if os.path.getsize(path) == 0:
            raise DataError(f"{language}: {path} is empty")
    by_kind: dict[str, list[str]] = {}
    for path in paths:
        kind = Path(path).suffix.lower()
        if kind not in (".txt", ".jsonl", ".parquet"):
            raise DataError(f"{language}: {path}: unsupported file type (use .txt, .jsonl or .parquet)")
        by_kind.setdefault(kind, []).append(path)
    parts = []
    if ".txt" in by_kind:
        parts.append(ray.data.read_binary_files(by_kind[".txt"], include_paths=True).flat_map(_text_lines))
    if ".jsonl" in by_kind:
        field = source.text_field
        parts.append(ray.data.read_binary_files(by_kind[".jsonl"], include_paths=True).flat_map(lambda r: _json_lines(r, field)))
    if ".parquet" in by_kind:
        ds = ray.data.read_parquet(by_kind[".parquet"]).select_columns([source.text_field])
        parts.append(ds.rename_columns({source.text_field: "text"}) if source.text_field != "text" else ds)
    return parts[0] if len(parts) == 1 else parts[0].union(*parts[1:])


def _decode(row: dict) -> str:
    try:
        return row["bytes"].decode("utf-8")
    except UnicodeDecodeError as err:
        raise DataError(f"{row['path']}: not UTF-8 text (byte {err.start})") from None


def _text_lines(row: dict) -> list[dict]:
    return [{"text": line} for line in _decode(row).splitlines() if line.strip()]


def _json_lines(row: dict, field: str) -> list[dict]:
    out = []
    for number, line in enumerate(_decode(row).splitlines(), start=1):
        if not line.strip():
            continue
        try:
            text = json.loads(line)[field]
        except (json.JSONDecodeError, KeyError, TypeError):
            raise DataError(f"{row['path']}: line {number} is not a JSON object with a {field!r} string") from None
        out.append({"text": str(text)})
    return out

