"""Sampling speed: the MDLM cache, few-step DUO against AR, network calls of every sampler, and the share of
sampling time spent outside the network forward.

All modules are untrained (random weights, a small perturbation of the zero-initialised head so the
outputs are not uniform; speed does not depend on the weights, except where a sampler's stopping rule
reads the outputs: GIDD self-correction). fp32 on the CPU, 2 torch threads, glibc malloc tuned as in
every pipeline job. Every sampler runs through `dlm.sampling.run_sampler`, the pipeline's entry point.
`module.backbone.forward` is wrapped by a timer (time.perf_counter around each call; CPU ops are
synchronous), which also counts the network calls independently of the sampler's own `nfe`.

1. MDLM cache. `mdlm_ancestral` (calls the network only at steps where some position unmasks) against
   `mdlm_ddpm` (a call at every step), at T = L and T = 10 L, batch 1 (as in the MDLM README) and
   batch 16, and `sedd_analytic` on the same MDLM module (no time conditioning, the pipeline's default:
   it reuses x_theta while z is unchanged) at batch 1. With the same seed `mdlm_ancestral` and
   `mdlm_ddpm` return the same tokens; this is checked. Batch 16 at T = 10 L would take ~10 minutes on
   2 cores (every step of mdlm_ddpm is a batch-16 call), so it is projected, unless --long: the cached
   sampler's calls are simulated without the network (which steps unmask something does not depend on
   the tokens; the simulation is checked against the measured calls of the other cells) and the
   seconds are calls x the seconds per call measured at T = L, batch 16, for each sampler.
2. Samples/s of DUO few-step sampling (`duo_greedy_tail`, 8 steps, the distilled students' setting, on
   a udlm module) against AR with its KV cache (`ar`), equal length L, batch 8, at L = 128 and L = 1024.
3. Network calls of every sampler in the catalogue (dlm.config.SAMPLER_CATALOG, on its first applicable
   algo; also psi on an MDLM module and the pipeline's `gidd_sc` variant = gidd_ancestral + GIDD
   self-correction with its defaults) at 32 steps, batch 1 (= calls per sample) and batch 32.
4. The share of sampling time outside the network forward, per sampler, at the embedded size (batch 32,
   32 steps): 1 - forward seconds / total seconds; the target is at most 20%. Samplers above it are
   profiled with cProfile (one run at fewer steps: every step does the same kind of work); the time
   inside the forward (the timer's cumulative time) is set aside, and the top entries by own time
   outside it, each with the dlm function that issues it, are reported.

Timing on the shared machine: where a measurement is repeated (rounds, alternating the samplers compared),
the fastest run counts (the least disturbed), and ratios are fastest / fastest within this run.
Repeats beyond the first round happen only while the section's time budget allows, and profiles beyond
the four worst samplers only while the run's total budget (360 s) allows, to keep the run near 6 minutes.

Writes bench/results/sample.json and bench/results/sample.md (with --quick: a tiny model, into a temporary
directory unless --out is given). Run: python bench/bench_sample.py [--quick] [--only mdlm,duo,catalogue]
"""

from __future__ import annotations

import argparse
import cProfile
import datetime as dt
import os
import platform
import pstats
import sys
import tempfile
import time
from pathlib import Path

import torch
import yaml

from dlm.algos import get_method
from dlm.config import SAMPLER_CATALOG
from dlm.sampling import run_sampler
from dlm.sampling.common import time_grid
from dlm.utils import tune_malloc, write_json, write_text

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
THREADS = 2
SPECIAL = {"bos": 0, "eos": 0, "pad": None, "mask": 1}
TARGET_OUTSIDE = 0.20  # at most this share of sampling time outside the network forward
CACHE_AIM = 8.0  # mdlm_ancestral vs mdlm_ddpm at T = 10 L, batch 1
SECTIONS = ("mdlm", "duo", "catalogue")

FULL = {
    "size": "micro", "K": 2048, "L": 128,
    "mdlm_batches": [1, 16], "mdlm_factors": [1, 10], "sedd_batches": [1], "mdlm_rounds": 2, "mdlm_budget_s": 80,
    "duo_lengths": [{"L": 128, "size": "micro", "K": 2048}, {"L": 1024, "size": "micro", "K": 2048}],
    "duo_batch": 8, "duo_steps": 8, "duo_rounds": 2, "duo_budget_s": 25,
    "steps": 32, "share_batch": 32, "nfe_batch": 1, "catalogue_rounds": 1, "catalogue_budget_s": 240,
    "profile_steps": 4, "profile_top": 6, "min_profiles": 4, "total_budget_s": 360,
}
QUICK = {
    "size": "nano", "K": 256, "L": 32,
    "mdlm_batches": [1, 4], "mdlm_factors": [1, 10], "sedd_batches": [1], "mdlm_rounds": 1, "mdlm_budget_s": 10,
    "duo_lengths": [{"L": 32, "size": "nano", "K": 256}, {"L": 64, "size": "nano", "K": 256}],
    "duo_batch": 2, "duo_steps": 4, "duo_rounds": 1, "duo_budget_s": 5,
    "steps": 8, "share_batch": 4, "nfe_batch": 1, "catalogue_rounds": 1, "catalogue_budget_s": 30,
    "profile_steps": 4, "profile_top": 6, "min_profiles": 4, "total_budget_s": 60,
}


