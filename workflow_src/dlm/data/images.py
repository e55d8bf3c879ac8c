"""Images as token sequences (DUO's CIFAR-10, s-sahoo/duo dataloader.py): each pixel value is a token, the image
is the sequence of its C*H*W values in (c, h, w) order (channel-major, then rows), the vocabulary is the number of
grey levels (256 for CIFAR-10; a masked method adds [MASK] as id `levels`, as the original's tokenizer does
for MDLM), and the class label travels beside it.

Sources (`images.dataset.kind`):
  digits   scikit-learn's 8 x 8 handwritten digits (1797 real images, 17 grey levels 0..16, 10 classes; shipped
           inside scikit-learn, offline). Held-out split: a stratified `valid_fraction`, seeded.
  cifar10  the CIFAR-10 python archive (cifar-10-python.tar.gz or its extracted cifar-10-batches-py folder:
           data_batch_1..5 = train, 50,000 images in the archive's order, test_batch = valid, 10,000), as
           torchvision's CIFAR10 reads it. Its pickles store each image as 3072 bytes R, G, B planes of 32 x 32
           rows: already (c, h, w).

`write_image_data` writes a data directory like the text pipeline's packed one (`dlm.data.packing`): per split
`{split}.npy` (n, C*H*W) uint8, `{split}_labels.npy` (n,) int64, and meta.json last (with sha256 and sizes, so
`dlm.data.dataset.verify_packed` checks it); meta has modality "image", levels, channels, height, width,
num_classes, hflip. `ImageDataset` reads it for training; `FlipOrder` adds the original's random horizontal flips
to the training order, seeded and resumable.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import pickle
import tarfile
from pathlib import Path

import numpy as np
import torch

from dlm.data.dataset import TrainOrder, read_meta
from dlm.utils import atomic_path, sha256_file, write_json

log = logging.getLogger("dlm.data.images")

CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
CIFAR10_MD5 = "c58f30108f718f92721af3b95e74349a"  # of the archive at CIFAR10_URL (as torchvision checks it)
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
MASKED_ALGOS = ("mdlm",)  # methods whose vocabulary adds [MASK] after the grey levels
IMAGE_ALGOS = ("mdlm", "udlm")  # the methods of DUO's image experiments (MDLM and DUO base)


def load_digits(valid_fraction: float = 0.2, seed: int = 0) -> dict:
    """scikit-learn's digits as {"train": (images (n, 1, 8, 8) uint8 in 0..16, labels (n,)), "valid": ...}; the
    held-out split is stratified by class and drawn with `seed`."""
    from sklearn.datasets import load_digits as sk_digits
    from sklearn.model_selection import train_test_split

    if not 0.0 < valid_fraction < 1.0:
        raise ValueError(f"key 'images.dataset.valid_fraction': value {valid_fraction} is invalid: expected a "
                         f"fraction in (0, 1)")
    d = sk_digits()
    images = d.images.astype(np.uint8)[:, None]  # (1797, 1, 8, 8), values 0..16
    labels = d.target.astype(np.int64)
    idx_train, idx_valid = train_test_split(np.arange(len(labels)), test_size=valid_fraction, stratify=labels,
                                            random_state=seed)
    idx_train, idx_valid = np.sort(idx_train), np.sort(idx_valid)  # the package's order within each split
    return {"train": (images[idx_train], labels[idx_train]), "valid": (images[idx_valid], labels[idx_valid]),
            "levels": 17, "classes": [str(i) for i in range(10)], "source": "sklearn.datasets.load_digits"}


def _md5(path: str | os.PathLike) -> str:
    h = hashlib.md5()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _cifar_batches(path: Path) -> dict[str, bytes]:
    """{batch file name: pickle bytes} of the archive or the extracted folder."""
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    if path.is_dir():
        folder = path / "cifar-10-batches-py" if (path / "cifar-10-batches-py").is_dir() else path
        missing = [n for n in names if not (folder / n).is_file()]
        if missing:
            raise FileNotFoundError(f"{folder}: no {missing[0]} (expected the extracted cifar-10-batches-py folder of "
                                    f"{CIFAR10_URL})")
        return {n: (folder / n).read_bytes() for n in names}
    with tarfile.open(path, "r:gz") as tar:
        members = {Path(m.name).name: m for m in tar.getmembers() if m.isfile()}
        missing = [n for n in names if n not in members]
        if missing:
            raise ValueError(f"{path}: the archive has no {missing[0]} (expected cifar-10-python.tar.gz from "
                             f"{CIFAR10_URL})")
        return {n: tar.extractfile(members[n]).read() for n in names}


def load_cifar10(path: str | os.PathLike, md5: str | None = CIFAR10_MD5) -> dict:
    """CIFAR-10 from the python archive (or its extracted folder) as {"train": (images (50000, 3, 32, 32) uint8,
    labels), "valid": (the 10,000 test images, labels)}; `md5` (of the archive; None skips the check)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"key 'images.dataset.path': {os.fspath(path)!r} not found: download {CIFAR10_URL} "
                                f"(md5 {CIFAR10_MD5}) and give its path")
    if md5 and path.is_file() and _md5(path) != md5:
        raise ValueError(f"key 'images.dataset.path': {os.fspath(path)!r} has md5 {_md5(path)}, expected {md5} (the "
                         f"archive at {CIFAR10_URL}); a partial download?")
    raw = _cifar_batches(path)
    splits = {}
    for split, names in (("train", [f"data_batch_{i}" for i in range(1, 6)]), ("valid", ["test_batch"])):
        images, labels = [], []
        for name in names:
            batch = pickle.load(io.BytesIO(raw[name]), encoding="bytes")
            data = np.asarray(batch[b"data"], dtype=np.uint8)  # (n, 3072): R, G, B planes, rows of 32
            images.append(data.reshape(-1, 3, 32, 32))
            labels.append(np.asarray(batch[b"labels"], dtype=np.int64))
        splits[split] = (np.concatenate(images), np.concatenate(labels))
    return {**splits, "levels": 256, "classes": list(CIFAR10_CLASSES), "source": os.fspath(path)}


