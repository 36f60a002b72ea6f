"""Preparation through a real local Ray: the demo corpus, the hf and files sources, bad input."""

import json
import lzma
import os
import re
import subprocess
import sys

import numpy as np
import pyarrow as pa
import pyarrow.csv
import pyarrow.parquet as pq
import pytest

from plasticity_ray.cli import main
from plasticity_ray.data.prepare import load_prepared, prepare, prepared_root
from plasticity_ray.data.shards import ROW_GROUP_ROWS, DataError, Packer
from plasticity_ray.data.sources import BUILTIN_DIR
from plasticity_ray.data.tokenizers import ByteTokenizer
from plasticity_ray.spec import ALL_LANGUAGES, ExperimentSpec, with_overrides

QUIET = {"say": lambda line: None}


def test_packer_loses_no_token_and_pads_nothing():
    rng = np.random.default_rng(0)
    docs = [rng.integers(0, 100, size=rng.integers(1, 40)).astype(np.int32) for _ in range(50)]
    packer = Packer(row_len=9)
    rows = [packer.add(np.append(d, 999)) for d in docs]
    rows = np.concatenate(rows)
    assert rows.shape[1] == 9
    stream = np.concatenate([np.append(d, 999) for d in docs])
    assert np.array_equal(np.concatenate([rows.reshape(-1), packer.tail]), stream)
    assert len(packer.tail) < 9


def test_demo_prepares_all_nine_languages(demo_prepared, demo_spec, capsys):
    assert main(["data", "stats", "--json", _spec_file(demo_spec)]) == 0
    stats = json.loads(capsys.readouterr().out)
    assert stats["tokenizer"] == "byte"
    assert set(stats["languages"]) == set(ALL_LANGUAGES)
    for lang, s in stats["languages"].items():
        assert s["train_tokens"] > 0 and s["val_tokens"] > 0, lang
        assert s["train_tokens"] == s["train_rows"] * (demo_spec.data.seq_len + 1)


def _spec_file(spec: ExperimentSpec) -> str:
    """Write a spec to the storage dir so the CLI can read it."""
    import yaml

    path = f"{spec.storage_path}/{spec.name}.yaml"
    with open(path, "w") as f:
        yaml.safe_dump(spec.model_dump(mode="json"), f)
    return path


def test_every_row_has_seq_len_plus_one_ids(demo_prepared, demo_spec):
    row_len = demo_spec.data.seq_len + 1
    unit = demo_prepared.unit("en", "train")
    for shard in unit.shards:
        schema = pq.read_schema(unit.shard_path(shard))
        assert schema.field("ids").type == pa.list_(pa.int32(), row_len)
        groups = pq.ParquetFile(unit.shard_path(shard)).metadata
        sizes = [groups.row_group(i).num_rows for i in range(groups.num_row_groups)]
        assert all(s == ROW_GROUP_ROWS for s in sizes[:-1]) and 0 < sizes[-1] <= ROW_GROUP_ROWS


@pytest.mark.parametrize("split", ["train", "validation"])
def test_prepared_bytes_are_the_corpus_in_order_with_separators(demo_prepared, split):
    # The byte tokenizer is invertible: the rows, in order, plus the dropped tail must be exactly
    # the corpus's documents of that split, each followed by the separator.
    tok = ByteTokenizer()
    with lzma.open(BUILTIN_DIR / "vi.jsonl.xz", "rt", encoding="utf-8") as f:
        docs = [d["text"] for d in map(json.loads, f) if d["split"] == split]
    expected = np.concatenate([np.append(tok.encode_batch([d])[0], tok.eot_id) for d in docs])
    unit = demo_prepared.unit("vi", split)
    info = demo_prepared.manifest["languages"]["vi"][split]
    got = unit.read_all().reshape(-1)
    assert info["source_tokens"] == len(expected)
    assert np.array_equal(got, expected[: len(got)])
    assert len(expected) - len(got) == info["dropped_tail_tokens"] < unit.row_len