# ---------------------------------------------------------------------------------------------- modules
# speed-relevant method settings of the config's runs (d3pm's T, GIDD's p_u); the duo / dcd students sample
# exactly like udlm and the sdtt student like mdlm (the duo module itself needs an integral cache)
SAMPLE_AS = {"duo": "udlm", "dcd": "udlm", "sdtt": "mdlm"}


def algo_args(algo: str) -> dict:
    runs = yaml.safe_load((ROOT / "config" / "config.yaml").read_text()).get("runs", {})
    run = runs.get(algo, {})
    return dict(run.get("algo_args", {}) or {}) if run.get("algo") == algo else {}


_MODULES: dict[tuple, torch.nn.Module] = {}


def module(algo: str, size: str, K: int, L: int) -> torch.nn.Module:
    """An untrained `algo` module (cached): the pipeline's time conditioning, weights perturbed (seeded)."""
    key = (algo, size, K, L)
    if key not in _MODULES:
        cls = get_method(algo)
        torch.manual_seed(0)
        m = cls(vocab_size=K, block_length=L, special_ids=SPECIAL, tokenizer_dir="-",
                model={"size": size, "dropout": 0.0}, time_conditioning=cls.default_time_conditioning,
                **algo_args(algo))
        with torch.no_grad():  # the head is zero-initialised (uniform output): give the net some signal
            g = torch.Generator().manual_seed(1)
            for p in m.backbone.parameters():
                p.add_(0.02 * torch.randn(p.shape, generator=g))
        _MODULES[key] = m.eval()
    return _MODULES[key]


_WARM: set = set()


@torch.no_grad()
def warm_up(m, n: int) -> None:
    """One forward at batch n before the first timed run of (module, n): lazy initialisation, allocator."""
    if (id(m), n) in _WARM:
        return
    L = m.hparams.block_length
    z = torch.randint(2, m.hparams.vocab_size, (n, L), generator=torch.Generator().manual_seed(0))
    if m.backbone.cfg.causal:
        m.backbone(z)
    else:
        m.backbone(z, torch.zeros(n))
    _WARM.add((id(m), n))


# ----------------------------------------------------------------------------------------------- timing
class ForwardTimer:
    """Context manager replacing `backbone.forward` by a timed, counted call (an instance attribute, which
    nn.Module.__call__ finds before the class's forward)."""

    def __init__(self, backbone: torch.nn.Module):
        self.backbone, self.inner = backbone, backbone.forward
        self.seconds, self.calls = 0.0, 0

    def __enter__(self) -> "ForwardTimer":
        self.backbone.forward = self
        return self

    def __exit__(self, *exc) -> None:
        del self.backbone.forward

    def __call__(self, *args, **kwargs):
        t0 = time.perf_counter()
        try:
            return self.inner(*args, **kwargs)
        finally:
            self.seconds += time.perf_counter() - t0
            self.calls += 1


def timed(m, sampler: str, n: int, steps: int, seed: int, settings: dict | None = None,
          profiler: cProfile.Profile | None = None) -> dict:
    """One run of `sampler`: total and forward seconds, the sampler's nfe and the counted forward calls."""
    warm_up(m, n)
    g = torch.Generator().manual_seed(seed)
    with ForwardTimer(m.backbone) as timer:
        t0 = time.perf_counter()
        if profiler is not None:
            profiler.enable()
        try:
            out = run_sampler(m, sampler, n=n, steps=steps, generator=g, settings=settings)
        finally:
            if profiler is not None:
                profiler.disable()
        total = time.perf_counter() - t0
    return {"seconds": total, "forward_seconds": timer.seconds, "forward_calls": timer.calls, "nfe": int(out["nfe"]),
            "outside_share": 1.0 - timer.seconds / total, "tokens": out["tokens"]}


def best_run(runs: list[dict]) -> dict:
    """The fastest of the repeated runs (the least disturbed on the shared machine), without the tokens."""
    b = min(runs, key=lambda r: r["seconds"])
    return {k: v for k, v in b.items() if k != "tokens"} | {"seconds_runs": [r["seconds"] for r in runs]}


# ------------------------------------------------------------------------------------- 1. the MDLM cache
MDLM_SAMPLERS = ("mdlm_ddpm", "mdlm_ancestral", "sedd_analytic")


