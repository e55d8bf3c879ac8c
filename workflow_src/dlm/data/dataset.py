"""Read the packed arrays written by `dlm.data.packing.pack` (memory-mapped, so cheap in every worker)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from dlm.utils import read_json, sha256_file

_ROWS_PER_CHUNK = 1 << 14  # rows per step when scanning a whole split


def read_meta(data_dir: str | os.PathLike) -> dict:
    """The meta.json of a packed data directory (FileNotFoundError if packing did not finish)."""
    path = Path(data_dir) / "meta.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: {data_dir} is not a (completely) packed data directory")
    return read_json(path)


def _split_paths(data_dir: Path, meta: dict, split: str) -> tuple[Path, Path | None]:
    if split not in meta["splits"]:
        raise KeyError(f"split {split!r} not in {data_dir} (splits: {sorted(meta['splits'])})")
    files = meta.get("files", {}).get(split) or {}
    ids = data_dir / files.get("input_ids", f"{split}.npy")
    if meta["mode"] == "pad":
        return ids, data_dir / (files.get("attention_mask") or f"{split}_mask.npy")
    return ids, None


def _check_bytes(data_dir: Path, split: str, path: Path, want: int | None) -> None:
    """The cheap drift check: the file's size against the one `pack` recorded (None: not recorded)."""
    if want is not None and path.stat().st_size != want:
        raise ValueError(f"packed split {split!r} of {data_dir}: {path} has {path.stat().st_size} bytes, meta.json "
                         f"recorded {want}; the data changed after packing (truncated or replaced: delete {data_dir} "
                         f"and rerun the `pack` rule)")


def verify_packed(data_dir: str | os.PathLike, splits: tuple[str, ...] = ("train", "valid")) -> None:
    """Check each split's arrays against the sha256 and byte size that `pack` recorded in meta.json; a file
    that drifted (edited, truncated, replaced) is an error naming the split, the file and both hashes. Jobs
    that read a whole split (training, validation) call it once at their start; directories packed before
    hashes were recorded pass."""
    data_dir = Path(data_dir)
    meta = read_meta(data_dir)
    for split in splits:
        info = meta["splits"].get(split, {})
        for key, name in (meta.get("files", {}).get(split) or {}).items():
            want = (info.get("sha256") or {}).get(key)
            if not name or want is None:
                continue
            path = data_dir / name
            if not path.is_file():
                raise FileNotFoundError(f"packed split {split!r} of {data_dir}: {path} is missing (meta.json lists "
                                        f"it); rerun the `pack` rule")
            _check_bytes(data_dir, split, path, (info.get("bytes") or {}).get(key))
            got = sha256_file(path)
            if got != want:
                raise ValueError(f"packed split {split!r} of {data_dir}: {path} has sha256 {got}, meta.json recorded "
                                 f"{want}; the data changed after packing (delete {data_dir} and rerun the `pack` rule)")


class PackedDataset(torch.utils.data.Dataset):
    """Blocks of one split: item i = {"input_ids": LongTensor(L), "attention_mask": LongTensor(L)}.

    The arrays are opened lazily with np.load(mmap_mode="r") and are not pickled, so the dataset is
    cheap to send to DataLoader workers (fork or spawn). In wrap mode the mask is all ones.
    """

    def __init__(self, data_dir: str | os.PathLike, split: str):
        self.data_dir = Path(data_dir)
        self.split = split
        self.meta = read_meta(self.data_dir)
        self.block_length = int(self.meta["block_length"])
        self.vocab_size = int(self.meta["vocab_size"])
        self._ids_path, self._mask_path = _split_paths(self.data_dir, self.meta, split)
        _check_bytes(self.data_dir, split, self._ids_path,  # cheap check at every open
                     (self.meta["splits"][split].get("bytes") or {}).get("input_ids"))
        self._ids = self._mask = None
        self._open()
        if self._ids.ndim != 2 or self._ids.shape[1] != self.block_length:
            raise ValueError(f"{self._ids_path}: shape {self._ids.shape} does not match block_length "
                             f"{self.block_length}")
        self._len = int(self._ids.shape[0])

    def _open(self) -> None:
        if self._ids is None:
            self._ids = np.load(self._ids_path, mmap_mode="r", allow_pickle=False)
            if self._mask_path is not None:
                self._mask = np.load(self._mask_path, mmap_mode="r", allow_pickle=False)

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_ids"] = state["_mask"] = None
        return state

    def __len__(self) -> int:
        return self._len

    def __getitem__(self, idx: int) -> dict[str, torch.Tensor]:
        self._open()
        if idx < 0:
            idx += self._len
        if not 0 <= idx < self._len:
            raise IndexError(f"index {idx} out of range for {self._len} blocks")
        ids = torch.from_numpy(np.asarray(self._ids[idx], dtype=np.int64))
        if self._mask is None:
            mask = torch.ones(self.block_length, dtype=torch.long)
        else:
            mask = torch.from_numpy(np.asarray(self._mask[idx], dtype=np.int64))
        return {"input_ids": ids, "attention_mask": mask}


