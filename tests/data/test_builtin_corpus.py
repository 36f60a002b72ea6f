"""The committed built-in corpus: all nine languages, real prose, a document-level split."""

import json
import lzma

import pytest

from plasticity_ray.data.builtin.build import is_untranslated, _words
from plasticity_ray.data.sources import BUILTIN_DIR
from plasticity_ray.spec import ALL_LANGUAGES


def _docs(language):
    with lzma.open(BUILTIN_DIR / f"{language}.jsonl.xz", "rt", encoding="utf-8") as f:
        return [json.loads(line) for line in f]


def test_small_enough_to_ship():
    assert sum((BUILTIN_DIR / f"{lang}.jsonl.xz").stat().st_size for lang in ALL_LANGUAGES) < 5 * 2**20
    assert (BUILTIN_DIR / "SOURCES.md").exists()


@pytest.mark.parametrize("language", ALL_LANGUAGES)
def test_each_language_has_train_and_validation_documents(language):
    docs = _docs(language)
    splits = {d["split"] for d in docs}
    assert splits == {"train", "validation"}
    train_chars = sum(len(d["text"]) for d in docs if d["split"] == "train")
    assert train_chars > 150_000  # the smallest (vi) has about 180K characters


@pytest.mark.parametrize("language", ALL_LANGUAGES)
def test_no_document_is_in_both_splits(language):
    docs = _docs(language)
    train = {d["doc"] for d in docs if d["split"] == "train"}
    validation = {d["doc"] for d in docs if d["split"] == "validation"}
    assert train and validation and not train & validation
    assert len(train) + len(validation) == len(docs)  # one entry per page
    train_paragraphs = {p for d in docs if d["split"] == "train" for p in d["text"].split("\n\n")}
    shared = [p for d in docs if d["split"] == "validation" for p in d["text"].split("\n\n") if p in train_paragraphs]
    assert not shared  # de-duplicated across the whole language


def test_the_split_is_the_same_page_in_every_language():
    split = {}
    for language in ALL_LANGUAGES:
        for d in _docs(language):
            assert split.setdefault(d["doc"], d["split"]) == d["split"]


@pytest.mark.parametrize("language", [lang for lang in ALL_LANGUAGES if lang != "en"])
def test_untranslated_english_was_dropped(language):
    english = {d["doc"]: [_words(p) for p in d["text"].split("\n\n")] for d in _docs("en")}
    for d in _docs(language):
        for paragraph in d["text"].split("\n\n"):
            assert not is_untranslated(paragraph, english.get(d["doc"], []))


def test_untranslated_detection():
    english = [_words("The screen reader can display the user interface on a Braille display.")]
    assert is_untranslated("The screen reader can display the user interface on a refreshable Braille display.", english)
    assert not is_untranslated("Trình đọc màn hình có thể hiển thị giao diện trên màn hình chữ nổi.", english)