def simulated_cached_nfe(m, n: int, steps: int, seeds=range(5)) -> float:
    """Mean network calls of `mdlm_ancestral` (batch n, `steps` steps) without the network: the unmask
    draws of `mdlm.masked_steps` (u < (a_s - a_t)/(1 - a_t) at still-masked positions), a call at every
    step where something unmasks, plus the noise-removal call if a [MASK] is left. Which positions unmask
    does not depend on the tokens drawn, so this has the distribution of the real sampler's nfe."""
    L = m.hparams.block_length
    ts = time_grid(steps)
    a = m.schedule.alpha(ts)  # (steps + 1,) float64
    p = (a[1:] - a[:-1]) / (1 - a[:-1])  # (steps,)
    counts = []
    for seed in seeds:
        g = torch.Generator().manual_seed(1000 + seed)
        masked = torch.ones(n, L, dtype=torch.bool)
        calls = 0
        for i in range(steps):
            unmask = masked & (torch.rand((n, L), dtype=torch.float64, generator=g) < p[i])
            if bool(unmask.any()):
                calls += 1
                masked &= ~unmask
        counts.append(calls + int(bool(masked.any())))
    return sum(counts) / len(counts)


def section_mdlm(P: dict, long: bool) -> dict:
    size, K, L = P["size"], P["K"], P["L"]
    m = module("mdlm", size, K, L)
    cells = [(B, f * L) for B in P["mdlm_batches"] for f in P["mdlm_factors"]]
    measured = [c for c in cells if long or c[0] == 1 or c[1] <= L]
    samplers = {B: [s for s in MDLM_SAMPLERS if s != "sedd_analytic" or B in P["sedd_batches"]]
                for B in P["mdlm_batches"]}
    runs: dict[tuple, dict[str, list]] = {c: {s: [] for s in samplers[c[0]]} for c in measured}
    same_tokens: dict[tuple, list[bool]] = {c: [] for c in measured}
    est: dict[tuple, float] = {}
    t_start = time.perf_counter()
    for r in range(P["mdlm_rounds"]):
        for c in measured:
            if r > 0 and time.perf_counter() - t_start + est[c] > P["mdlm_budget_s"]:
                continue
            B, T = c
            t0 = time.perf_counter()
            for s in samplers[B]:
                runs[c][s].append(timed(m, s, B, T, seed=r))
            same_tokens[c].append(bool(torch.equal(runs[c]["mdlm_ddpm"][-1]["tokens"],
                                                   runs[c]["mdlm_ancestral"][-1]["tokens"])))
            est[c] = time.perf_counter() - t0
            print(f"  mdlm cache: batch {B}, T {T}, round {r + 1}: " + ", ".join(
                f"{s} {runs[c][s][-1]['seconds']:.2f} s / {runs[c][s][-1]['nfe']} calls" for s in samplers[B]),
                flush=True)
    rows = []
    for c in cells:
        B, T = c
        sim = simulated_cached_nfe(m, B, T)
        floor = T / min(T, B * L)  # ddpm: a call per step; cached: at most one per unmasked position (+ the same
        # noise-removal call, which neither makes when the last step unmasks everything)
        if c in runs:
            best = {s: best_run(runs[c][s]) for s in samplers[B]}
            base = best["mdlm_ddpm"]
            for s in samplers[B]:
                b = best[s]
                rows.append({"batch": B, "T": T, "sampler": s, "measured": True, "rounds": len(runs[c][s]), **b,
                             "speedup": base["seconds"] / b["seconds"], "call_ratio": base["nfe"] / b["nfe"],
                             "speedup_per_round": [x["seconds"] / y["seconds"] for x, y in
                                                   zip(runs[c]["mdlm_ddpm"], runs[c][s])],
                             "call_floor": floor, "simulated_cached_nfe": sim,
                             "same_tokens_as_ddpm": same_tokens[c] if s == "mdlm_ancestral" else None})
        else:  # projected from the batch's T = L cell: calls x measured seconds per call
            ref = next(x for x in rows if x["batch"] == B and x["T"] == L and x["measured"])
            per_call = {x["sampler"]: x["seconds"] / x["nfe"] for x in rows
                        if x["batch"] == B and x["T"] == L and x["measured"]}
            ddpm_s = T * per_call["mdlm_ddpm"]
            for s in samplers[B]:
                nfe = T if s == "mdlm_ddpm" else sim
                secs = nfe * per_call[s]
                rows.append({"batch": B, "T": T, "sampler": s, "measured": False, "nfe": nfe, "seconds": secs,
                             "speedup": ddpm_s / secs, "call_ratio": T / nfe, "call_floor": floor,
                             "simulated_cached_nfe": sim, "projected_from_T": ref["T"],
                             "seconds_per_call": per_call[s]})
    return {"size": size, "vocab_size": K, "block_length": L, "rows": rows}


