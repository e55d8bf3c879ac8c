"""Zero-shot evaluation corpora: a source -> one JSONL file of documents ({"text": ...} per line).

The papers' zero-shot table (MDLM Table 3, DUO Table 2) scores an OpenWebText model on seven other
corpora, each read as the original MDLM/DUO ``dataloader.get_dataset`` reads it (split, text field,
detokenizer); the embedded default scores its KJV models on real text that is on every machine
offline. `write_eval_corpus(name, source, out_jsonl, out_meta)` dispatches on ``source["kind"]``:

* ``"hf"``               ``datasets.load_dataset(path, name, split=split)`` (optional ``revision``,
                         ``data_files``, ``cache_dir``), the column ``text_field`` (default "text"). The
                         paper corpora: PTB, WikiText, LM1B, AG News, PubMed, arXiv.
* ``"jsonl"``            a JSON-lines file at a local path or an http(s) URL, one object per line, the key
                         ``text_field`` (LAMBADA: OpenAI's ``lambada_test.jsonl``, which MDLM/DUO download).
* ``"pydoc_topics"``     CPython's help topics (``pydoc_data.topics.topics``), sorted by key, one per document.
* ``"text_files"``       ``files``: local UTF-8 text files in the listed order, each one document (e.g.
                         Debian's /usr/share/common-licenses). A missing file is an error naming the corpus
                         and the path; bytes that are not UTF-8 are an error (never replaced).
* ``"stdlib_docstrings"`` the docstrings of the public top-level modules of Python's standard library (the
                         ``*.py`` files of ``sysconfig.get_paths()["stdlib"]`` whose names do not start with
                         an underscore, in sorted order, parsed with
                         ``ast``, never imported): one document per module, its module docstring and then the
                         docstrings of its classes and functions in source order (a nested definition right
                         after its parent's), joined by a blank line; modules without any are skipped.

Every kind takes ``detokenizer`` (null | wikitext | ptb | lm1b | lambada | scientific_papers), applied to
each document, and ``max_docs`` (keep the first N documents). Unlike the training corpora, blank documents
are KEPT: the original tokenizes every row (a blank WikiText line becomes a lone EOS), and the tokens,
hence the perplexity, follow from exactly these rows. A source that yields no document at all is an error
naming the corpus. pydoc topics and docstrings come from the running Python, whose version is recorded.
"""

from __future__ import annotations

import ast
import json
import os
import platform
import sysconfig
import urllib.request
from pathlib import Path
from typing import Any, Iterable, Iterator

from dlm.utils import atomic_path, sha256_file, write_json

from .corpora import pydoc_topic_docs, read_utf8
from .detokenizers import get_detokenizer

KINDS = ("hf", "jsonl", "pydoc_topics", "text_files", "stdlib_docstrings")


# ----------------------------------------------------------------------------------------------- hf
def hf_rows(name: str, source: dict) -> Iterator[str | None]:
    """The `text_field` of every row of a Hugging Face dataset split, in dataset order."""
    import datasets  # heavy import: only when this source is used

    for key in ("path", "split"):
        if not source.get(key):
            raise ValueError(f"zero-shot corpus {name!r} (kind hf): missing {key!r}")
    kwargs: dict[str, Any] = {k: source[k] for k in ("data_files", "cache_dir", "revision") if source.get(k) is not None}
    ds = datasets.load_dataset(source["path"], source.get("name"), split=source["split"], **kwargs)
    field = source.get("text_field") or "text"
    if field not in ds.column_names:
        raise ValueError(f"zero-shot corpus {name!r}: dataset {source['path']!r} split {source['split']!r} has no "
                         f"column {field!r} (columns: {ds.column_names}); set text_field")
    for batch in ds.select_columns([field]).iter(batch_size=1000):
        yield from batch[field]


# -------------------------------------------------------------------------------------------- jsonl
def _open_lines(location: str) -> Iterable[str]:
    if location.startswith(("http://", "https://")):
        with urllib.request.urlopen(location, timeout=60) as response:  # noqa: S310 (configured URL)
            for raw in response:
                yield raw.decode("utf-8")
    else:
        with open(location, encoding="utf-8") as f:
            yield from f


def jsonl_rows(name: str, source: dict) -> Iterator[str | None]:
    """The `text_field` of every object of a JSON-lines file or URL (blank lines skipped)."""
    location = source.get("path")
    if not location:
        raise ValueError(f"zero-shot corpus {name!r} (kind jsonl): missing 'path' (a local file or an http(s) URL)")
    field = source.get("text_field") or "text"
    for i, line in enumerate(_open_lines(location), 1):
        if not line.strip():
            continue
        obj = json.loads(line)
        if not isinstance(obj, dict) or field not in obj:
            raise ValueError(f"zero-shot corpus {name!r}: {location} line {i} has no key {field!r}; expected one "
                             f"JSON object per line with the text under text_field")
        yield obj[field]


# ----------------------------------------------------------------------------------------- text_files
def text_file_docs(name: str, source: dict) -> Iterator[str]:
    files = source.get("files")
    if not files or not isinstance(files, list):
        raise ValueError(f"zero-shot corpus {name!r} (kind text_files): 'files' must be a non-empty list of paths, "
                         f"got {files!r}")
    for path in files:
        if not os.path.isfile(path):
            raise FileNotFoundError(f"zero-shot corpus {name!r}: file {path} not found (listed in "
                                    f"zero_shot.corpora.{name}.files); install it or remove the corpus from the config")
    for path in files:
        yield read_utf8(path)


# ------------------------------------------------------------------------------------- stdlib_docstrings
def stdlib_dir() -> Path:
    return Path(sysconfig.get_paths()["stdlib"])