def test_prepare_again_skips_and_changes_nothing(demo_prepared, demo_spec):
    before = (prepared_root(demo_spec) / "manifest.json").read_text()
    lines = []
    again = prepare(demo_spec, say=lines.append)
    assert lines == [f"byte data of 9 languages ready in {again.root}"]
    assert (again.root / "manifest.json").read_text() == before


def test_changing_the_data_spec_writes_elsewhere(demo_spec):
    other = with_overrides(demo_spec, {"data.seq_len": 64})
    assert prepared_root(other) != prepared_root(demo_spec)
    english_only = {"data.languages": ["en"], "diagnostics.entropy_language": "en", "probe.extended": None}
    assert prepared_root(with_overrides(demo_spec, english_only)) == prepared_root(demo_spec)


def test_qwen3_demo_prepares_all_nine_languages(ray_session, demo_spec):
    spec = with_overrides(demo_spec, {"data.tokenizer": "qwen3"})
    stats = prepare(spec, **QUIET).stats()
    assert stats["tokenizer"] == "qwen3"
    assert set(stats["languages"]) == set(ALL_LANGUAGES)
    assert all(s["train_tokens"] > 0 and s["val_tokens"] > 0 for s in stats["languages"].values())
    ids = load_prepared(spec).unit("vi", "train").read_row_groups([0])
    assert ids.max() < 151_680


def _small_spec(tmp_path, source: dict, **data) -> ExperimentSpec:
    return ExperimentSpec(
        name="small", storage_path=str(tmp_path / "storage"),
        data={"source": source, "tokenizer": "byte", "languages": ["en", "zh"], "seq_len": 16,
              "validation_fraction": 0.3, **data},
        batch={"global_tokens": 32}, schedule={"tokens_per_task": 64}, probe={"tokens": 32},
        diagnostics={"entropy_first_query": 4, "entropy_language": "en"},
    )


def _docs(language, n=120):
    return [f"{language} document {i}: " + " ".join(["word"] * (i % 7 + 1)) for i in range(n)]


def test_hf_source_reads_a_local_dataset_with_the_hub_layout(ray_session, tmp_path):
    root = tmp_path / "culturax"
    for lang in ("en", "zh", "vi"):
        (root / lang).mkdir(parents=True)
        docs = _docs(lang)
        for part in range(2):  # several files per config, read in parallel
            table = pa.table({"content": docs[part::2], "url": ["u"] * len(docs[part::2])})
            pq.write_table(table, root / lang / f"{lang}_part_{part:05d}.parquet")
    spec = _small_spec(tmp_path, {"kind": "hf", "dataset": str(root), "text_field": "content"})
    prepared = prepare(spec, **QUIET)
    # The Parquet files are read in parallel by Ray Data, not loaded through `datasets`; stats say so.
    assert {s["reader"] for s in prepared.stats()["languages"].values()} == {"parquet (2 file(s), parallel)"}
    tok = ByteTokenizer()
    for lang in ("en", "zh", "vi"):
        seen = {}
        for split in ("train", "validation"):
            data = prepared.unit(lang, split).read_all().reshape(-1)
            pieces = np.split(data, np.flatnonzero(data == tok.eot_id) + 1)
            seen[split] = {tok.decode(p[:-1]) for p in pieces if len(p) and p[-1] == tok.eot_id}
        assert seen["train"] and seen["validation"]
        assert not seen["train"] & seen["validation"]  # split by document
        assert (seen["train"] | seen["validation"]) <= set(_docs(lang))


def _files_spec(tmp_path, zh_file):
    files = tmp_path / "files"
    files.mkdir(exist_ok=True)
    (files / "en.txt").write_text("\n".join(_docs("en")) + "\n")
    (files / "vi.jsonl").write_text("".join(json.dumps({"text": d}) + "\n" for d in _docs("vi")))
    return _small_spec(tmp_path, {"kind": "files", "paths": {"en": [str(files / "en.txt")], "zh": [str(zh_file)],
                                                             "vi": [str(files / "vi.jsonl")]}})


