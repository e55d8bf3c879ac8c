"""Generative perplexity of model samples under a judge LM (MDLM / ReMDM / DUO conventions).

The protocol, as in the reference implementations:

1. Retokenize the decoded sample texts with the *judge's* tokenizer: no added special tokens,
   right truncation at ``max_length`` (default: the judge's context size), right padding to the
   longest sequence with pad = EOS, plus an attention mask. ``whole=True`` does not truncate: samples
   longer than a block (semi-autoregressive, L + strides x stride tokens) are scored over their whole
   length in chunks of the judge's context, as MDLM's ``compute_generative_perplexity`` does with
   ``max_length`` = the samples' length (the rule sets it for `mdlm_semi_ar` files, setting
   ``evaluation.gen_ppl_semi_ar``; ``truncate`` keeps the first ``max_length`` tokens as for every file).
2. Score in batches with the judge (``torch.no_grad``, fp32).  If ``max_length`` exceeds the judge's
   context, each row is cut into consecutive chunks of the judge's context size that are scored
   independently (as the reference code does with ``torch.split(..., eval_context_size)``).
3. Per chunk, ``nll_j = CE(logits[j-1], token_j)`` for ``j >= 1`` (the first token is context only).
4. Counted targets (``count_padding_eos=True``, the papers' code and our default):
   ``w_j = (token_j != EOS) | (cumsum_{i<=j}[token_i == EOS] == 1)`` for ``j >= 1``, i.e. every
   non-EOS token plus the first EOS of the row, where that first EOS may be the first *padding* EOS
   of a shorter row that has none of its own (the reference code does not AND the count with the
   attention mask). ``count_padding_eos=False`` (setting ``evaluation.gen_ppl_count_padding_eos``)
   ANDs it with the attention mask, so padding is never counted. Repeated EOS are never counted.
   EOS is the judge's EOS (the reference code uses the generating model's EOS id, which is the same
   token, 50256, for the GPT-2 tokenizer used throughout).
5. ``gen_ppl = exp(sum_j w_j nll_j / sum_j w_j)`` over all tokens of all samples (token-weighted,
   not a mean of per-sample perplexities).
"""

from __future__ import annotations

import json
import logging
import math
import os
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from dlm.evaluation.entropy import mean_entropy, unigram_entropy
from dlm.utils import provenance, read_jsonl, sha256_file, write_json

log = logging.getLogger("dlm.gen_ppl")


