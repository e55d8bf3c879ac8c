"""Downstream multiple-choice accuracy through lm-eval-harness (DUO Ch. II's downstream table; GIDD's), with
the protocol of s-sahoo/duo `discrete_diffusion_harness.py`.

Our checkpoints register as the lm-eval model ``"dlm"`` (`DLMHarness`, a subclass of lm_eval.api.model.LM).
lm-eval builds each task's requests (context, continuation), picks per question the choice of highest
log-likelihood and computes accuracy and its standard error; this module only scores a continuation:

* Tokens (`encode_request`): prefix = [BOS] + tokens(context), target = tokens(continuation) + [EOS], each
  tokenized without special tokens (lm-eval puts the delimiter space at the start of the continuation).
* Diffusion models: ll = -(token-mean NELBO of prefix + target), prompt and continuation noised together and
  every position counted (the original's loss_avg_mode="full"): `num_mc_samples` draws of (t, z_t) of the
  one sequence through `dlm.evaluation.val_ppl.monte_carlo_bound` and the method's own per-token loss
  (`Method.nelbo_terms`, t stratified within each batch of draws as in training), i.e. the mean over draws
  of each draw's mean over the L positions. The draws of batch i come from a generator seeded with
  (seed, 0, i), the same for every request: common random numbers across the choices of a question. Each ll
  carries its Monte-Carlo standard error, std over draws / sqrt(num_mc_samples) (an upper estimate, as t is
  stratified).
* AR: ll = -(mean NLL of the target tokens given the prefix), exact, from the same per-token loss with only
  the target positions counted (the original's `eval_suffix_nll_ar`).
* A request longer than the model's block length: ``overlong="zero"`` scores it 0.0 as the original does
  (which then beats every negative score of the question), ``"truncate"`` drops the oldest context tokens
  after BOS (lm-eval's own models cut the context on the left); either way the metric JSON counts them.
* is_greedy (read only by greedy-match metrics such as lambada's acc, never by multiple choice): exact for
  AR; False for diffusion models, whose single-pass greedy match of the original is not implemented.
"""

from __future__ import annotations

import logging
import math
import os
from typing import Any

import numpy as np
import torch
from lm_eval.api.model import LM
from lm_eval.api.registry import register_model
from tqdm import tqdm

from dlm.algos import load_module
from dlm.evaluation.val_ppl import monte_carlo_bound
from dlm.utils import provenance, write_json, write_text

log = logging.getLogger("dlm.downstream")

LM_NAME = "dlm"
OVERLONG = ("zero", "truncate")


def encode_request(tok, bos: int, eos: int, context: str, continuation: str) -> tuple[list[int], list[int]]:
    """(prefix, target) token ids of one request: [BOS] + context, continuation + [EOS] (the original's)."""
    prefix = tok(context, add_special_tokens=False)["input_ids"] if context else []
    target = tok(continuation, add_special_tokens=False)["input_ids"] if continuation else []
    return [bos] + list(prefix), list(target) + [eos]


class RepeatedSequence(torch.utils.data.Dataset):
    """One sequence `n` times, as rows {"input_ids", "attention_mask"} (L,): the Monte-Carlo draws of its
    bound, each row getting its own t and noise in `monte_carlo_bound`."""

    def __init__(self, ids: torch.Tensor, counted: torch.Tensor, n: int):
        self.ids, self.counted, self.n = ids, counted, n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> dict:
        return {"input_ids": self.ids, "attention_mask": self.counted}