# ------------------------------------------------------------------------------------------ 2. DUO vs AR
def section_duo(P: dict) -> dict:
    n, steps = P["duo_batch"], P["duo_steps"]
    pairs = [("ar", "ar"), ("udlm", "duo_greedy_tail")]
    runs = {(i, s): [] for i in range(len(P["duo_lengths"])) for _, s in pairs}
    est: dict[int, float] = {}
    t_start = time.perf_counter()
    for r in range(P["duo_rounds"]):
        for i, spec in enumerate(P["duo_lengths"]):
            if r > 0 and time.perf_counter() - t_start + est[i] > P["duo_budget_s"]:
                continue
            t0 = time.perf_counter()
            for algo, s in pairs:
                m = module(algo, spec["size"], spec["K"], spec["L"])
                runs[(i, s)].append(timed(m, s, n, steps if s != "ar" else spec["L"] - 1, seed=r))
            est[i] = time.perf_counter() - t0
            print(f"  duo vs ar: L {spec['L']}, round {r + 1}: " + ", ".join(
                f"{s} {runs[(i, s)][-1]['seconds']:.2f} s" for _, s in pairs), flush=True)
    rows = []
    for i, spec in enumerate(P["duo_lengths"]):
        ar = best_run(runs[(i, "ar")])
        for algo, s in pairs:
            b = best_run(runs[(i, s)])
            rows.append({**spec, "algo": algo, "sampler": s, "batch": n, "steps": steps if s != "ar" else None,
                         **b, "samples_per_s": n / b["seconds"], "vs_ar": ar["seconds"] / b["seconds"],
                         "vs_ar_per_round": [x["seconds"] / y["seconds"]
                                             for x, y in zip(runs[(i, "ar")], runs[(i, s)])],
                         "rounds": len(runs[(i, s)])})
    return {"batch": n, "steps": steps, "rows": rows}


# ------------------------------------------------------------------- 3 + 4. calls and outside-forward time
def catalogue_rows() -> list[dict]:
    """One row per catalogue sampler on its first applicable algo, plus psi's masked path and gidd_sc."""
    rows = []
    for name, spec in SAMPLER_CATALOG.items():
        algo = SAMPLE_AS.get(spec["algos"][0], spec["algos"][0])
        rows.append({"label": name, "sampler": name, "algo": algo, "settings": {}})
        if name == "psi" and "mdlm" in spec["algos"] and algo != "mdlm":
            rows.append({"label": "psi (masked)", "sampler": name, "algo": "mdlm", "settings": {}})
        if name == "gidd_ancestral":
            rows.append({"label": "gidd_ancestral + self_correct", "sampler": name, "algo": algo,
                         "settings": {"self_correct": True}})
    return rows


def _name(func: tuple) -> str:
    """A readable pstats function key: 'cumsum', 'torch.searchsorted', 'common.py:sample_categorical'."""
    filename, _, name = func
    if filename == "~":
        if name.startswith("<method '"):
            return name.split("'")[1]
        if name.startswith("<built-in method "):
            return name[len("<built-in method "):].rstrip(">")
        return name.strip("<>")
    parent = Path(filename).parent.name
    return f"{parent}/{Path(filename).name}:{name}" if parent in ("sampling", "algos", "models") else \
        f"{Path(filename).name}:{name}"


def _inside_forward(func: tuple) -> bool:
    """Whether a profiled Python function runs only inside the network forward: the model's code, torch.nn
    (module calls, layers, functional) and the timer wrapping the forward. (cProfile records immediate callers
    only, and torch.nn's `_call_impl` is entered both from outside (the backbone) and inside (every layer), so
    the forward cannot be cut out of the call graph; the samplers and methods call no torch.nn code.)"""
    path = func[0].replace(os.sep, "/")
    timer = func[2] == "__call__" and path.endswith("bench_sample.py")
    return "/dlm/models/" in path or "/torch/nn/" in path or timer


def summarise_profile(prof: cProfile.Profile, top: int) -> dict:
    """Where the time outside the network forward goes, from a cProfile of a whole sampler run.

    Outside time = all profiled time - the cumulative time of `ForwardTimer.__call__` (the forward). Every
    function's own time is charged per caller edge, dropping the edges whose caller runs inside the
    forward (`_inside_forward`): `op <- caller` is the own time of an op (a C function) issued by that
    (sampler or method) function, `name (own)` a Python function's own time outside the forward. *by function* = a dlm
    function's own time plus the ops it issues directly."""
    stats = pstats.Stats(prof).stats
    total = sum(v[2] for v in stats.values())
    fwd = sum(v[3] for f, v in stats.items() if f[2] == "__call__" and f[0].endswith("bench_sample.py"))
    outside = max(total - fwd, 1e-12)
    own: dict[tuple, list] = {}  # (func, caller or None) -> [calls, seconds]
    by_fn: dict[tuple, float] = {}
    for func, (_, _, _, _, callers) in stats.items():
        if _inside_forward(func):
            continue
        for caller, (_, nc, tt, _) in callers.items():
            if _inside_forward(caller):
                continue
            key = (func, caller if func[0] == "~" else None)
            acc = own.setdefault(key, [0, 0.0])
            acc[0], acc[1] = acc[0] + nc, acc[1] + tt
            holder = caller if func[0] == "~" else func
            if f"{os.sep}dlm{os.sep}" in holder[0]:
                by_fn[holder] = by_fn.get(holder, 0.0) + tt
    entries = sorted(({"name": _name(f), "caller": _name(c) if c else None, "calls": nc, "seconds": tt,
                       "share": tt / outside} for (f, c), (nc, tt) in own.items()), key=lambda e: -e["seconds"])
    fns = sorted(by_fn.items(), key=lambda kv: -kv[1])[:top]
    return {"outside_seconds": outside, "forward_seconds_profiled": fwd, "top_own": entries[:top],
            "by_function": [{"name": _name(f), "seconds": t, "share": t / outside} for f, t in fns]}


