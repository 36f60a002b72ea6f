"""Where documents come from: one function, `documents(data_spec, language)`, three kinds of source.

Each returns a Ray Dataset with the columns ``split`` ("train" or "validation") and ``text``, and
which reader it took (what `data stats` shows):
- builtin: the small corpus shipped in `plasticity_ray/data/builtin` (its own document-level split);
- hf: a Hugging Face dataset (Hub or local directory): its Parquet files read in parallel by Ray
  Data when it has them (CulturaX), else the config loaded by the `datasets` library and handed to
  Ray Data with `ray.data.from_huggingface`;
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


def documents(data: DataSpec, language: str) -> tuple[ray.data.Dataset, str]:
    """The language's documents, and the reader that produced them."""
    source = data.source
    if isinstance(source, BuiltinSource):
        return _builtin(language), "builtin"
    if isinstance(source, HFSource):
        texts, reader = _hf(source, language)
    else:
        texts, reader = _files(source, language), "files"
    fraction = data.validation_fraction
    return texts.map_batches(lambda b: _assign_split(b, fraction), batch_format="pyarrow"), reader


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


def _hf(source: HFSource, language: str) -> tuple[ray.data.Dataset, str]:
    config = source.configs.get(language, language)
    if source.dataset.startswith(("/", "./", "../", "~")) and not _is_local(source):  # a path, not a Hub id
        raise DataError(f"hf dataset {source.dataset!r}: no such local directory (data.source.dataset)")
    saved = _saved_per_language(source, language, config)
    if saved is not None:
        return _text_column(ray.data.from_huggingface(saved), source.text_field), "datasets (save_to_disk)"
    try:
        paths, filesystem = _parquet_files(source, config) if source.reader != "datasets" else ([], None)
        if paths:
            ds = ray.data.read_parquet(paths, filesystem=filesystem)
            if source.text_field not in ds.columns():
                raise DataError(_no_text_field(source, config, ds.columns()))
            ds = ds.select_columns([source.text_field])
            reader = f"parquet ({len(paths)} file(s), parallel)"
        elif source.reader == "parquet":
            raise DataError(f"{language}: no files match {source.data_files.format(config=config)!r} in hf dataset "
                            f"{source.dataset!r} (data.source.reader: parquet)")
        else:
            ds = ray.data.from_huggingface(_load_with_datasets(source, language, config))
            reader = "datasets" + (" (streaming)" if source.streaming and not _is_local(source) else "")
    except DataError:
        raise
    except Exception as err:  # the Hub's and `datasets`' own errors, in words
        message = _hf_problem(source, config, err)
        if message is None:
            raise
        raise DataError(message) from None
    return _text_column(ds, source.text_field), reader


def _text_column(ds: ray.data.Dataset, field: str) -> ray.data.Dataset:
    return ds.rename_columns({field: "text"}) if field != "text" else ds


def _is_local(source: HFSource) -> bool:
    return os.path.isdir(os.path.expanduser(source.dataset))


def _is_saved(path: Path) -> bool:
    """A directory `datasets.save_to_disk` wrote (a Dataset or a DatasetDict)."""
    return (path / "state.json").is_file() or (path / "dataset_dict.json").is_file()


def _saved_per_language(source: HFSource, language: str, config: str):
    """The language's dataset when the local directory holds one `save_to_disk` output per
    language (<dir>/<config>), None when it is not such a layout. One saved dataset for all
    languages is refused: nothing in it says which document is which language's."""
    if not _is_local(source):
        return None
    root = Path(os.path.expanduser(source.dataset))
    if _is_saved(root):
        raise DataError(f"hf dataset {source.dataset!r} is one dataset saved with save_to_disk for every language; "
                        f"save each language's documents on its own, as {source.dataset}/<language> (e.g. /{config})")
    if not any(_is_saved(sub) for sub in root.iterdir() if sub.is_dir()):
        return None
    if not _is_saved(root / config):
        raise DataError(f"{language}: hf dataset {source.dataset!r} holds datasets saved per language but none in "
                        f"{config}/ (set data.source.configs.{language} to its folder)")
    import datasets

    saved = datasets.load_from_disk(str(root / config))
    if isinstance(saved, datasets.DatasetDict):
        if source.split not in saved:
            raise DataError(f"{language}: hf dataset {source.dataset!r} ({config}) has no split {source.split!r} "
                            f"(it has: {', '.join(saved)}); set data.source.split")
        saved = saved[source.split]
    if source.text_field not in saved.column_names:
        raise DataError(_no_text_field(source, config, saved.column_names))
    return saved.select_columns([source.text_field])