@torch.no_grad()
def continuation_loglikelihood(module, prefix: list[int], target: list[int], num_mc_samples: int,
                               batch_size: int, seed: int) -> dict:
    """{"ll", "se", "tokens", "greedy", "draws"} of `target` after `prefix` (module docstring): exact for AR
    (se 0), the seeded Monte-Carlo -NELBO per token of prefix + target for diffusion models; "draws": each
    draw's value (num_mc_samples,), whose mean is "ll" (for paired comparisons between choices)."""
    ids = torch.tensor(prefix + target, dtype=torch.long, device=module.device)  # (L,)
    if module.causal:  # AR: only the continuation's tokens are scored
        counted = torch.zeros_like(ids)
        counted[len(prefix):] = 1
        draws = 1
    else:  # diffusion: the whole sequence is noised and every position counts
        counted = torch.ones_like(ids)
        draws = num_mc_samples
    data = RepeatedSequence(ids, counted, draws)
    bound = monte_carlo_bound(module, data, min(batch_size, draws), seed, passes=1, device=module.device,
                              desc="downstream", progress=False)
    draws_ll = -(bound["seq_nll"] / bound["seq_tokens"]).astype(np.float32)  # (draws,) each draw's -NELBO
    out = {"ll": -bound["nll"], "se": 0.0 if module.causal else bound["se"], "tokens": len(ids), "greedy": False,
           "draws": draws_ll}
    if module.causal:
        logits = module.ar_logits(ids[None, :-1])[0, len(prefix) - 1:]  # (len(target), K): predicts the target
        out["greedy"] = bool((logits.argmax(-1) == ids[len(prefix):]).all())
    return out


@register_model(LM_NAME)
class DLMHarness(LM):
    """A dlm checkpoint as an lm-eval model: `lm_eval --model dlm --model_args checkpoint=PATH,num_mc_samples=N`
    (with this module imported, e.g. `python -m dlm.evaluation.downstream ...`), or `evaluate_downstream`.

    checkpoint: a .ckpt of dlm train / distill / import (EMA weights); num_mc_samples: draws per diffusion
    log-likelihood (the original's default 1024); batch_size: draws per forward pass; seed: of the draws;
    device: "auto" | "cpu" | "cuda[:i]"; overlong: "zero" | "truncate" (module docstring)."""

    def __init__(self, checkpoint: str, num_mc_samples: int = 1024, batch_size: int | str = 64, seed: int = 0,
                 device: str | None = "auto", overlong: str = "zero", **unused: Any):
        super().__init__()
        if overlong not in OVERLONG:
            raise ValueError(f"overlong must be one of {OVERLONG}, got {overlong!r}")
        if int(num_mc_samples) < 1 or int(batch_size) < 1:
            raise ValueError(f"num_mc_samples and batch_size must be >= 1, got {num_mc_samples}, {batch_size}")
        if unused:
            log.info("DLMHarness: ignoring lm-eval arguments %s", sorted(unused))
        if device in (None, "auto") or (str(device).startswith("cuda") and not torch.cuda.is_available()):
            if device not in (None, "auto"):  # lm-eval's command line asks for cuda by default
                log.warning("DLMHarness: device %s is not available here; using the CPU", device)
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self._device = torch.device(device)
        self.module = load_module(checkpoint, map_location=self._device)
        from dlm.data.tokenizer import load_tokenizer

        self.tok = load_tokenizer(self.module.tokenizer_dir)
        sid = self.module.hparams.special_ids
        self.bos, self.eos = int(sid["bos"]), int(sid["eos"])
        self.checkpoint, self.num_mc_samples, self.batch_size = checkpoint, int(num_mc_samples), int(batch_size)
        self.seed, self.overlong = int(seed), overlong
        self.records: dict[tuple[str, str], dict] = {}  # (context, continuation) -> the scored request
        if not self.module.causal:
            log.info("%s (%s): is_greedy is False for every request (not implemented for diffusion models)",
                     checkpoint, self.module.algo)

    def score(self, context: str, continuation: str) -> dict:
        """The scored request (cached): {"ll", "se", "tokens", "greedy", "overlong"}."""
        key = (context, continuation)
        if key not in self.records:
            prefix, target = encode_request(self.tok, self.bos, self.eos, context, continuation)
            length = self.module.hparams.block_length
            overlong = len(prefix) + len(target) > length
            if overlong and (self.overlong == "zero" or len(target) + 1 > length):
                rec = {"ll": 0.0, "se": 0.0, "tokens": len(prefix) + len(target), "greedy": False,
                       "draws": np.zeros(1, np.float32)}
            else:
                if overlong:  # keep BOS and the most recent context tokens
                    prefix = [prefix[0]] + prefix[len(prefix) + len(target) - length + 1:]
                rec = continuation_loglikelihood(self.module, prefix, target, self.num_mc_samples, self.batch_size,
                                                 self.seed)
            self.records[key] = rec | {"overlong": overlong}
        return self.records[key]

    def loglikelihood(self, requests, disable_tqdm: bool = False) -> list[tuple[float, bool]]:
        out = []
        for req in tqdm(requests, desc=f"loglikelihood {self.module.algo}", mininterval=10, disable=disable_tqdm):
            context, continuation = req.args
            rec = self.score(context, continuation)
            out.append((rec["ll"], rec["greedy"]))
        return out

    def loglikelihood_rolling(self, requests, disable_tqdm: bool = False):
        raise NotImplementedError("dlm models score multiple-choice tasks only (loglikelihood); rolling "
                                  "perplexity tasks are the zero-shot PPL rules' job")

    def generate_until(self, requests, disable_tqdm: bool = False):
        raise NotImplementedError("dlm models score multiple-choice tasks only; generation is `dlm sample`")