@pytest.mark.parametrize(
    "content,message",
    [(b"", "zh: {path} is empty"), (b"\xff\xfe not utf-8\n", "{path}: not UTF-8 text (byte 0)")],
    ids=["empty", "not-utf8"],
)
def test_bad_file_stops_naming_it_and_keeps_finished_languages(ray_session, tmp_path, content, message):
    zh = tmp_path / "zh.txt"
    zh.write_bytes(content)
    spec = _files_spec(tmp_path, zh)
    with pytest.raises(DataError) as err:
        prepare(spec, **QUIET)
    assert message.format(path=zh) in str(err.value)
    root = prepared_root(spec)
    manifest = json.loads((root / "manifest.json").read_text())
    assert list(manifest["languages"]) == ["en"]  # finished before zh, and kept
    en_shards = sorted((root / "en" / "train").iterdir())
    assert en_shards
    assert not list((root / "zh").glob("*")) if (root / "zh").exists() else True  # no partial files left
    # Fixed input: en is skipped, zh and vi are prepared, en's files are untouched.
    mtimes = [p.stat().st_mtime_ns for p in en_shards]
    zh.write_text("\n".join(_docs("zh")) + "\n")
    lines = []
    prepare(spec, say=lines.append)
    assert "  en: already prepared, skipped" in lines
    assert [p.stat().st_mtime_ns for p in sorted((root / "en" / "train").iterdir())] == mtimes


def test_a_language_without_data_is_named(ray_session, tmp_path):
    spec = _files_spec(tmp_path, tmp_path / "zh.txt")
    spec = with_overrides(spec, {"data.source.paths": {"en": spec.data.source.paths["en"]}})
    with pytest.raises(DataError, match="zh: data.source.paths lists no files for this language"):
        prepare(spec, **QUIET)


def test_a_too_small_language_is_named(ray_session, tmp_path):
    zh = tmp_path / "zh.txt"
    zh.write_text("tiny\n")
    with pytest.raises(DataError, match=r"zh: no (train|validation) data"):
        prepare(_files_spec(tmp_path, zh), **QUIET)