def _parquet_files(source: HFSource, config: str) -> tuple[list[str], object]:
    """The Parquet files of a config, and the filesystem to read them with (None: local)."""
    pattern = source.data_files.format(config=config)
    if _is_local(source):
        return sorted(glob.glob(os.path.join(os.path.expanduser(source.dataset), pattern))), None
    from huggingface_hub import HfFileSystem
    from pyarrow.fs import FSSpecHandler, PyFileSystem

    hub = HfFileSystem(token=os.environ.get("HF_TOKEN"))
    revision = f"@{source.revision}" if source.revision else ""
    paths = sorted(hub.glob(f"datasets/{source.dataset}{revision}/{pattern}"))
    return paths, PyFileSystem(FSSpecHandler(hub))


def _load_with_datasets(source: HFSource, language: str, config: str):
    import datasets

    streaming = source.streaming and not _is_local(source)  # a local directory is read where it lies
    name = os.path.expanduser(source.dataset)
    token = os.environ.get("HF_TOKEN")
    configs = datasets.get_dataset_config_names(name, revision=source.revision, token=token)
    if config not in configs:
        raise DataError(_no_config(source, language, config, configs))
    ds = datasets.load_dataset(name, config, split=source.split, streaming=streaming, revision=source.revision,
                               token=token)
    columns = ds.column_names or []
    if source.text_field not in columns:
        raise DataError(_no_text_field(source, config, columns))
    return ds.select_columns([source.text_field])  # only the text crosses into Ray Data


def _no_config(source: HFSource, language: str, config: str, configs: list[str]) -> str:
    return (f"hf dataset {source.dataset!r} has no config {config!r} for {language} (it has: {', '.join(configs)}); "
            f"set data.source.configs.{language}")


def _no_text_field(source: HFSource, config: str, columns: list[str]) -> str:
    return (f"hf dataset {source.dataset!r} ({config}): no text field {source.text_field!r} "
            f"(columns: {', '.join(columns)}); set data.source.text_field")


def _hf_problem(source: HFSource, config: str, err: Exception) -> str | None:
    """One line for what the Hub or `datasets` refused, or None for an error that is not the user's."""
    from huggingface_hub.errors import GatedRepoError, RepositoryNotFoundError

    name, text = source.dataset, str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    causes, cause = [], err
    while cause is not None and len(causes) < 10:  # the Hub's filesystem wraps what the Hub said
        causes.append(cause)
        cause = cause.__cause__ or cause.__context__
    if any(isinstance(c, GatedRepoError) for c in causes) or "gated" in text.lower():
        then = ("HF_TOKEN is set but its account has no access" if os.environ.get("HF_TOKEN")
                else "set HF_TOKEN in the environment (it is unset)")
        return f"hf dataset {name!r} is gated: accept its terms at https://huggingface.co/datasets/{name}, then {then}"
    if text.startswith("Unknown split"):
        return f"hf dataset {name!r} ({config}): {text} Set data.source.split"
    if isinstance(err, RepositoryNotFoundError) or isinstance(err, FileNotFoundError):
        return f"hf dataset {name!r}: not found on the Hub or as a local directory ({text})"
    if isinstance(err, ConnectionError):
        return f"hf dataset {name!r}: cannot reach the Hugging Face Hub ({text})"
    return None


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
        parts.append(_text_column(ray.data.read_parquet(by_kind[".parquet"]).select_columns([source.text_field]),
                                  source.text_field))
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