def paired_margin(a: dict, b: dict) -> tuple[float, float]:
    """(ll_a - ll_b, its Monte-Carlo s.e.) of two scored requests. The draws of both come from the same seeded
    generators (t of draw k is the same for every request of a length-independent batch layout), so the s.e. is
    that of the per-draw differences, std / sqrt(n); 0 for exact (AR) or unscored (over-long) requests."""
    margin = a["ll"] - b["ll"]
    if len(a["draws"]) != len(b["draws"]) or len(a["draws"]) < 2:
        return margin, math.hypot(a["se"], b["se"])
    d = a["draws"].astype(np.float64) - b["draws"].astype(np.float64)
    return margin, float(d.std(ddof=1) / math.sqrt(len(d)))


def question_records(samples: list[dict], records: dict[tuple[str, str], dict]) -> list[dict]:
    """Per question of one task (lm-eval's logged samples): the choices' ll and MC s.e., the answer, the pick,
    and the pick's margin over the runner-up with its paired Monte-Carlo s.e. (`paired_margin`)."""
    rows = []
    for s in samples:
        recs = [records[tuple(a)] for a in s["arguments"]]
        ll = [r["ll"] for r in recs]
        order = np.argsort(ll)[::-1]
        margin, margin_se = paired_margin(recs[order[0]], recs[order[1]]) if len(ll) > 1 else (math.inf, 0.0)
        rows.append({"doc_id": s["doc_id"], "target": s["target"], "ll": ll, "se": [r["se"] for r in recs],
                     "pred": int(order[0]), "margin": margin, "margin_se": margin_se, "acc": s.get("acc"),
                     "acc_norm": s.get("acc_norm"), "overlong": sum(r["overlong"] for r in recs)})
    return rows


def mc_summary(rows: list[dict]) -> dict:
    """How much the Monte-Carlo error can matter: the mean / max s.e. of a choice's ll, and the share of
    questions whose pick beats the runner-up by less than 2 paired s.e. (`paired_margin`): their answer could
    change with other draws."""
    se = [x for r in rows for x in r["se"]]
    close = sum(r["margin"] < 2 * r["margin_se"] for r in rows)
    return {"mc_se_mean": float(np.mean(se)) if se else 0.0, "mc_se_max": float(np.max(se)) if se else 0.0,
            "mc_ambiguous": close / len(rows) if rows else 0.0}