def load_images(spec: dict) -> dict:
    """The splits of `images.dataset` (see the module docstring)."""
    kind = spec.get("kind", "digits")
    if kind == "digits":
        return load_digits(float(spec.get("valid_fraction", 0.2)), int(spec.get("split_seed", 0)))
    if kind == "cifar10":
        if not spec.get("path"):
            raise ValueError(f"key 'images.dataset.path': kind cifar10 needs the archive's path (download {CIFAR10_URL})")
        return load_cifar10(spec["path"], spec.get("md5", CIFAR10_MD5))
    raise ValueError(f"key 'images.dataset.kind': value {kind!r} is invalid: expected 'digits' or 'cifar10'")


def write_image_data(spec: dict, out_dir: str | os.PathLike) -> dict:
    """Write the token arrays of `spec`'s splits and meta.json (last) into out_dir; return the meta dict."""
    data = load_images(spec)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "meta.json").unlink(missing_ok=True)  # a stale meta.json must never describe new arrays
    C, H, W = data["train"][0].shape[1:]
    meta = {"modality": "image", "kind": spec.get("kind", "digits"), "source": data["source"],
            "levels": data["levels"], "channels": int(C), "height": int(H), "width": int(W),
            "num_classes": len(data["classes"]), "classes": data["classes"], "block_length": int(C * H * W),
            "order": "c h w", "hflip": bool(spec.get("hflip", False)), "vocab_size": data["levels"],
            "special_ids": {}, "splits": {}, "files": {}}
    for split in ("train", "valid"):
        images, labels = data[split]
        if images.max() >= data["levels"]:
            raise ValueError(f"{data['source']}: {split} holds pixel value {images.max()} >= {data['levels']} levels")
        files = {"input_ids": f"{split}.npy", "labels": f"{split}_labels.npy"}
        for key, arr in (("input_ids", images.reshape(len(images), -1)), ("labels", labels)):  # (n, C*H*W) c,h,w
            with atomic_path(out / files[key]) as tmp:
                with open(tmp, "wb") as f:
                    np.save(f, np.ascontiguousarray(arr))
        meta["files"][split] = files
        meta["splits"][split] = {"num_images": int(len(images)),
                                 "class_counts": np.bincount(labels, minlength=len(data["classes"])).tolist(),
                                 "sha256": {k: sha256_file(out / f) for k, f in files.items()},
                                 "bytes": {k: (out / f).stat().st_size for k, f in files.items()}}
    write_json(out / "meta.json", meta)
    log.info("wrote %s: %s train / %s valid images of %dx%dx%d, %d levels, %d classes", out,
             meta["splits"]["train"]["num_images"], meta["splits"]["valid"]["num_images"], C, H, W, data["levels"],
             meta["num_classes"])
    return meta


