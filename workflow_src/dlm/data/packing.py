"""Tokenize the JSONL corpora and pack them into fixed-length blocks stored as .npy arrays.

Output of `pack(...)` in out_dir:
  train.npy, valid.npy              (n_blocks, block_length) token ids, uint16 if K <= 65535 else uint32
  train_mask.npy, valid_mask.npy    (pad mode only) uint8 attention masks, 1 on real tokens
  meta.json                         written LAST: its presence means the arrays are complete; per split
                                    the sha256 and byte size of each array and of its source JSONL, and
                                    the tokenizer's fingerprint (`dlm.data.dataset.verify_packed` checks them)

Modes:
  "wrap" (OpenWebText style, MDLM/DUO): every document is tokenized without special tokens and followed
         by EOS (insert_eos=False: no EOS between documents, DUO's zero-shot `data.insert_valid_eos=False`);
         the whole split is concatenated in document order and cut into chunks of block_length-2
         tokens; each block is [BOS] + chunk + [EOS]; the remainder is dropped.
  "wrap_bos" (the original's packed LM1B, `data=lm1b-wrap`, DUO's train_lm1b_*_sentencepacking.sh): "wrap" with
         the BOS id also after every document and closing every block. The original takes both ids as
         `tokenizer.encode(token)[0]`, the first id of an encoding with special tokens, which for BERT is [CLS]
         for BOS *and* EOS: its packed LM1B blocks are [CLS] sentence [CLS] sentence ... [CLS]. (For GPT-2, BOS =
         EOS and the two modes coincide.)
  "pad"  (LM1B style): one document per row, [BOS] + tokens + [EOS], truncated to block_length (the last
         token of a truncated row is EOS), right-padded with the pad id (EOS when the tokenizer has none;
         the mask tells padding from real tokens).

The arrays are streamed to disk (bounded memory, so OpenWebText-sized splits are fine) and written
atomically; they load with np.load(path, mmap_mode="r"). Same inputs -> byte-identical files.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import sys
import tempfile
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from dlm.utils import sha256_file, write_json

from .corpora import count_documents, iter_documents
from .tokenizer import fingerprint, load_tokenizer, special_ids

MODES = ("wrap", "wrap_bos", "pad")
SPLITS = ("train", "valid")
BATCH_DOCS = 1000  # documents per tokenizer batch call


def token_dtype(vocab_size: int) -> np.dtype:
    """Little-endian uint16 when every id < vocab_size fits, else uint32."""
    return np.dtype("<u2") if vocab_size <= 65535 else np.dtype("<u4")


class _NpyStreamWriter:
    """Append rows of a 2-D array to a .npy file without holding it in memory; atomic on `commit`.

    A header for shape (0, width) is written first and rewritten with the final row count at the end.
    numpy pads the header so that the first axis can grow to 21 digits without changing its length,
    so the data offset stays put; the bytes equal those of np.save on the full array (checked in tests).
    """

    def __init__(self, path: Path, dtype: np.dtype, width: int):
        self.path, self.dtype, self.width, self.rows = Path(path), np.dtype(dtype), int(width), 0
        fd, tmp = tempfile.mkstemp(prefix=f".{self.path.name}.", suffix=".tmp", dir=self.path.parent)
        self.tmp = Path(tmp)
        self.f = os.fdopen(fd, "wb")
        self._write_header()
        self.offset = self.f.tell()

    def _write_header(self) -> None:
        np.lib.format.write_array_header_1_0(self.f, {
            "descr": np.lib.format.dtype_to_descr(self.dtype),
            "fortran_order": False,
            "shape": (self.rows, self.width),
        })

    def append(self, rows: np.ndarray) -> None:
        if rows.ndim != 2 or rows.shape[1] != self.width:
            raise ValueError(f"expected rows of width {self.width}, got shape {rows.shape}")
        self.f.write(np.ascontiguousarray(rows, dtype=self.dtype).tobytes())
        self.rows += rows.shape[0]

    def commit(self) -> None:
        self.f.seek(0)
        self._write_header()
        if self.f.tell() != self.offset:  # cannot happen with numpy's padded headers; never write garbage
            raise RuntimeError(f"npy header size changed while writing {self.path}")
        self.f.close()
        os.chmod(self.tmp, 0o644)  # mkstemp files are private; the data is an ordinary shared file
        os.replace(self.tmp, self.path)

    def discard(self) -> None:
        if not self.f.closed:
            self.f.close()
        if self.tmp.exists():
            self.tmp.unlink()


def _batches(path: str, desc: str) -> Iterator[list[str]]:
    """Lists of up to BATCH_DOCS documents from a JSONL corpus, with a tqdm bar on stderr."""
    from tqdm import tqdm

    total = count_documents(path)
    with tqdm(total=total, desc=desc, unit="doc", file=sys.stderr, mininterval=2.0) as bar:
        docs = iter_documents(path)
        while batch := list(itertools.islice(docs, BATCH_DOCS)):
            yield batch
            bar.update(len(batch))


def _encode(tok: Any, texts: list[str]) -> list[list[int]]:
    # one batched call to the fast (Rust) tokenizer; no special tokens, no truncation
    return tok(texts, add_special_tokens=False, return_attention_mask=False, verbose=False)["input_ids"]


def _pack_wrap(tok: Any, path: str, split: str, L: int, ids: dict, out: _NpyStreamWriter,
               insert_eos: bool = True, separator: str = "eos") -> dict:
    # The original MDLM/DUO code concatenates and chunks per datasets.map batch of 1000 documents (and per
    # worker shard), which drops a remainder per batch and makes the blocks depend on the batching / number
    # of processes (a small split such as PTB can lose most of its tokens at block 1024). Here the WHOLE
    # split is concatenated in document order (only the final remainder is dropped), so the bytes depend
    # on nothing but the inputs.
    bos, eos, chunk = ids["bos"], ids[separator], L - 2  # separator "bos": the original's [CLS] for BERT
    sep = (eos,) if insert_eos else ()
    carry = np.empty(0, dtype=np.int64)
    n_docs = n_stream = 0
    for texts in _batches(path, f"pack {split} (wrap)"):
        encoded = _encode(tok, texts)
        n = sum(len(e) + len(sep) for e in encoded)
        flat = np.fromiter(itertools.chain.from_iterable(itertools.chain(e, sep) for e in encoded),
                           dtype=np.int64, count=n)
        n_docs += len(texts)
        n_stream += n
        buf = np.concatenate([carry, flat]) if carry.size else flat
        n_blocks = buf.size // chunk
        if n_blocks:
            blocks = np.empty((n_blocks, L), dtype=out.dtype)
            blocks[:, 0] = bos
            blocks[:, 1:-1] = buf[:n_blocks * chunk].reshape(n_blocks, chunk)
            blocks[:, -1] = eos
            out.append(blocks)
        carry = buf[n_blocks * chunk:].copy()
    if out.rows == 0:
        raise ValueError(f"{split} split ({path}) has only {n_stream} tokens (documents"
                         f"{' + EOS' if insert_eos else ''}), fewer than the {chunk} needed for one block of "
                         f"block_length {L} in wrap mode")
    return {"n_blocks": out.rows, "n_tokens": out.rows * L, "n_docs": n_docs,
            "n_stream_tokens": n_stream, "n_dropped_tokens": int(carry.size), "insert_eos": insert_eos}


def _pack_pad(tok: Any, path: str, split: str, L: int, ids: dict, pad_id: int,
              out: _NpyStreamWriter, out_mask: _NpyStreamWriter) -> dict:
    bos, eos = ids["bos"], ids["eos"]
    n_docs = n_tokens = n_truncated = 0
    for texts in _batches(path, f"pack {split} (pad)"):
        encoded = _encode(tok, texts)
        rows = np.full((len(encoded), L), pad_id, dtype=out.dtype)
        mask = np.zeros((len(encoded), L), dtype=np.uint8)
        for r, e in enumerate(encoded):
            if len(e) + 2 > L:
                e = e[:L - 2]
                n_truncated += 1
            n = len(e) + 2
            rows[r, 0] = bos
            rows[r, 1:n - 1] = e
            rows[r, n - 1] = eos
            mask[r, :n] = 1
            n_tokens += n
        out.append(rows)
        out_mask.append(mask)
        n_docs += len(texts)
    if out.rows == 0:
        raise ValueError(f"{split} split ({path}) has no documents (0 tokens), so no block of block_length "
                         f"{L} in pad mode")
    return {"n_blocks": out.rows, "n_tokens": n_tokens, "n_docs": n_docs, "n_truncated": n_truncated}


def pack(train_jsonl: str, valid_jsonl: str, tokenizer_dir: str, mode: str, block_length: int,
         out_dir: str) -> dict:
    """Tokenize and pack both splits into out_dir (see the module docstring); return the meta dict."""
    return pack_splits({"train": train_jsonl, "valid": valid_jsonl}, tokenizer_dir, mode, block_length, out_dir)


def pack_splits(sources: dict[str, str], tokenizer_dir: str, mode: str, block_length: int, out_dir: str,
                insert_eos: bool = True) -> dict:
    """Tokenize and pack the JSONL corpus of each split name in `sources` ({split: path}) into out_dir, as
    `pack` does for train / valid (a zero-shot corpus has the one split "valid"); return the meta dict.
    `insert_eos` (wrap mode only) puts EOS after every document (MDLM; the default)."""
    if mode not in MODES:
        raise ValueError(f"unknown packing mode {mode!r}; expected one of {MODES}")
    if isinstance(block_length, bool) or not isinstance(block_length, (int, np.integer)) or block_length < 3:
        raise ValueError(f"block_length must be an integer >= 3 (BOS + at least one token + EOS), "
                         f"got {block_length!r}")
    L = int(block_length)
    tok = load_tokenizer(tokenizer_dir)
    sid = special_ids(tok)
    K = sid["vocab_size"]
    dtype = token_dtype(K)
    pad_fallback = mode == "pad" and sid["pad"] is None
    pad_id = sid["eos"] if pad_fallback else sid["pad"]

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "meta.json").unlink(missing_ok=True)  # a stale meta.json must never describe new arrays

    splits: dict[str, dict] = {}
    with contextlib.ExitStack() as stack:
        writers: list[_NpyStreamWriter] = []

        def writer(name: str, dt: np.dtype) -> _NpyStreamWriter:
            w = _NpyStreamWriter(out / name, dt, L)
            stack.callback(w.discard)  # removes the temp file unless committed (commit renames it)
            writers.append(w)
            return w

        for split, path in sources.items():
            if mode in ("wrap", "wrap_bos"):
                stats = _pack_wrap(tok, str(path), split, L, sid, writer(f"{split}.npy", dtype), bool(insert_eos),
                                   separator="bos" if mode == "wrap_bos" else "eos")
            else:
                stats = _pack_pad(tok, str(path), split, L, sid, pad_id, writer(f"{split}.npy", dtype),
                                  writer(f"{split}_mask.npy", np.dtype(np.uint8)))
            splits[split] = {**stats, "source": str(path)}
        for w in writers:  # both splits packed without error: only now do the arrays replace old ones
            w.commit()
    if mode != "pad":  # masks left by an earlier pad-mode run in the same directory would be misleading
        for split in sources:
            (out / f"{split}_mask.npy").unlink(missing_ok=True)
    files = {split: {"input_ids": f"{split}.npy", "attention_mask": f"{split}_mask.npy" if mode == "pad" else None}
             for split in sources}
    for split in sources:  # content hashes and sizes: a packed split that drifts from them is an error
        splits[split]["source_sha256"] = sha256_file(splits[split]["source"])
        splits[split]["source_bytes"] = os.path.getsize(splits[split]["source"])
        splits[split]["sha256"] = {k: sha256_file(out / f) for k, f in files[split].items() if f}
        splits[split]["bytes"] = {k: os.path.getsize(out / f) for k, f in files[split].items() if f}

    meta = {
        "format_version": 1,
        "vocab_size": K,
        "block_length": L,
        "mode": mode,
        "dtype": dtype.name,
        "special_ids": {"bos": sid["bos"], "eos": sid["eos"], "pad": pad_id if mode == "pad" else sid["pad"],
                        "mask": sid["mask"]},
        "pad_is_eos_fallback": pad_fallback,
        "tokenizer_fingerprint": fingerprint(tokenizer_dir),
        "tokenizer_dir": str(tokenizer_dir),
        "files": files,
        "splits": splits,
    }
    write_json(out / "meta.json", meta)
    return meta