def evaluate_downstream(ckpt: str, tasks: list[str], out: str, questions_out: str, local_task_dirs: list[str] = (),
                        num_mc_samples: int = 1024, batch_size: int = 64, seed: int = 0, overlong: str = "zero",
                        limit: int | float | None = None, num_fewshot: int | None = None, device: str = "auto",
                        run: str = "", group: str | None = None, train_seed: int | None = None) -> dict:
    """Run lm-eval's `simple_evaluate` with the registered "dlm" model on `tasks` (lm-eval task names; the
    tasks whose YAML lies in `local_task_dirs` are found there, the others in lm-eval's own task index, which
    needs their datasets from the Hugging Face hub). Writes the metric JSON `out` ({"run", "group",
    "train_seed", "algo", "params", "train_steps", "tasks": {name: {"acc", "acc_stderr", "acc_norm",
    "acc_norm_stderr", "n", "chance", "mc_se_mean", "mc_se_max", "mc_ambiguous", "overlong"}}, "settings",
    "provenance"}) and `questions_out` (JSONL, one line per question: the choices' ll and s.e.)."""
    import json

    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager

    if not tasks:
        raise ValueError("evaluate_downstream: no tasks given (downstream.tasks is empty)")
    local = [str(d) for d in local_task_dirs]
    builtin = [t for t in tasks if not any(os.path.isfile(os.path.join(d, f"{t}.yaml")) for d in local)]
    manager = TaskManager(include_path=local or None, include_defaults=bool(builtin))
    unknown = [t for t in tasks if t not in manager.all_tasks]
    if unknown:
        raise ValueError(f"downstream.tasks: unknown lm-eval task(s) {unknown} (not in lm-eval's task index nor in "
                         f"{local or 'a local task directory'})")
    model_args = {"checkpoint": ckpt, "num_mc_samples": num_mc_samples, "batch_size": batch_size, "seed": seed,
                  "device": device, "overlong": overlong}
    lm = DLMHarness(**model_args)
    res = simple_evaluate(model=lm, tasks=list(tasks), task_manager=manager, limit=limit, num_fewshot=num_fewshot,
                          log_samples=True, random_seed=seed, numpy_random_seed=seed, torch_random_seed=seed,
                          fewshot_random_seed=seed)
    per_task, lines = {}, []
    for name in tasks:
        r = res["results"][name]
        rows = question_records(res["samples"][name], lm.records)
        per_task[name] = {"acc": r["acc,none"], "acc_stderr": r["acc_stderr,none"],
                          "acc_norm": r.get("acc_norm,none"), "acc_norm_stderr": r.get("acc_norm_stderr,none"),
                          "n": len(rows), "chance": float(np.mean([1.0 / len(x["ll"]) for x in rows])),
                          "overlong": sum(x["overlong"] for x in rows), **mc_summary(rows)}
        lines += [json.dumps({"task": name, **x}) + "\n" for x in rows]
        log.info("%s %s: acc %.4f +- %.4f (chance %.4f, n %d)", run, name, per_task[name]["acc"],
                 per_task[name]["acc_stderr"], per_task[name]["chance"], len(rows))
    module = lm.module
    settings = {"ckpt": ckpt, "tasks": list(tasks), "local_task_dirs": local, "num_mc_samples": num_mc_samples,
                "batch_size": batch_size, "seed": seed, "overlong": overlong, "limit": limit,
                "num_fewshot": num_fewshot, "loss_avg_mode": "full", "lm_eval_version": res.get("lm_eval_version")}
    result = {"run": run, "group": group or run, "train_seed": train_seed, "algo": module.algo,
              "params": module.num_params(), "train_steps": module.global_step,
              "mc_draws": 1 if module.causal else num_mc_samples, "tasks": per_task, "settings": settings,
              "provenance": provenance(settings)}
    write_text(questions_out, "".join(lines))
    write_json(out, result)
    return result


if __name__ == "__main__":  # lm-eval's own command line with the "dlm" model registered
    from lm_eval.__main__ import cli_evaluate

    cli_evaluate()
