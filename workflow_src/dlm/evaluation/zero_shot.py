"""Zero-shot perplexity (MDLM Table 3, DUO Table 2): one checkpoint scored on several corpora it was not
trained on, each tokenized with the pipeline's tokenizer and packed like the training data.

The bound is exactly the validation one (`dlm.evaluation.val_ppl.monte_carlo_bound`: exp of the token-mean
NELBO, seeded Monte-Carlo passes, the standard error of the bound); only the data differ. The model is
loaded once and every corpus is evaluated in the same process, at most `max_batches` batches per corpus
(None: the whole corpus). The settings, the packed size of every corpus and the provenance go into the
one metric JSON per run.
"""

from __future__ import annotations

import math

import torch

from dlm.algos import load_module
from dlm.data.dataset import PackedDataset, read_meta, verify_packed
from dlm.utils import provenance, write_json

from .val_ppl import check_data_fits, monte_carlo_bound

SPLIT = "valid"  # the one split of a packed zero-shot corpus (dlm.data.eval_corpora.pack_eval_corpus)


@torch.no_grad()
def evaluate_zero_shot(ckpt: str, corpora: dict[str, str], batch_size: int, seed: int, out: str, run: str = "",
                       max_batches: int | None = None, passes: int = 1, device: str = "auto",
                       threads: int | None = None) -> dict:
    """Score the checkpoint on every packed corpus of `corpora` ({name: packed dir}), in the given order.

    Writes {"run", "algo", "params", "train_steps", "insert_eos", "corpora": {name: {"nll", "nll_se", "ppl",
    "ppl_se", "se_method", "pass_nll", "num_tokens", "blocks", "blocks_evaluated", "packed"}}, "settings",
    "provenance"} to `out` and returns it; "packed" is the corpus's packing record (documents, tokens,
    blocks, dropped remainder, insert_eos); "insert_eos" whether the corpora had an EOS between documents
    (null for pad packing or corpora packed both ways).
    """
    if not corpora:
        raise ValueError("evaluate_zero_shot: no zero-shot corpora given (zero_shot.corpora is empty)")
    if threads:
        torch.set_num_threads(threads)
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    module = load_module(ckpt, map_location=device)
    results = {}
    for name, data_dir in corpora.items():
        verify_packed(data_dir, (SPLIT,))
        data = PackedDataset(data_dir, SPLIT)
        check_data_fits(module, data, ckpt)
        bound = monte_carlo_bound(module, data, batch_size, seed, passes, max_batches, device,
                                  desc=f"zero-shot {run} {name}")
        nll, se = bound["nll"], bound["se"]
        n_batches = math.ceil(len(data) / batch_size)
        results[name] = {"nll": nll, "nll_se": se, "ppl": math.exp(nll), "ppl_se": math.exp(nll) * se,
                         "se_method": bound["se_method"], "pass_nll": bound["pass_nll"].tolist(),
                         "num_tokens": bound["num_tokens"], "blocks": len(data),
                         "blocks_evaluated": min(len(data), batch_size * min(n_batches, max_batches or n_batches)),
                         "packed": read_meta(data_dir)["splits"][SPLIT] | {"data_dir": data_dir}}
    settings = {"ckpt": ckpt, "corpora": corpora, "split": SPLIT, "batch_size": batch_size, "seed": seed,
                "max_batches": max_batches, "passes": passes}
    eos = {r["packed"].get("insert_eos") for r in results.values()}  # wrap packing records it; pad does not
    result = {"run": run, "algo": module.algo, "params": module.num_params(), "train_steps": module.global_step,
              "insert_eos": eos.pop() if len(eos) == 1 else None, "corpora": results, "settings": settings,
              "provenance": provenance(settings)}
    write_json(out, result)
    return result