def test_corrupted_and_truncated_shards_are_named(demo_prepared, demo_spec, tmp_path):
    import shutil

    spec = with_overrides(demo_spec, {"storage_path": str(tmp_path)})
    shutil.copytree(prepared_root(demo_spec), prepared_root(spec))
    unit = load_prepared(spec).unit("de", "train")
    shard = unit.shard_path(unit.shards[0])
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0xFF
    shard.write_bytes(bytes(data))
    with pytest.raises(DataError, match=f"{shard}: checksum differs"):
        load_prepared(spec).unit("de", "train").verify(checksums=True)
    shard.write_bytes(bytes(data[: len(data) // 2]))
    with pytest.raises(DataError, match=f"{shard}: size .* differs from the manifest"):
        load_prepared(spec)
    assert main(["data", "stats", _spec_file(spec)]) == 2
    assert shard.exists()  # nothing is deleted


def test_a_manifest_that_does_not_match_the_spec_is_refused(demo_prepared, demo_spec, tmp_path):
    import shutil

    spec = with_overrides(demo_spec, {"storage_path": str(tmp_path)})
    shutil.copytree(prepared_root(demo_spec), prepared_root(spec))
    manifest_path = prepared_root(spec) / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["seq_len"] = 64
    manifest_path.write_text(json.dumps(manifest))
    with pytest.raises(DataError, match=r"manifest.json: does not match the spec's data section \(seq_len"):
        load_prepared(spec)
    with pytest.raises(DataError, match="does not match"):
        prepare(spec, **QUIET)
    assert json.loads(manifest_path.read_text())["seq_len"] == 64  # left as it was


def _hf_dataset_dir(root, layout: str, configs: dict[str, str]):
    """A local Hugging Face dataset directory: one config per language, declared in the README's
    `configs:` as on the Hub, files at data/<config>/part-<n>.<layout>, the text in column "body"."""
    header = ["---", "configs:"]
    for language, config in configs.items():
        folder = root / "data" / config
        folder.mkdir(parents=True)
        docs = _docs(language)
        for part in range(2):
            rows = {"body": docs[part::2], "id": list(range(len(docs[part::2])))}
            path = folder / f"part-{part}.{layout}"
            if layout == "jsonl":
                path.write_text("".join(json.dumps({"body": b, "id": i}) + "\n" for b, i in zip(rows["body"], rows["id"])))
            elif layout == "csv":
                pa.csv.write_csv(pa.table(rows), path)
            else:
                pq.write_table(pa.table(rows), path)
        header += [f"- config_name: {config}", "  data_files:", "  - split: train", f"    path: data/{config}/*.{layout}"]
    (root / "README.md").write_text("\n".join([*header, "---", ""]))
    return root


def _assert_each_pool_holds_its_own_language(prepared, languages):
    tok = ByteTokenizer()
    for lang in languages:
        for split in ("train", "validation"):
            data = prepared.unit(lang, split).read_all().reshape(-1)
            pieces = np.split(data, np.flatnonzero(data == tok.eot_id) + 1)
            seen = {tok.decode(p[:-1]) for p in pieces if len(p) and p[-1] == tok.eot_id}
            assert seen and seen <= set(_docs(lang)), (lang, split)  # only this language's documents


def test_hf_source_reads_datasets_saved_per_language(ray_session, tmp_path):
    """`datasets.save_to_disk` once per language (a Dataset, or a DatasetDict with the split) is
    read as such: every pool, the probe language's above all, holds its own documents only."""
    import datasets

    root = tmp_path / "saved"
    for lang in ("en", "zh", "vi"):
        ds = datasets.Dataset.from_dict({"body": _docs(lang)})
        (datasets.DatasetDict({"train": ds}) if lang == "zh" else ds).save_to_disk(str(root / lang))
    spec = _small_spec(tmp_path, {"kind": "hf", "dataset": str(root), "text_field": "body"})
    prepared = prepare(spec, **QUIET)
    _assert_each_pool_holds_its_own_language(prepared, ("en", "zh", "vi"))
    assert {s["reader"] for s in prepared.stats()["languages"].values()} == {"datasets (save_to_disk)"}


def test_one_saved_dataset_for_every_language_is_refused_with_advice_that_works(ray_session, tmp_path):
    import datasets

    root = tmp_path / "mixed"
    datasets.Dataset.from_dict({"text": _docs("en") + _docs("zh") + _docs("vi")}).save_to_disk(str(root))
    with pytest.raises(DataError) as err:
        prepare(_small_spec(tmp_path, {"kind": "hf", "dataset": str(root)}), **QUIET)
    assert str(err.value) == (f"hf dataset '{root}' is one dataset saved with save_to_disk for every language; save "
                              f"each language's documents on its own, as {root}/<language> (e.g. /en)")
    # What the earlier advice led to — every language reading the same config — is refused by the spec.
    with pytest.raises(ValueError, match="source.configs: en, zh, vi all read config 'default' of .*; each "
                                         "language needs its own documents"):
        _small_spec(tmp_path, {"kind": "hf", "dataset": str(root),
                               "configs": {"en": "default", "zh": "default", "vi": "default"}})


@pytest.mark.parametrize("source,message", [
    ({"kind": "files", "paths": {"en": ["docs.txt"], "zh": ["zh.txt"], "vi": ["docs.txt"]}},
     "source.paths: 'docs.txt' is listed for both en and vi"),
    ({"kind": "hf", "dataset": "org/name", "data_files": "data/*.parquet"},
     "source.data_files: 'data/*.parquet' has no {config}, so every language would read the same files"),
], ids=["files", "hf-data-files"])
def test_a_spec_that_would_give_two_languages_the_same_documents_is_refused(tmp_path, source, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        _small_spec(tmp_path, source)


def test_a_missing_local_hf_directory_is_named_before_any_network(ray_session, tmp_path):
    missing = tmp_path / "no-such-dataset"
    with pytest.raises(DataError) as err:
        prepare(_small_spec(tmp_path, {"kind": "hf", "dataset": str(missing)}), **QUIET)
    assert str(err.value) == f"hf dataset '{missing}': no such local directory (data.source.dataset)"


@pytest.mark.parametrize("layout", ["jsonl", "csv", "parquet"])
def test_hf_source_loads_a_local_dataset_with_configs_through_datasets(ray_session, tmp_path, layout, capsys):
    root = _hf_dataset_dir(tmp_path / f"ds-{layout}", layout, {"en": "english", "zh": "zh", "vi": "vietnamese"})
    source = {"kind": "hf", "dataset": str(root), "text_field": "body", "configs": {"en": "english", "vi": "vietnamese"}}
    spec = _small_spec(tmp_path, source)
    prepared = prepare(spec, **QUIET)
    _assert_each_pool_holds_its_own_language(prepared, ("en", "zh", "vi"))
    for lang in ("en", "zh", "vi"):
        assert prepared.stats()["languages"][lang]["reader"] == "datasets"
    assert main(["data", "stats", _spec_file(spec)]) == 0
    assert "datasets" in capsys.readouterr().out  # `data stats` says which reader


@pytest.mark.parametrize("change,message", [
    ({"configs": {"zh": "chinese"}}, "hf dataset '{root}' has no config 'chinese' for zh (it has: en, zh, vi); "
                                     "set data.source.configs.zh"),
    ({"text_field": "content"}, "hf dataset '{root}' (en): no text field 'content' (columns: body, id); "
                                "set data.source.text_field"),
    ({"split": "test"}, "hf dataset '{root}' (en): Unknown split \"test\". Should be one of ['train']. "
                        "Set data.source.split"),
    ({"reader": "parquet"}, "en: no files match 'en/*.parquet' in hf dataset '{root}' (data.source.reader: parquet)"),
], ids=["config", "text-field", "split", "no-parquet"])
def test_hf_source_bad_input_is_one_line_and_keeps_what_was_prepared(ray_session, tmp_path, change, message):
    root = _hf_dataset_dir(tmp_path / "ds", "jsonl", {"en": "en", "zh": "zh", "vi": "vi"})
    spec = _small_spec(tmp_path, {"kind": "hf", "dataset": str(root), "text_field": "body", **change})
    if change.get("configs"):  # en is prepared before zh fails: it stays
        with pytest.raises(DataError, match="^" + re.escape(message.format(root=root)) + "$"):
            prepare(spec, **QUIET)
        assert "en" in json.loads((prepared_root(spec) / "manifest.json").read_text())["languages"]
        return
    with pytest.raises(DataError) as err:
        prepare(spec, **QUIET)
    assert str(err.value) == message.format(root=root)


GATED_SERVER = """
import http.server, json, os, sys, threading
MESSAGE = "Access to dataset org/secret is restricted. You must have access to it and be authenticated to access it."
class Hub(http.server.BaseHTTPRequestHandler):  # what the Hub answers for a gated dataset without a token
    def answer(self):
        body = json.dumps({"error": MESSAGE}).encode()
        self.send_response(401)
        self.send_header("X-Error-Code", "GatedRepo")
        self.send_header("X-Error-Message", MESSAGE)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    do_GET = do_HEAD = answer
    def log_message(self, *args):
        pass
server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Hub)
threading.Thread(target=server.serve_forever, daemon=True).start()
os.environ["HF_ENDPOINT"] = f"http://127.0.0.1:{server.server_port}"
from plasticity_ray.data.shards import DataError
from plasticity_ray.data.sources import documents
from plasticity_ray.spec import DataSpec
try:
    documents(DataSpec(source={"kind": "hf", "dataset": "org/secret", "reader": sys.argv[1]}, tokenizer="byte"), "en")
except DataError as err:
    print(err)
"""


@pytest.mark.parametrize("reader", ["auto", "datasets"])
def test_a_gated_dataset_without_a_token_says_what_to_do(reader):
    """The real `huggingface_hub` and `datasets` clients against a local server answering as the Hub
    does for a gated dataset (HTTP 401, X-Error-Code: GatedRepo)."""
    env = {k: v for k, v in os.environ.items() if k not in ("HF_TOKEN", "HF_HUB_OFFLINE")}
    done = subprocess.run([sys.executable, "-c", GATED_SERVER, reader], capture_output=True, text=True, env=env,
                          timeout=120)
    assert done.stdout.strip() == ("hf dataset 'org/secret' is gated: accept its terms at "
                                   "https://huggingface.co/datasets/org/secret, then set HF_TOKEN in the environment "
                                   "(it is unset)"), done.stderr[-2000:]