def _entry(e: dict) -> str:
    return f"{e['name']} <- {e['caller']}" if e["caller"] else f"{e['name']} (own)"


def section_catalogue(P: dict, profile: bool, deadline: float) -> dict:
    size, K, L, steps, n = P["size"], P["K"], P["L"], P["steps"], P["share_batch"]
    rows = catalogue_rows()
    t_start = time.perf_counter()
    est: dict[str, float] = {}
    runs: dict[str, list] = {r["label"]: [] for r in rows}
    for r in rows:  # calls per sample: batch nfe_batch
        m = module(r["algo"], size, K, L)
        one = timed(m, r["sampler"], P["nfe_batch"], steps, seed=0, settings=r["settings"])
        r["nfe_batch1"], r["forward_calls_batch1"] = one["nfe"], one["forward_calls"]
    for rnd in range(P["catalogue_rounds"]):
        for r in rows:
            if rnd > 0 and time.perf_counter() - t_start + est[r["label"]] > P["catalogue_budget_s"]:
                continue
            m = module(r["algo"], size, K, L)
            x = timed(m, r["sampler"], n, steps, seed=rnd, settings=r["settings"])
            runs[r["label"]].append(x)
            est[r["label"]] = x["seconds"]
            print(f"  catalogue: {r['label']} on {r['algo']}, round {rnd + 1}: {x['seconds']:.2f} s, "
                  f"{x['nfe']} calls, {100 * x['outside_share']:.0f}% outside the forward", flush=True)
    for r in rows:
        r.update(best_run(runs[r["label"]]))
        r["rounds"] = len(runs[r["label"]])
        r["calls_match"] = r["nfe"] == r["forward_calls"] and r["nfe_batch1"] == r["forward_calls_batch1"]
    over = sorted((r for r in rows if r["outside_share"] > TARGET_OUTSIDE), key=lambda r: -r["outside_share"])
    profiles, skipped = {}, []
    if profile:
        for i, r in enumerate(over):  # worst first; past the run's time budget only the first min_profiles
            if i >= P["min_profiles"] and time.perf_counter() > deadline:
                skipped.append(r["label"])
                continue
            m = module(r["algo"], size, K, L)
            prof = cProfile.Profile()
            x = timed(m, r["sampler"], n, P["profile_steps"], seed=0, settings=r["settings"], profiler=prof)
            profiles[r["label"]] = {"steps": P["profile_steps"], "batch": n, "seconds": x["seconds"],
                                    "forward_seconds": x["forward_seconds"], "outside_share": x["outside_share"],
                                    **summarise_profile(prof, P["profile_top"])}
            print(f"  profiled {r['label']}: " + ", ".join(
                f"{e['name']} {100 * e['share']:.0f}%" for e in profiles[r["label"]]["top_own"][:4]), flush=True)
    return {"size": size, "vocab_size": K, "block_length": L, "steps": steps, "batch": n,
            "nfe_batch": P["nfe_batch"], "rows": rows, "profiles": profiles, "not_profiled": skipped}


# ---------------------------------------------------------------------------------------------- output
def machine() -> dict:
    return {"date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), "platform": platform.platform(),
            "python": platform.python_version(), "torch": torch.__version__, "nproc": os.cpu_count(),
            "threads": torch.get_num_threads(), "loadavg_start": os.getloadavg()}


def _x(v: float) -> str:
    return f"{v:.2f}x" if v < 10 else f"{v:.1f}x"