def method_data_args(meta: dict, algo: str) -> dict:
    """A method's data-derived constructor arguments for image data: K = levels (+1 [MASK] for masked methods,
    id `levels`), L = C*H*W, and the image geometry the UNet needs."""
    if algo not in IMAGE_ALGOS:
        raise ValueError(f"algo {algo!r} does not train on images here; expected one of {list(IMAGE_ALGOS)}")
    levels = int(meta["levels"])
    return dict(vocab_size=levels + (algo in MASKED_ALGOS), block_length=int(meta["block_length"]),
                special_ids={"mask": levels}, tokenizer_dir="",
                image={k: int(meta[k]) for k in ("channels", "height", "width", "num_classes")})


def read_split(data_dir: str | os.PathLike, split: str) -> tuple[np.ndarray, np.ndarray]:
    """(images (n, C, H, W) uint8, labels (n,)) of a split."""
    meta = read_meta(data_dir)
    files = meta["files"][split]
    ids = np.load(Path(data_dir) / files["input_ids"], mmap_mode="r")
    labels = np.load(Path(data_dir) / files["labels"])
    return np.array(ids).reshape(-1, meta["channels"], meta["height"], meta["width"]), labels


def tokens_to_images(tokens: torch.Tensor | np.ndarray, meta: dict) -> np.ndarray:
    """(n, C*H*W) ids in (c, h, w) order -> (n, C, H, W) uint8 (the original's `batch_decode`); an id outside the
    grey levels (a [MASK] left over) is an error."""
    arr = np.asarray(tokens.cpu() if isinstance(tokens, torch.Tensor) else tokens)
    if arr.size and (arr.min() < 0 or arr.max() >= meta["levels"]):
        raise ValueError(f"token ids outside the {meta['levels']} grey levels (min {arr.min()}, max {arr.max()})")
    return arr.astype(np.uint8).reshape(-1, meta["channels"], meta["height"], meta["width"])


def hflip(images: np.ndarray) -> np.ndarray:
    """Mirror (n, C, H, W) images left-right."""
    return images[..., ::-1]


class ImageDataset(torch.utils.data.Dataset):
    """One split: item i = {"input_ids" (C*H*W,) long, "attention_mask" ones, "labels" () long}. Index i + n (n
    images) is image i mirrored left-right (the training order `FlipOrder` asks for those)."""

    def __init__(self, data_dir: str | os.PathLike, split: str):
        self.meta = read_meta(data_dir)
        if self.meta.get("modality") != "image":
            raise ValueError(f"{data_dir}: not an image data directory (meta.json modality "
                             f"{self.meta.get('modality')!r})")
        self.images, self.labels = read_split(data_dir, split)  # (n, C, H, W), (n,)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, idx: int) -> dict[str, torch.Tensor]:
        n = len(self.labels)
        if not 0 <= idx < 2 * n:
            raise IndexError(f"index {idx} out of range for {n} images (and their mirror images)")
        img = self.images[idx % n]
        if idx >= n:
            img = hflip(img)
        ids = torch.from_numpy(np.ascontiguousarray(img).reshape(-1).astype(np.int64))  # (C*H*W,) c,h,w
        return {"input_ids": ids, "attention_mask": torch.ones_like(ids),
                "labels": torch.tensor(int(self.labels[idx % n]))}


class FlipOrder(torch.utils.data.Sampler):
    """`TrainOrder` with the original's RandomHorizontalFlip: the k-th item this rank draws is mirrored (index
    + n) when bit k of a stream seeded by (seed, rank) is 1, p = 1/2. The bit depends only on the position in the
    stream, so a resumed run (TrainOrder's `start_batch`) flips exactly what an uninterrupted one would."""

    CHUNK = 1 << 14

    def __init__(self, order: TrainOrder, seed: int):
        self.order, self.seed = order, seed

    def flip_bits(self, rank: int, start: int, count: int) -> np.ndarray:
        """Bits of stream positions start .. start + count - 1 of `rank` (uint8)."""
        out, pos = [], start
        while pos < start + count:
            chunk = pos // self.CHUNK
            bits = np.random.default_rng([self.seed, rank, chunk]).integers(0, 2, self.CHUNK, dtype=np.uint8)
            lo = pos - chunk * self.CHUNK
            take = min(self.CHUNK - lo, start + count - pos)
            out.append(bits[lo:lo + take])
            pos += take
        return np.concatenate(out) if out else np.zeros(0, np.uint8)

    def __iter__(self):
        from dlm.resume import dist_rank_world

        rank, _ = dist_rank_world()
        n, pos = self.order.n, self.order.start_batch * self.order.batch_size
        bits = np.zeros(0, np.uint8)
        for k, idx in enumerate(self.order, start=pos):
            if k - pos >= len(bits):  # next chunk of bits
                pos, bits = k, self.flip_bits(rank, k, self.CHUNK)
            yield idx + n * int(bits[k - pos])