def module_docstrings(source_text: str) -> list[str]:
    """Docstrings of a module in source order: the module's, then each class / function's, a nested
    definition's right after its parent's (depth first)."""
    out: list[str] = []

    def visit(node: ast.AST) -> None:
        doc = ast.get_docstring(node, clean=True)
        if doc:
            out.append(doc)
        for child in getattr(node, "body", []):
            if isinstance(child, (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
                visit(child)

    visit(ast.parse(source_text))
    return out


def stdlib_docstring_docs(root: str | os.PathLike | None = None) -> Iterator[str]:
    """One document per public top-level standard-library module (sorted file names) that has docstrings."""
    root = Path(root) if root is not None else stdlib_dir()
    files = sorted(p for p in root.glob("*.py") if not p.name.startswith("_"))
    if not files:
        raise FileNotFoundError(f"no *.py files in the standard-library directory {root}")
    for path in files:
        docs = module_docstrings(read_utf8(path))
        if docs:
            yield "\n\n".join(docs)


# --------------------------------------------------------------------------------------------- main
def eval_documents(name: str, source: dict) -> Iterator[str]:
    """Every document of the source, detokenized, in order (None rows become empty documents)."""
    if not isinstance(source, dict) or source.get("kind") not in KINDS:
        got = source.get("kind") if isinstance(source, dict) else source
        raise ValueError(f"zero-shot corpus {name!r}: unknown source kind {got!r}; expected one of {list(KINDS)}")
    kind = source["kind"]
    if kind == "hf":
        rows: Iterable[str | None] = hf_rows(name, source)
    elif kind == "jsonl":
        rows = jsonl_rows(name, source)
    elif kind == "pydoc_topics":
        rows = pydoc_topic_docs()
    elif kind == "text_files":
        rows = text_file_docs(name, source)
    else:
        rows = stdlib_docstring_docs(source.get("root"))
    detok = get_detokenizer(source.get("detokenizer"))
    max_docs = source.get("max_docs")
    if max_docs is not None and (isinstance(max_docs, bool) or not isinstance(max_docs, int) or max_docs < 1):
        raise ValueError(f"zero-shot corpus {name!r}: max_docs must be null or an integer >= 1, got {max_docs!r}")
    for i, text in enumerate(rows):
        if max_docs is not None and i >= max_docs:
            return
        text = "" if text is None else text
        if not isinstance(text, str):
            raise ValueError(f"zero-shot corpus {name!r}: document {i} is a {type(text).__name__}, expected a string")
        yield detok(text) if detok is not None else text


def write_eval_corpus(name: str, source: dict, out_jsonl: str | os.PathLike, out_meta: str | os.PathLike) -> dict:
    """Write the documents of `source` to out_jsonl (atomically) and its meta.json; return the meta dict:
    the source, the number of documents (and of blank ones), characters, sha256 and bytes of the file,
    the Python version (the offline kinds depend on it) and, for text_files, each file's sha256."""
    n_docs = n_blank = n_chars = 0
    with atomic_path(out_jsonl) as tmp:
        with open(tmp, "w", encoding="utf-8", newline="\n") as f:
            for text in eval_documents(name, source):
                f.write(json.dumps({"text": text}, ensure_ascii=False))
                f.write("\n")
                n_docs += 1
                n_blank += not text.strip()
                n_chars += len(text)
        if n_docs == 0 or n_blank == n_docs:
            raise ValueError(f"zero-shot corpus {name!r} (kind {source['kind']}) produced "
                             f"{'no documents' if n_docs == 0 else 'only blank documents'} (output {out_jsonl}); "
                             f"expected at least one non-blank document")
    meta: dict[str, Any] = {"name": name, "source": source, "n_docs": n_docs, "n_blank_docs": n_blank,
                            "n_chars": n_chars, "file": os.fspath(out_jsonl), "sha256": sha256_file(out_jsonl),
                            "bytes": os.path.getsize(out_jsonl), "python": platform.python_version()}
    if source["kind"] == "text_files":
        meta["source_files"] = {p: sha256_file(p) for p in source["files"]}
    write_json(out_meta, meta)
    return meta


def pack_eval_corpus(name: str, jsonl: str, tokenizer_dir: str, mode: str, block_length: int, out_dir: str,
                     insert_eos: bool = True, min_blocks: int = 1) -> dict:
    """Pack a zero-shot corpus like the training data (`dlm.data.packing.pack_splits`, the one split
    "valid") and check its size: fewer than `min_blocks` blocks (an empty split: DUO's PTB at block 1024,
    where the per-batch chunking dropped it) is a ValueError naming the corpus, its documents and tokens.
    The packed size is recorded in the directory's meta.json (splits.valid: n_blocks, n_tokens, ...)."""
    from .packing import pack_splits

    if isinstance(min_blocks, bool) or not isinstance(min_blocks, int) or min_blocks < 1:
        raise ValueError(f"zero-shot corpus {name!r}: min_blocks must be an integer >= 1, got {min_blocks!r}")
    try:
        meta = pack_splits({"valid": jsonl}, tokenizer_dir, mode, block_length, out_dir, insert_eos=insert_eos)
    except ValueError as e:
        raise ValueError(f"zero-shot corpus {name!r} is empty after packing ({mode}, block_length {block_length}): "
                         f"{e}") from None
    stats = meta["splits"]["valid"]
    if stats["n_blocks"] < min_blocks:
        Path(out_dir, "meta.json").unlink()  # the directory must not look like a complete packed corpus
        raise ValueError(f"zero-shot corpus {name!r} has {stats['n_blocks']} blocks of block_length {block_length} "
                         f"after packing ({stats['n_docs']} documents); expected at least min_blocks = {min_blocks}")
    return meta