def markdown(res: dict) -> str:
    info, P = res["machine"], res["settings"]
    load = f"{info['loadavg_start'][0]:.1f} at start, {info['loadavg_end'][0]:.1f} at end"
    quick = " (QUICK SETTINGS: a tiny model, not a result)" if res["quick"] else ""
    out = [f"## Sampling speed (model `{P['size']}`, K = {P['K']}, L = {P['L']}, fp32, {info['threads']} threads)"
           f"{quick}", "",
           f"Recorded {info['date']} on {info['platform']} ({info['nproc']} CPU cores shared with other jobs; 1-min "
           f"load average {load}), torch {info['torch']}; bench/bench_sample.py, {info['wall_seconds']:.0f} s. "
           "Untrained modules (random weights), every sampler through `run_sampler`; *calls* = network calls "
           "for the batch (each call evaluates the whole batch, so also the calls of each sample), counted by "
           "the sampler and checked against a timer wrapped around `backbone.forward`; *fwd* = share of the "
           "time inside that forward. Where repeated, the fastest run of alternating rounds counts and ratios "
           "are fastest / fastest, baselines measured in the same run." + (
               f" WARNING: the machine was busy at the start (load {info['loadavg_start'][0]:.1f}): with "
               f"{info['threads']} OpenMP threads every op can wait for a descheduled thread, which inflates small "
               "calls (AR's single-token calls most) several-fold; rerun on a quiet machine."
               if info["loadavg_start"][0] > 0.5 and info["threads"] > 1 else ""), ""]
    paragraphs = []
    if "mdlm" in res:
        sec = res["mdlm"]
        out += [f"### MDLM cache: `mdlm_ancestral` and `sedd_analytic` against `mdlm_ddpm` (model `{sec['size']}`, "
                f"K = {sec['vocab_size']}, L = {sec['block_length']}, MDLM without time conditioning)", "",
                "| batch | T | sampler | calls | seconds | vs mdlm_ddpm (seconds) | vs mdlm_ddpm (calls) | "
                "call floor T / min(T, n L) | fwd | rounds |",
                "|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|"]
        for r in sec["rows"]:
            calls = f"{r['nfe']}" if r["measured"] else f"~{r['nfe']:.0f} (simulated)" if r["sampler"] != "mdlm_ddpm" \
                else f"{r['nfe']}"
            secs = f"{r['seconds']:.2f}" if r["measured"] else f"~{r['seconds']:.1f} (projected)"
            fwd = f"{100 * (1 - r['outside_share']):.0f}%" if r["measured"] else "-"
            out.append(f"| {r['batch']} | {r['T']} | {r['sampler']} | {calls} | {secs} | {_x(r['speedup'])} | "
                       f"{_x(r['call_ratio'])} | {_x(r['call_floor'])} | {fwd} | {r.get('rounds', '-')} |")
        same = [r["same_tokens_as_ddpm"] for r in sec["rows"] if r.get("same_tokens_as_ddpm") is not None]
        sims = [(r["nfe"], r["simulated_cached_nfe"]) for r in sec["rows"]
                if r["measured"] and r["sampler"] == "mdlm_ancestral"]
        out += ["", f"Same seed, same tokens (`mdlm_ancestral` vs `mdlm_ddpm`): "
                f"{'yes, every run' if all(all(s) for s in same) else 'NO: ' + str(same)}. Simulated calls of "
                "the cached sampler (mean of 5 seeds, no network) against the measured ones: " +
                ", ".join(f"{s:.0f} vs {m}" for m, s in sims) + ".", ""]
        paragraphs.append(mdlm_paragraph(sec))
    if "duo" in res:
        sec = res["duo"]
        out += [f"### Few-step DUO against AR with its KV cache (batch {sec['batch']}, random weights)", "",
                "| L | model | K | sampler | steps | calls | seconds / batch | samples/s | vs AR | fwd | rounds |",
                "|---:|---|---:|---|---:|---:|---:|---:|---:|---:|---:|"]
        for r in sec["rows"]:
            out.append(f"| {r['L']} | {r['size']} | {r['K']} | {r['sampler']} | {r['steps'] or '-'} | {r['nfe']} | "
                       f"{r['seconds']:.2f} | {r['samples_per_s']:.2f} | {_x(r['vs_ar'])} | "
                       f"{100 * (1 - r['outside_share']):.0f}% | {r['rounds']} |")
        out.append("")
        paragraphs.append(duo_paragraph(sec))
    if "catalogue" in res:
        sec = res["catalogue"]
        out += [f"### Network calls and time outside the forward, every sampler ({sec['steps']} steps, model "
                f"`{sec['size']}`, K = {sec['vocab_size']}, L = {sec['block_length']})", "",
                f"| sampler | algo | calls, batch {sec['nfe_batch']} | calls, batch {sec['batch']} | "
                f"seconds, batch {sec['batch']} | forward s | outside the forward | <= {100 * TARGET_OUTSIDE:.0f}% |",
                "|---|---|---:|---:|---:|---:|---:|---|"]
        for r in sec["rows"]:
            flag = "" if r["calls_match"] else " (!)"
            ok = "yes" if r["outside_share"] <= TARGET_OUTSIDE else "**no**"
            out.append(f"| {r['label']} | {r['algo']} | {r['nfe_batch1']}{flag} | {r['nfe']}{flag} | "
                       f"{r['seconds']:.2f} | {r['forward_seconds']:.2f} | {100 * r['outside_share']:.0f}% | {ok} |")
        notes = ["AR samplers ignore the step count (L - 1 calls)."]
        if not all(r["calls_match"] for r in sec["rows"]):
            notes.append("(!) the sampler's nfe differs from the forward calls counted by the timer: " + ", ".join(
                f"{r['label']} {r['nfe_batch1']}/{r['nfe']} reported vs {r['forward_calls_batch1']}/"
                f"{r['forward_calls']} counted" for r in sec["rows"] if not r["calls_match"]) + ".")
        out += ["", " ".join(notes), ""]
        if sec["profiles"]:
            out += [f"Where the time outside the forward goes (cProfile of one run at "
                    f"{next(iter(sec['profiles'].values()))['steps']} steps, batch {sec['batch']}, per sampler above "
                    f"{100 * TARGET_OUTSIDE:.0f}%; shares of the profiled time outside the forward, which cProfile "
                    "inflates where Python calls are many; `op <- caller` = own time of an op issued by that "
                    "function; `f (own)` = a Python function's own time, which includes the tensor operators it "
                    "writes as `+`, `*`, `<`, `&`, `[...]` (cProfile does not list them separately); "
                    "*by function* = a dlm function's own time plus the ops it issues directly):", ""]
            for label, p in sec["profiles"].items():
                top = ", ".join(f"`{_entry(e)}` {100 * e['share']:.0f}%" for e in p["top_own"])
                fns = ", ".join(f"`{e['name']}` {100 * e['share']:.0f}%" for e in p["by_function"])
                out.append(f"- **{label}** ({p['outside_seconds']:.2f} s outside the forward, "
                           f"{p['forward_seconds_profiled']:.2f} s inside, profiled): {top}. By function: {fns}.")
            if sec["not_profiled"]:
                out.append(f"- not profiled (the run's {P['total_budget_s']} s budget was spent; "
                           f"`--only catalogue` profiles them): {', '.join(sec['not_profiled'])}.")
            out.append("")
        paragraphs.append(catalogue_paragraph(sec))
    out += ["### Interpretation", ""]
    for text in paragraphs:
        if text:
            out += [text, ""]
    return "\n".join(out).rstrip() + "\n"


