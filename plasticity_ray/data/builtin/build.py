"""Build the built-in corpus from two Debian packages (both CC-BY-SA 3.0).

    python -m plasticity_ray.data.builtin.build            # download with apt-get, then build
    python -m plasticity_ray.data.builtin.build --debs DIR # build from .deb files already in DIR

Sources: ``debian-handbook`` (the Debian Administrator's Handbook, HTML) and ``gnome-user-docs``
(GNOME Help, Mallard pages), in en, zh, fr, ja, es, de, pt, ru and vi. One document per page.
Prose paragraphs only (no code listings); a paragraph identical (or nearly: most words shared) to one of the English
original of the same page is an untranslated leftover and is dropped; text is NFC-normalised and de-duplicated per language.
Pages are split into train and validation by a hash of the page's name, so a page (in every
language) is in exactly one split. Output: ``<lang>.jsonl.xz`` beside this file, one
``{"doc", "split", "text"}`` object per line, written byte-for-byte reproducibly.
"""

from __future__ import annotations

import argparse
import hashlib
import html.parser
import json
import lzma
import re
import subprocess
import sys
import tempfile
import unicodedata
import xml.etree.ElementTree as ET
from pathlib import Path

HERE = Path(__file__).parent
PACKAGES = {"debian-handbook": "11.20220922", "gnome-user-docs": "43.0-2"}
HANDBOOK_DIRS = {"en": "en-US", "zh": "zh-CN", "fr": "fr-FR", "ja": "ja-JP", "es": "es-ES",
                 "de": "de-DE", "pt": "pt-BR", "ru": "ru-RU", "vi": "vi-VN"}
GNOME_DIRS = {"en": "C", "zh": "zh_CN", "fr": "fr", "ja": "ja", "es": "es", "de": "de", "pt": "pt_BR",
              "ru": "ru", "vi": "vi"}
VALIDATION_BUCKETS = 10  # one page in ten (by name hash) is validation
MIN_CHARS = 12  # shorter paragraphs are labels, not prose
UNTRANSLATED_OVERLAP = 0.5  # word-set Jaccard with an English paragraph of the same page
MALLARD_P = "{http://projectmallard.org/1.0/}p"


def clean(text: str) -> str:
    return re.sub(r"\s+", " ", unicodedata.normalize("NFC", text)).strip()


class _HandbookParagraphs(html.parser.HTMLParser):
    """Text of a handbook page's paragraphs (DocBook renders them as <div class="para">),
    leaving out program listings inside them."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.paragraphs: list[str] = []
        self._div_depth = 0  # open <div>s since the paragraph began; 0 = not in a paragraph
        self._pre_depth = 0
        self._buffer: list[str] = []

    def handle_starttag(self, tag, attrs):
        if tag == "div" and (self._div_depth or dict(attrs).get("class") == "para"):
            self._div_depth += 1
        elif tag == "pre" and self._div_depth:
            self._pre_depth += 1

    def handle_endtag(self, tag):
        if tag == "pre" and self._pre_depth:
            self._pre_depth -= 1
        elif tag == "div" and self._div_depth:
            self._div_depth -= 1
            if self._div_depth == 0:
                self.paragraphs.append(clean("".join(self._buffer)))
                self._buffer = []

    def handle_data(self, data):
        if self._div_depth and not self._pre_depth:
            self._buffer.append(data)


def handbook_pages(root: Path, lang: str) -> dict[str, list[str]]:
    pages = {}
    for path in sorted((root / "usr/share/doc/debian-handbook/html" / HANDBOOK_DIRS[lang]).glob("*.html")):
        parser = _HandbookParagraphs()
        parser.feed(path.read_text(encoding="utf-8"))
        pages[f"debian-handbook/{path.stem}"] = parser.paragraphs
    return pages


def gnome_pages(root: Path, lang: str) -> dict[str, list[str]]:
    pages = {}
    for path in sorted((root / "usr/share/help" / GNOME_DIRS[lang] / "gnome-help").glob("*.page")):
        tree = ET.parse(path)
        pages[f"gnome-help/{path.stem}"] = [clean("".join(p.itertext())) for p in tree.iter(MALLARD_P)]
    return pages


def _words(text: str) -> frozenset[str]:
    return frozenset(re.findall(r"\w+", text.lower()))


def is_untranslated(paragraph: str, english: list[frozenset[str]]) -> bool:
    """Identical to, or sharing most words with, a paragraph of the English original of the page
    (translations that kept an older English paragraph differ from the current one slightly)."""
    words = _words(paragraph)
    if not words:
        return False
    return any(len(words & e) / len(words | e) >= UNTRANSLATED_OVERLAP for e in english)


def split_of(doc: str) -> str:
    bucket = int(hashlib.sha256(doc.encode()).hexdigest(), 16) % VALIDATION_BUCKETS
    return "validation" if bucket == 0 else "train"


def build_documents(root: Path) -> dict[str, list[dict]]:
    """Language -> documents, from the unpacked packages under `root`."""
    pages = {lang: {**handbook_pages(root, lang), **gnome_pages(root, lang)} for lang in HANDBOOK_DIRS}
    english = {doc: [_words(p) for p in paragraphs] for doc, paragraphs in pages["en"].items()}
    corpus = {}
    for lang, docs in pages.items():
        seen: set[str] = set()
        out = []
        for doc, paragraphs in docs.items():
            kept = []
            for p in paragraphs:
                if len(p) < MIN_CHARS or p in seen or (lang != "en" and is_untranslated(p, english.get(doc, []))):
                    continue
                seen.add(p)
                kept.append(p)
            if kept:
                out.append({"doc": doc, "split": split_of(doc), "text": "\n\n".join(kept)})
        corpus[lang] = out
    return corpus


def write_corpus(corpus: dict[str, list[dict]], out_dir: Path) -> None:
    for lang, docs in corpus.items():
        payload = "".join(json.dumps(d, ensure_ascii=False, sort_keys=True) + "\n" for d in docs).encode()
        tmp = out_dir / f".{lang}.jsonl.xz.tmp"
        tmp.write_bytes(lzma.compress(payload, preset=9 | lzma.PRESET_EXTREME))
        tmp.replace(out_dir / f"{lang}.jsonl.xz")


def unpack(debs: Path, root: Path) -> None:
    for name, version in PACKAGES.items():
        deb = debs / f"{name}_{version}_all.deb"
        if not deb.exists():
            raise SystemExit(f"{deb} not found (expected {name} {version}; run without --debs to download it)")
        subprocess.run(["dpkg-deb", "-x", str(deb), str(root)], check=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--debs", type=Path, help="directory holding the two .deb files (default: apt-get download)")
    parser.add_argument("--out", type=Path, default=HERE, help="output directory (default: beside this script)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        debs = args.debs
        if debs is None:
            debs = Path(tmp) / "debs"
            debs.mkdir()
            wanted = [f"{n}={v}" for n, v in PACKAGES.items()]
            subprocess.run(["apt-get", "download", *wanted], cwd=debs, check=True)
        root = Path(tmp) / "root"
        unpack(debs, root)
        corpus = build_documents(root)
    write_corpus(corpus, args.out)
    for lang, docs in corpus.items():
        chars = {s: sum(len(d["text"]) for d in docs if d["split"] == s) for s in ("train", "validation")}
        print(f"{lang}: {len(docs)} documents, {chars['train']:,} train / {chars['validation']:,} validation characters")
    return 0


if __name__ == "__main__":
    sys.exit(main())