def unigram_counts(data_dir: str | os.PathLike, split: str = "train") -> np.ndarray:
    """float64 counts (length K = vocab_size) of the token ids under the attention mask of a split."""
    data_dir = Path(data_dir)
    meta = read_meta(data_dir)
    K = int(meta["vocab_size"])
    ids_path, mask_path = _split_paths(data_dir, meta, split)
    ids = np.load(ids_path, mmap_mode="r", allow_pickle=False)
    mask = np.load(mask_path, mmap_mode="r", allow_pickle=False) if mask_path is not None else None
    counts = np.zeros(K, dtype=np.int64)
    for start in range(0, ids.shape[0], _ROWS_PER_CHUNK):
        block = np.asarray(ids[start:start + _ROWS_PER_CHUNK])
        if mask is not None:
            block = block[np.asarray(mask[start:start + _ROWS_PER_CHUNK]).astype(bool)]
        c = np.bincount(block.ravel(), minlength=K)
        if c.size > K:
            raise ValueError(f"{ids_path} holds token id {c.size - 1} >= vocab_size {K}")
        counts += c
    return counts.astype(np.float64)


class TrainOrder(torch.utils.data.Sampler):
    """The training order as one endless stream over epochs that can restart at any batch.

    Epoch e is a permutation of the n blocks from a generator seeded with `seed`, drawn exactly as
    `DataLoader(shuffle=True, drop_last=True, generator=torch.Generator().manual_seed(seed))` draws
    them (per epoch one int64 for the loader's base seed, then `randperm` twice, the second for
    RandomSampler's empty remainder), so a single-process run sees
    the same batches as with a plain shuffled loader. Under DDP, rank r takes positions r, r + W, ... of
    each permutation cut to a multiple of batch_size x W: the ranks see disjoint blocks and equally many
    batches. `start_batch` skips that many of this rank's batches: a resumed run continues mid-epoch
    with the exact order of a run that was never interrupted (`dlm.train` sets it to
    global_step x accumulate from the checkpoint). Rank and world size are read when iteration starts,
    after the DDP process group exists.
    """

    def __init__(self, n: int, batch_size: int, seed: int, start_batch: int = 0):
        if n < batch_size:
            raise ValueError(f"{n} training blocks are fewer than batch_size={batch_size}")
        self.n, self.batch_size, self.seed, self.start_batch = n, batch_size, seed, start_batch

    def __iter__(self):
        from dlm.resume import dist_rank_world  # here: reading data (sampling, evaluation) needs no Lightning

        rank, world = dist_rank_world()
        per_rank = (self.n // (self.batch_size * world)) * self.batch_size  # samples per rank per epoch
        if per_rank == 0:
            raise ValueError(f"{self.n} training blocks cannot fill one batch of {self.batch_size} on each of "
                             f"{world} ranks")
        g = torch.Generator().manual_seed(self.seed)
        skip = self.start_batch * self.batch_size
        while True:
            torch.empty((), dtype=torch.int64).random_(generator=g)  # the plain loader's base-seed draw
            perm = torch.randperm(self.n, generator=g)  # (n,)
            if skip >= per_rank:  # a whole epoch before the resume point
                skip -= per_rank
                continue
            yield from perm[: per_rank * world][rank::world][skip:].tolist()
            skip = 0