def mdlm_paragraph(sec: dict) -> str:
    L = sec["block_length"]
    get = {(r["batch"], r["T"], r["sampler"]): r for r in sec["rows"]}
    batches = sorted({r["batch"] for r in sec["rows"]})
    Ts = sorted({r["T"] for r in sec["rows"]})
    T_hi = Ts[-1]
    parts = []
    a, d = get.get((1, T_hi, "mdlm_ancestral")), get.get((1, T_hi, "mdlm_ddpm"))
    if a and d:
        parts.append(f"At T = {T_hi} (= {T_hi // L} L), batch 1, `mdlm_ancestral` makes {a['nfe']:.0f} calls instead "
                     f"of {d['nfe']:.0f} and is {_x(a['speedup'])} faster than `mdlm_ddpm` in seconds "
                     f"({_x(a['call_ratio'])} in calls; the floor T/L is {_x(a['call_floor'])}; "
                     f"aim >= {CACHE_AIM:.0f}x: {'met' if a['speedup'] >= CACHE_AIM else 'MISSED'}). "
                     "The MDLM README reports 3.4x at "
                     "T = 10k for L = 1024 with its `ddpm_cache`, which skips a call only while z_t is unchanged.")
    a, d = get.get((1, L, "mdlm_ancestral")), get.get((1, L, "mdlm_ddpm"))
    if a and d:
        parts.append(f"At T = L the cache still saves calls at batch 1 ({a['nfe']:.0f} of {d['nfe']:.0f}: steps "
                     f"where no position unmasks are skipped), {_x(a['speedup'])} in seconds.")
    if len(batches) > 1:
        B = batches[-1]
        a, d = get.get((B, T_hi, "mdlm_ancestral")), get.get((B, T_hi, "mdlm_ddpm"))
        if a and d:
            how = ("measured" if a["measured"] else
                   "projected from the simulated calls and the seconds per call at T = L")
            parts.append(f"At batch {B} the cache is shared by the batch: some position unmasks at almost every step, "
                         f"so at T = {T_hi} the calls fall only to ~{a['nfe']:.0f} of {d['nfe']:.0f} "
                         f"({_x(a['call_ratio'])}, {_x(a['speedup'])} in seconds, {how}): a step is skipped only "
                         "when none of the n L positions unmasks (probability ~exp(-n L / T)), so the cache pays at "
                         "batch 1 or T >> n L.")
    s = get.get((1, T_hi, "sedd_analytic"))
    if s:
        parts.append(f"`sedd_analytic` on the MDLM module (no time conditioning, so it reuses x_theta while z is "
                     f"unchanged) makes {s['nfe']:.0f} calls at batch 1, T = {T_hi}: {_x(s['speedup'])} against "
                     "`mdlm_ddpm`.")
    return " ".join(parts)


