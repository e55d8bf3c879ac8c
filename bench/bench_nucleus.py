"""The cost of nucleus (top-p) sampling: DUO's uniform-state sampler and MDLM's, with and without a nucleus filter,
before (every position filtered by a full sort of its row, `DenseDenoiserOutput` + `top_p_filter_sorted`) and
after (top-k pre-selection, `nucleus_stats`; DUO reads the filtered x_theta[z] only where bounds leave the drawn
component open, `draw_mixture`). Both paths run in this one process, alternating, on the same modules and seeds;
the tokens of the two paths are compared (they must be equal).

Modules: untrained `micro` DiTs (udlm, mdlm) with the GPT-2 vocabulary size K = 50258, whose output is the
network's (perturbed weights) plus a synthetic language-model-like part, so that the nucleus sizes are those of a
trained model rather than of a near-uniform untrained head: a Zipf prior over a fixed random order of the K ids
(exponent 1.1: a nucleus of thousands of ids at p = 0.9, like a unigram distribution) plus a peak on a fixed
target token per position whose height grows with the share of the sequence that already agrees with its
targets (flat at the start of sampling, confident at the end). fp32, 2 threads, glibc malloc tuned.

Writes bench/results/nucleus.json and nucleus.md. Run: python bench/bench_nucleus.py [--quick]
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import sys
import time
from pathlib import Path

import torch

from dlm.algos import get_method
from dlm.sampling import run_sampler
from dlm.sampling.common import DenseDenoiserOutput, Denoiser
from dlm.utils import tune_malloc, write_json, write_text

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
FULL = {"K": 50258, "L": 64, "batch": 4, "steps": 8, "rounds": 2, "p": 0.9}
QUICK = {"K": 4096, "L": 32, "batch": 2, "steps": 4, "rounds": 1, "p": 0.9}
SAMPLERS = [("udlm", "duo_ancestral"), ("mdlm", "mdlm_ancestral")]


class LanguageLikeHead(torch.nn.Module):
    """The backbone's logits plus a Zipf prior and a per-position target peak (see the module docstring)."""

    def __init__(self, backbone: torch.nn.Module, K: int, L: int, mask_id: int, seed: int = 0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        rank = torch.randperm(K, generator=g).float() + 1
        self.prior = -1.1 * torch.log(rank)  # (K,)
        self.prior[mask_id] = 0.0 if mask_id >= K else self.prior[mask_id]
        self.target = torch.randint(0, K, (L,), generator=g)  # (L,)
        self.backbone = backbone

    def forward(self, z: torch.Tensor, sigma: torch.Tensor | None = None, **kw) -> torch.Tensor:
        logits = self.backbone(z, sigma, **kw)  # (n, L, K)
        agree = (z == self.target).float().mean(-1, keepdim=True)  # (n, 1) share of the targets already drawn
        peak = 4.0 + 16.0 * agree  # (n, 1)
        out = logits + self.prior
        return out.scatter_add(-1, self.target.expand(z.shape)[..., None], peak[..., None].expand(*z.shape, 1))


def make_module(algo: str, K: int, L: int) -> torch.nn.Module:
    cls = get_method(algo)
    torch.manual_seed(0)
    m = cls(vocab_size=K, block_length=L, special_ids={"bos": 0, "eos": 0, "pad": None, "mask": K - 1},
            tokenizer_dir="-", model={"size": "micro", "dropout": 0.0}, time_conditioning=cls.default_time_conditioning)
    with torch.no_grad():
        g = torch.Generator().manual_seed(1)
        for p in m.backbone.parameters():
            p.add_(0.02 * torch.randn(p.shape, generator=g))
    m.backbone = LanguageLikeHead(m.backbone, K, L, m.mask_id)
    return m.eval()


class Before:
    """The dense path: every output filtered at every position by sorting whole rows."""

    def __enter__(self):
        from dlm.sampling import common

        self.saved = (Denoiser.output, Denoiser.filter)
        Denoiser.output = lambda self, z, t: DenseDenoiserOutput(self, self.log_probs(z, t))
        Denoiser.filter = lambda self, log_p: common.top_p_filter_sorted(log_p.exp().double(), self.nucleus_p,
                                                                         self.nucleus_rule)
        return self

    def __exit__(self, *exc):
        Denoiser.output, Denoiser.filter = self.saved


def timed(m, sampler: str, P: dict, nucleus: float, seed: int) -> dict:
    g = torch.Generator().manual_seed(seed)
    t0 = time.perf_counter()
    out = run_sampler(m, sampler, n=P["batch"], steps=P["steps"], generator=g,
                      settings={"nucleus_p": nucleus} if nucleus < 1 else None)
    return {"seconds": time.perf_counter() - t0, "tokens": out["tokens"], "nfe": int(out["nfe"])}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="small vocabulary and sizes (seconds)")
    ap.add_argument("--out", default=None, help="output directory (default bench/results; --quick: none)")
    args = ap.parse_args()
    P = QUICK if args.quick else FULL
    tune_malloc()
    torch.set_num_threads(2)
    info = {"date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), "platform": platform.platform(),
            "torch": torch.__version__, "threads": 2, "loadavg_start": os.getloadavg()}
    t_start = time.perf_counter()
    rows = []
    for algo, sampler in SAMPLERS:
        m = make_module(algo, P["K"], P["L"])
        timed(m, sampler, {**P, "steps": 1}, 1.0, 0)  # warm-up
        runs: dict[str, list] = {"plain": [], "before": [], "after": []}
        same = []
        for r in range(P["rounds"]):
            runs["plain"].append(timed(m, sampler, P, 1.0, r))
            with Before():
                runs["before"].append(timed(m, sampler, P, P["p"], r))
            runs["after"].append(timed(m, sampler, P, P["p"], r))
            same.append(bool(torch.equal(runs["before"][-1]["tokens"], runs["after"][-1]["tokens"])))
            print(f"  {sampler}, round {r + 1}: " + ", ".join(f"{k} {v[-1]['seconds']:.2f} s" for k, v in runs.items()),
                  flush=True)
        best = {k: min(x["seconds"] for x in v) for k, v in runs.items()}
        rows.append({"algo": algo, "sampler": sampler, "nfe": runs["plain"][0]["nfe"], **{f"{k}_seconds": v for k, v in
                     best.items()}, "before_vs_plain": best["before"] / best["plain"],
                     "after_vs_plain": best["after"] / best["plain"], "speedup": best["before"] / best["after"],
                     "same_tokens": same, "seconds_runs": {k: [x["seconds"] for x in v] for k, v in runs.items()}})
    info["loadavg_end"] = os.getloadavg()
    info["wall_seconds"] = time.perf_counter() - t_start
    res = {"quick": args.quick, "settings": P, "machine": info, "rows": rows}
    lines = [f"## Nucleus sampling cost (model `micro` with a language-like head, K = {P['K']}, L = {P['L']}, batch "
             f"{P['batch']}, {P['steps']} steps, top-p {P['p']}, fp32, 2 threads)", "",
             f"Recorded {info['date']} on {info['platform']}, torch {info['torch']}; bench/bench_nucleus.py, "
             f"{info['wall_seconds']:.0f} s (1-min load average {info['loadavg_start'][0]:.1f} at start, "
             f"{info['loadavg_end'][0]:.1f} at end). Seconds per batch, fastest of {P['rounds']} alternating rounds; "
             "*before* filters every position by sorting its whole row (the earlier samplers), *after* uses top-k "
             "pre-selection and, for DUO, the lazy read of x_theta[z]; the plain sampler (no filter) is the "
             "baseline of both ratios, measured in the same run.", "",
             "| sampler | algo | calls | plain s | before s | after s | before / plain | after / plain | "
             "before / after | same tokens |", "|---|---|---:|---:|---:|---:|---:|---:|---:|---|"]
    for r in rows:
        lines.append(f"| {r['sampler']} | {r['algo']} | {r['nfe']} | {r['plain_seconds']:.2f} | {r['before_seconds']:.2f} | "
                     f"{r['after_seconds']:.2f} | {r['before_vs_plain']:.2f}x | {r['after_vs_plain']:.2f}x | "
                     f"{r['speedup']:.1f}x | {'yes' if all(r['same_tokens']) else 'NO'} |")
    md = "\n".join(lines) + "\n"
    out_dir = Path(args.out) if args.out else (None if args.quick else RESULTS)
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
        write_json(out_dir / "nucleus.json", res)
        write_text(out_dir / "nucleus.md", md)
        print(f"wrote {out_dir / 'nucleus.json'} and nucleus.md", file=sys.stderr)
    print(md)


if __name__ == "__main__":
    main()