def retokenize(texts: list[str], tokenizer, eos_id: int, max_length: int
               ) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Judge-tokenize `texts` -> (input_ids (N, T), attention_mask (N, T), number truncated).

    No special tokens are added; rows longer than `max_length` keep their first `max_length`
    tokens; rows are right-padded with `eos_id` to the longest row.  Special-token strings that
    occur in the text (e.g. ``<|endoftext|>``) map to their ids, as with a plain tokenizer call.
    """
    if max_length < 1:
        raise ValueError(f"max_length must be >= 1, got {max_length}")
    encoded = tokenizer(list(texts), add_special_tokens=False, return_attention_mask=False,
                        return_token_type_ids=False)["input_ids"]
    num_truncated = sum(len(ids) > max_length for ids in encoded)
    rows = [list(ids[:max_length]) for ids in encoded]
    width = max(1, max(len(r) for r in rows))
    input_ids = torch.full((len(rows), width), int(eos_id), dtype=torch.long)
    attention_mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        if r:
            input_ids[i, :len(r)] = torch.tensor(r, dtype=torch.long)
            attention_mask[i, :len(r)] = 1
    return input_ids, attention_mask, num_truncated


def target_weights(input_ids: torch.Tensor, attention_mask: torch.Tensor, eos_id: int,
                   count_padding_eos: bool = True) -> torch.Tensor:
    """Boolean (B, T-1) mask of counted targets ``token_j`` for ``j = 1..T-1`` (see module doc, step 4)."""
    is_eos = input_ids == eos_id  # (B, T)
    first_eos = is_eos.long().cumsum(dim=-1) == 1
    counted = ~is_eos | first_eos
    if not count_padding_eos:
        counted = counted & attention_mask.bool()
    return counted[:, 1:]


@torch.no_grad()
def generative_perplexity(texts: list[str], judge, batch_size: int,
                          max_length: int | None = None, count_padding_eos: bool = True,
                          whole: bool = False) -> dict[str, Any]:
    """Token-weighted generative perplexity of `texts` under `judge` (see module docstring).

    Returns ``{"gen_ppl", "nll" (mean nats per counted token), "num_tokens" (counted targets),
    "num_samples", "num_truncated", "judge", "max_length", "batch_size", "count_padding_eos", "whole",
    "sample_nll", "sample_tokens"}``; with `whole` nothing is truncated and ``max_length`` is the longest
    judge-tokenized sample; the last two are per text (summed nats and counted targets), the units of the claims
    table's intervals (`dlm.report.claims`).
    """
    texts = list(texts)
    if not texts:
        raise ValueError("generative_perplexity: no texts to score")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    context = int(judge.max_length)
    max_length = context if max_length is None else int(max_length)
    if whole:  # MDLM: max_length = the samples' own length, scored in chunks of the judge's context
        lengths = [len(r) for r in judge.tokenizer(list(texts), add_special_tokens=False)["input_ids"]]
        max_length = max(1, *lengths)
    eos_id = int(judge.eos_id)
    input_ids, attention_mask, num_truncated = retokenize(texts, judge.tokenizer, eos_id, max_length)

    total_nll = 0.0  # accumulated in float64 (Python floats); per-token losses are fp32
    total_count = 0
    row_nll = torch.zeros(input_ids.shape[0], dtype=torch.float64)  # (N,) per text, for intervals
    row_count = torch.zeros(input_ids.shape[0], dtype=torch.long)  # (N,)
    # NOTE deviation: the reference code uses num_batches = N // batch_size and silently drops a
    # partial last batch; here every sample is scored, so the result does not depend on batch_size.
    for start in range(0, input_ids.shape[0], batch_size):
        ids_b = input_ids[start:start + batch_size]
        mask_b = attention_mask[start:start + batch_size]
        for ids, mask in zip(torch.split(ids_b, context, dim=-1), torch.split(mask_b, context, dim=-1)):
            if ids.shape[1] < 2:
                continue
            weights = target_weights(ids, mask, eos_id, count_padding_eos)  # (b, T - 1)
            if not bool(weights.any()):
                continue  # nothing counted in this chunk
            logits = judge.logits(ids, mask).float()
            targets = ids[:, 1:].to(logits.device)
            nll = F.cross_entropy(logits[:, :-1].transpose(1, 2), targets, reduction="none")
            weights = weights.to(logits.device)
            weighted = nll.double() * weights.double()  # (b, T - 1)
            total_nll += float(weighted.sum())
            total_count += int(weights.sum())
            row_nll[start:start + ids.shape[0]] += weighted.sum(-1).cpu()
            row_count[start:start + ids.shape[0]] += weights.sum(-1).cpu()
    if total_count == 0:
        raise ValueError("generative_perplexity: no counted target tokens (every text is empty, a "
                         "single token, or only repeated EOS)")
    mean_nll = total_nll / total_count
    return {"gen_ppl": math.exp(mean_nll), "nll": mean_nll, "num_tokens": total_count,
            "num_samples": len(texts), "num_truncated": int(num_truncated),
            "judge": str(judge.name), "max_length": max_length, "batch_size": int(batch_size),
            "count_padding_eos": bool(count_padding_eos), "whole": bool(whole), "sample_nll": row_nll.tolist(),
            "sample_tokens": row_count.tolist()}


def read_texts(path: str | os.PathLike) -> tuple[list[str], list[list[int]] | None]:
    """Read sample texts from `path`.

    Each non-blank line is either a JSON object with at least ``"text"`` (and optionally
    ``"tokens"``: the generating model's token ids), or a JSON string.  Returns ``(texts, tokens)``
    where ``tokens`` is a list of id lists when every line has ``"tokens"``, else ``None``.
    """
    path = Path(path)
    texts: list[str] = []
    tokens: list[list[int]] = []
    n_with_tokens = 0
    for lineno, obj in read_jsonl(path):
        if isinstance(obj, str):
            texts.append(obj)
        elif isinstance(obj, dict):
            if not isinstance(obj.get("text"), str):
                raise ValueError(f"{path}:{lineno}: sample object without a string 'text' field")
            texts.append(obj["text"])
            if obj.get("tokens") is not None:
                tokens.append([int(t) for t in obj["tokens"]])
                n_with_tokens += 1
        else:
            raise ValueError(f"{path}:{lineno}: expected a JSON object or string, "
                             f"got {type(obj).__name__}")
    if not texts:
        raise ValueError(f"{path}: no samples")
    if n_with_tokens and n_with_tokens != len(texts):
        raise ValueError(f"{path}: only {n_with_tokens} of {len(texts)} samples have 'tokens'")
    return texts, (tokens if n_with_tokens else None)


def _score_or_note(texts, judge, batch_size, max_length, count_padding_eos=True, whole=False) -> dict[str, Any]:
    """`generative_perplexity`, or for samples with nothing to score (e.g. a degenerate model that emits
    only EOS) gen_ppl = None with the reason in `gen_ppl_note`: the job records it, tables show a dash."""
    try:
        return generative_perplexity(texts, judge, batch_size=batch_size, max_length=max_length,
                                     count_padding_eos=count_padding_eos, whole=whole)
    except ValueError as e:
        if "no counted target tokens" not in str(e):
            raise
        log.warning("%s", e)
        return {"gen_ppl": None, "nll": None, "num_tokens": 0, "num_samples": len(texts), "gen_ppl_note": str(e),
                "max_length": int(judge.max_length) if max_length is None else int(max_length), "judge": str(judge.name), "batch_size": int(batch_size)}


def _before_self_correction(path) -> tuple[list[str], list[list[int]]] | None:
    """(texts, token ids) of the samples before self-correction, when the file records them."""
    texts, tokens = [], []
    with open(path) as f:
        for line in f:
            obj = json.loads(line) if line.strip() else None
            if isinstance(obj, dict) and "text_before" in obj:
                texts.append(obj["text_before"])
                tokens.append(obj["tokens_before"])
    return (texts, tokens) if texts else None


def run_gen_ppl(texts_path: str | os.PathLike, judge, max_length: int | None, batch_size: int,
                out_path: str | os.PathLike, device: str = "cpu",
                extra: dict[str, Any] | None = None, count_padding_eos: bool = True,
                whole: bool = False) -> dict[str, Any]:
    """Score the samples in `texts_path` and write the metric JSON to `out_path` (atomically).

    `judge` is a name or path for `load_judge` (or an already-loaded judge object).  The output
    holds the `generative_perplexity` fields, ``"entropy"`` (mean unigram entropy in nats of the
    generating model's own token ids; ``null`` when the file has no ``"tokens"``), ``"texts"``,
    ``"device"``, ``"settings"`` and ``"provenance"``.  `extra` (e.g. run / sampler metadata such
    as ``run``, ``algo``, ``sampler``, ``steps``, ``seed``) is copied in first, so keys computed
    here take precedence.  Returns the written dict.
    """
    from dlm.evaluation.judge import load_judge

    texts, token_lists = read_texts(texts_path)
    judge_obj = judge if hasattr(judge, "logits") else load_judge(judge, device=device)
    result = _score_or_note(texts, judge_obj, batch_size, max_length, count_padding_eos, whole)
    entropy = mean_entropy(token_lists) if token_lists is not None else None
    if token_lists is not None:
        result["sample_entropy"] = [unigram_entropy(t) for t in token_lists]
    settings = {"texts": str(texts_path), "texts_sha256": sha256_file(texts_path),
                "judge": str(judge_obj.name), "max_length": result["max_length"],
                "batch_size": int(batch_size), "count_padding_eos": bool(count_padding_eos), "whole": bool(whole)}
    out: dict[str, Any] = dict(extra or {})
    out.update(result)
    out.update({"entropy": entropy, "texts": str(texts_path), "device": str(device),
                "settings": settings, "provenance": provenance(settings)})
    before = _before_self_correction(texts_path)
    if before is not None:  # self-corrected samples: the same judge on the sampler's output before correction
        res_b = _score_or_note(before[0], judge_obj, batch_size, max_length, count_padding_eos, whole)
        out.update({"gen_ppl_before": res_b["gen_ppl"], "entropy_before": mean_entropy(before[1]),
                    "sample_nll_before": res_b.get("sample_nll"), "sample_tokens_before": res_b.get("sample_tokens")})
    write_json(out_path, out)
    return out