def duo_paragraph(sec: dict) -> str:
    parts = []
    for r in sec["rows"]:
        if r["sampler"] == "ar":
            continue
        ar = next(x for x in sec["rows"] if x["sampler"] == "ar" and x["L"] == r["L"])
        parts.append(f"L = {r['L']} (`{r['size']}`, K = {r['K']}): `duo_greedy_tail` at {r['steps']} steps "
                     f"({r['nfe']} calls) draws {r['samples_per_s']:.2f} samples/s against AR's "
                     f"{ar['samples_per_s']:.2f} ({ar['nfe']} cached single-token calls): {_x(r['vs_ar'])}.")
    if parts:
        parts.append("Each DUO call processes all L positions (plus an (n, L, K) float64 posterior), each cached "
                     "AR call one position: DUO makes (L - 1) / (steps + 1) times fewer calls, each of which costs "
                     "more the longer the sequence.")
    return " ".join(parts)


def catalogue_paragraph(sec: dict) -> str:
    rows = sec["rows"]
    over = sorted((r for r in rows if r["outside_share"] > TARGET_OUTSIDE), key=lambda r: -r["outside_share"])
    if not over:
        return (f"Every sampler spends at most {100 * TARGET_OUTSIDE:.0f}% of its time outside the network forward "
                f"(largest: {max(rows, key=lambda r: r['outside_share'])['label']}, "
                f"{100 * max(r['outside_share'] for r in rows):.0f}%).")
    text = (f"{len(over)} of {len(rows)} samplers spend more than {100 * TARGET_OUTSIDE:.0f}% of their time outside "
            f"the network forward: " + ", ".join(f"{r['label']} {100 * r['outside_share']:.0f}%" for r in over) + ".")
    profs = sec["profiles"]
    if profs:
        heads: dict[str, float] = {}
        for p in profs.values():
            for e in p["top_own"][:3]:
                key = _entry(e)
                heads[key] = heads.get(key, 0.0) + e["seconds"]
        top = sorted(heads.items(), key=lambda kv: -kv[1])[:4]
        text += (" Summed over the profiled samplers the largest own-time entries outside the forward are " +
                 ", ".join(f"{k} ({v:.2f} s)" for k, v in top) + " (details above).")
    return text


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0].replace("\n", " "))
    ap.add_argument("--quick", action="store_true", help="tiny model and settings (seconds), for development")
    ap.add_argument("--out", default=None, help="output directory (default bench/results; --quick: a temp dir)")
    ap.add_argument("--only", default=",".join(SECTIONS), help=f"comma-separated sections of {SECTIONS}")
    ap.add_argument("--long", action="store_true", help="measure batch 16 at T = 10 L instead of projecting it")
    ap.add_argument("--no-profile", action="store_true", help="skip the cProfile runs of samplers above 20%%")
    ap.add_argument("--threads", type=int, default=None,
                    help=f"torch threads (default {THREADS}; --quick: 1, since on a loaded machine two OpenMP "
                         "threads on the tiny model's ops mostly wait for each other)")
    args = ap.parse_args()
    only = [s for s in args.only.split(",") if s]
    if set(only) - set(SECTIONS):
        ap.error(f"--only takes {SECTIONS}, got {only}")
    out_dir = Path(args.out) if args.out else (Path(tempfile.mkdtemp(prefix="bench_sample_")) if args.quick
                                               else RESULTS)
    tune_malloc()
    torch.set_num_threads(args.threads or (1 if args.quick else THREADS))
    P = QUICK if args.quick else FULL
    info = machine()
    t0 = time.perf_counter()
    res: dict = {"quick": args.quick, "settings": P, "long": args.long}
    if "mdlm" in only:
        print("== MDLM cache", flush=True)
        res["mdlm"] = section_mdlm(P, args.long)
    if "duo" in only:
        print("== DUO vs AR", flush=True)
        res["duo"] = section_duo(P)
    if "catalogue" in only:
        print("== catalogue", flush=True)
        res["catalogue"] = section_catalogue(P, not args.no_profile, t0 + P["total_budget_s"])
    info["loadavg_end"] = os.getloadavg()
    info["wall_seconds"] = time.perf_counter() - t0
    res["machine"] = info
    out_dir.mkdir(parents=True, exist_ok=True)
    write_json(out_dir / "sample.json", res)
    md = markdown(res)
    write_text(out_dir / "sample.md", md)
    print(md)
    print(f"wrote {out_dir / 'sample.json'} and {out_dir / 'sample.md'} ({info['wall_seconds']:.0f} s)",
          file=sys.stderr)


if __name__ == "__main__":
    main()
