"""Why does GIDD at p_u = 0 train to a worse bound than MDLM? An ablation on the embedded default.

At p_u = 0 GIDD's process is masked diffusion with alpha_t = 1 - t, and its per-token loss and gradient
equal MDLM's at the same (t, z_t) (tests/test_gidd.py). Yet with the default's data, model and budget the
two runs end far apart (bench/RESULTS.md: 5.90 against 5.46 nats). The two runs still differ in how they
*train*; this script swaps those pieces one at a time, each as a small subclass of the method or a run
setting, and trains every variant like the default's run of December 2026 (dlm.train.train: the `micro` DiT, KJV
BPE-2048 blocks of 128, batch 16 (the default now trains 8), lr 2e-3 with 50 warm-up steps and cosine decay, 800 steps, seed 1,
dropout 0, EMA 0.99 -- the same for every variant so that only the named piece moves):

  time draws  GIDD: t in [1e-4, 1 - 1e-4], one shared uniform offset (t_i = frac(i/n + U));
              MDLM: t in [1e-3, 1], one uniform per stratum.
  noise draws GIDD: z_t from Cat(alpha_t x + beta_t pi_t) (a uniform and a randint per token);
              MDLM: a uniform per token against 1 - alpha_t.
  schedule    GIDD: alpha_t = (1 - t) / C_t ~ 1 - t;  MDLM: alpha_t = 1 - (1 - 1e-3) t.
  output      GIDD: mean parameterisation, the KL + Itakura-Saito loss with the ELBO weights;
              MDLM: SUBS (carry-over) and the weighted cross-entropy -log x_theta[x] / t on masked tokens.
  conditioning GIDD: the DiT is conditioned on t;  MDLM: on nothing (zeros).
  normalisation both: the loss summed over every position / (B L) (identical for wrap packing: no padding).
  dropout/EMA the original GIDD has neither; the original MDLM has EMA 0.9999 (rows "no EMA").

Each variant's final checkpoint is scored by the pipeline's validation bound (dlm.evaluation.val_ppl:
3 Monte-Carlo passes over the 437 held-out blocks, batch 32, val_seed 1) -- the number the val-PPL table
shows. The paired difference to MDLM uses the same blocks; its standard error is the passes' spread.

Writes bench/results/gidd_ablation.json (every variant, resumable: variants already in the file are
skipped) and bench/results/gidd_ablation.md.
Run: nice -n 10 python bench/bench_gidd_ablation.py --data DIR [--steps 800] [--only NAME ...]
(DIR: the default's packed data, e.g. results/data/kjv/packed after `snakemake results/data/kjv/packed`).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
from bench_train import RESULTS, machine  # noqa: E402

OUT_JSON, OUT_MD = RESULTS / "gidd_ablation.json", RESULTS / "gidd_ablation.md"
THREADS = 1


# --- the swapped pieces: small subclasses registered under their own algo names -----------------------

def register_variants() -> None:
    from dlm.algos import METHODS
    from dlm.algos.gidd import GIDD
    from dlm.algos.mdlm import MDLM, forward_mask
    from dlm.diffusion.schedules import sample_t

    class GiddMdlmTimes(GIDD):
        """GIDD with MDLM's time draws: t in [1e-3, 1], one uniform per stratum."""
        algo = "gidd_mdlm_times"

        def sample_times(self, n, generator=None, device="cpu"):
            return sample_t(n, 1e-3, self.hparams.antithetic, generator, device).clamp(max=1 - self.t_eps)

    class GiddMdlmNoise(GIDD):
        """GIDD with MDLM's forward draws: one uniform per token against the mask share (p_u = 0 only)."""
        algo = "gidd_mdlm_noise"

        def _divergence(self, x, t, generator):
            from dlm.algos.gidd import gidd_divergences

            z = forward_mask(x, 1.0 - self.schedule.mask_share(t), self.mask_id, generator)  # (B, L)
            kl, itakura_saito = gidd_divergences(self.denoise(z, t), x, z, t, self.schedule)
            return z, kl + itakura_saito

    class GiddMdlmLoss(GIDD):
        """GIDD's times, draws, schedule and conditioning, MDLM's output and loss: SUBS log-probs and the
        weighted cross-entropy -alpha'_t / (1 - alpha_t) log x_theta[x] at masked positions."""
        algo = "gidd_mdlm_loss"

        def _masked_ce(self, x, t, generator):
            z = self.schedule.sample(x, t, generator)  # (B, L)
            logits = self.backbone(z, self.sigma_input(t)).float()  # (B, L, K)
            logits[..., self.mask_id] = float("-inf")
            log_p = torch.log_softmax(logits, dim=-1).gather(-1, x[..., None]).squeeze(-1)  # (B, L)
            a = self.schedule.alpha(t)  # (B,) float64
            weight = (-self.schedule.dlog_alpha(t) * a / (1.0 - a))[:, None]  # -alpha'/(1 - alpha)
            return torch.where(z == self.mask_id, -weight * log_p.double(), torch.zeros_like(weight)).float()

        def token_nll(self, batch, t, generator=None):
            return self._masked_ce(batch["input_ids"], t, generator)

        def loss(self, batch, step=0, generator=None):
            x = batch["input_ids"]
            nll = self._masked_ce(x, self.sample_times(x.shape[0], generator, x.device), generator)
            return nll.sum(), torch.tensor(float(x.numel()), device=x.device)

    class MdlmGiddTimes(MDLM):
        """MDLM with GIDD's time draws: t in [1e-4, 1 - 1e-4], one shared uniform offset."""
        algo = "mdlm_gidd_times"

        def sample_times(self, n, generator=None, device="cpu"):
            u = torch.rand(1, generator=generator, device=device)
            r = (torch.arange(n, device=device, dtype=torch.float32) / n + u) % 1.0
            return (1.0 - 2e-4) * r + 1e-4

    class MdlmLinear(MDLM):
        """MDLM with GIDD's schedule alpha_t = 1 - t (loglinear eps 1e-9), MDLM's time draws on [1e-3, 1]."""
        algo = "mdlm_linear"

        def __init__(self, **kw):
            kw["noise"] = {**(kw.get("noise") or {}), "eps": 1e-9}
            super().__init__(**kw)

        def sample_times(self, n, generator=None, device="cpu"):
            return sample_t(n, 1e-3, self.hparams.antithetic, generator, device)

    for cls in (GiddMdlmTimes, GiddMdlmNoise, GiddMdlmLoss, MdlmGiddTimes, MdlmLinear):
        METHODS[cls.algo] = cls


# --- the variants: (name, base run, changes, what it swaps) ---------------------------------------------

VARIANTS = [
    ("mdlm", "mdlm", {}, "MDLM as in the default"),
    ("gidd", "gidd", {}, "GIDD p_u = 0 (the default's, with EMA 0.99 as every variant)"),
    ("gidd_no_cond", "gidd", {"time_conditioning": False}, "conditioning: GIDD without time conditioning"),
    ("gidd_no_cond_seed2", "gidd", {"time_conditioning": False, "trainer": {"seed": 2}}, "conditioning: none, seed 2"),
    ("gidd_no_cond_seed3", "gidd", {"time_conditioning": False, "trainer": {"seed": 3}}, "conditioning: none, seed 3"),
    ("gidd_no_cond_seed4", "gidd", {"time_conditioning": False, "trainer": {"seed": 4}}, "conditioning: none, seed 4"),
    ("mdlm_cond", "mdlm", {"time_conditioning": True}, "conditioning: MDLM conditioned on sigma_t"),
    ("mdlm_cond_seed2", "mdlm", {"time_conditioning": True, "trainer": {"seed": 2}}, "conditioning: sigma_t, seed 2"),
    ("mdlm_cond_seed3", "mdlm", {"time_conditioning": True, "trainer": {"seed": 3}}, "conditioning: sigma_t, seed 3"),
    ("mdlm_cond_seed4", "mdlm", {"time_conditioning": True, "trainer": {"seed": 4}}, "conditioning: sigma_t, seed 4"),
    ("gidd_mdlm_times", "gidd", {"algo": "gidd_mdlm_times"}, "time draws: GIDD with MDLM's"),
    ("gidd_mdlm_times_seed2", "gidd", {"algo": "gidd_mdlm_times", "trainer": {"seed": 2}}, "time draws: MDLM's, seed 2"),
    ("gidd_mdlm_times_seed3", "gidd", {"algo": "gidd_mdlm_times", "trainer": {"seed": 3}}, "time draws: MDLM's, seed 3"),
    ("gidd_mdlm_times_seed4", "gidd", {"algo": "gidd_mdlm_times", "trainer": {"seed": 4}}, "time draws: MDLM's, seed 4"),
    ("mdlm_gidd_times", "mdlm", {"algo": "mdlm_gidd_times"}, "time draws: MDLM with GIDD's"),
    ("gidd_mdlm_noise", "gidd", {"algo": "gidd_mdlm_noise"}, "noise draws: GIDD with MDLM's"),
    ("mdlm_linear", "mdlm", {"algo": "mdlm_linear"}, "schedule: MDLM with alpha_t = 1 - t"),
    ("gidd_mdlm_loss", "gidd", {"algo": "gidd_mdlm_loss"}, "output and loss: GIDD with MDLM's SUBS cross-entropy"),
    ("mdlm_seed2", "mdlm", {"trainer": {"seed": 2}}, "training seed: MDLM with seed 2 (data order, t, noise)"),
    ("gidd_seed2", "gidd", {"trainer": {"seed": 2}}, "training seed: GIDD with seed 2"),
    ("mdlm_seed3", "mdlm", {"trainer": {"seed": 3}}, "training seed: MDLM with seed 3"),
    ("gidd_seed3", "gidd", {"trainer": {"seed": 3}}, "training seed: GIDD with seed 3"),
    ("mdlm_seed4", "mdlm", {"trainer": {"seed": 4}}, "training seed: MDLM with seed 4"),
    ("gidd_seed4", "gidd", {"trainer": {"seed": 4}}, "training seed: GIDD with seed 4"),
    ("mdlm_seed5", "mdlm", {"trainer": {"seed": 5}}, "training seed: MDLM with seed 5"),
    ("gidd_seed5", "gidd", {"trainer": {"seed": 5}}, "training seed: GIDD with seed 5"),
    ("mdlm_seed6", "mdlm", {"trainer": {"seed": 6}}, "training seed: MDLM with seed 6"),
    ("gidd_seed6", "gidd", {"trainer": {"seed": 6}}, "training seed: GIDD with seed 6"),
    ("gidd_teps3", "gidd", {"algo_args": {"t_eps": 1e-3}}, "time range: GIDD with t in [1e-3, 1 - 1e-3] (t_eps 1e-3)"),
    ("gidd_teps3_seed2", "gidd", {"algo_args": {"t_eps": 1e-3}, "trainer": {"seed": 2}}, "time range: t_eps 1e-3, seed 2"),
    ("gidd_teps3_seed3", "gidd", {"algo_args": {"t_eps": 1e-3}, "trainer": {"seed": 3}}, "time range: t_eps 1e-3, seed 3"),
    ("gidd_teps3_seed4", "gidd", {"algo_args": {"t_eps": 1e-3}, "trainer": {"seed": 4}}, "time range: t_eps 1e-3, seed 4"),
    ("gidd_no_ema", "gidd", {"trainer": {"ema": 0.0}}, "EMA: GIDD without EMA (the original; new default)"),
    ("mdlm_no_ema", "mdlm", {"trainer": {"ema": 0.0}}, "EMA: MDLM without EMA"),
]


def default_hp(run: str) -> dict:
    """The run's settings in config/config.yaml (train_defaults merged with the run's own keys)."""
    import yaml

    from dlm.config import apply_defaults, resolve_run

    cfg = apply_defaults(yaml.safe_load((ROOT / "config" / "config.yaml").read_text()),
                         str(ROOT / "config" / "schema.yaml"))  # the schema defaults, as the workflow fills them
    hp = resolve_run(cfg, run)
    hp["model"] = {**hp.get("model", {}), "dropout": 0.0}
    # one EMA and one batch for every variant: those of the default when the recorded variants were trained
    # (the default now trains 8 sequences a step and GIDD without EMA; the results file pairs by name only)
    hp["trainer"] = {**hp["trainer"], "ema": 0.99, "batch_size": 16}
    return hp


def variant_hp(base: str, changes: dict, steps: int) -> dict:
    hp = default_hp(base)
    for key, value in changes.items():
        hp[key] = {**hp.get(key, {}), **value} if isinstance(value, dict) else value
    hp["trainer"] = {**hp["trainer"], "max_steps": steps, "val_every": steps, "ckpt_every": steps}
    return hp


def run_variant(name: str, base: str, changes: dict, data: str, steps: int, work: Path) -> dict:
    from dlm.evaluation.val_ppl import evaluate_ppl
    from dlm.train import train

    hp = variant_hp(base, changes, steps)
    run_dir = work / name
    ckpt = run_dir / "final.ckpt"
    t0 = time.perf_counter()
    train(data, str(ckpt), str(run_dir), hp, threads=THREADS)
    t_train = time.perf_counter() - t0
    res = evaluate_ppl(str(ckpt), data, "valid", batch_size=32, seed=1, out=str(run_dir / "val.json"), run=name,
                       device="cpu", threads=THREADS, passes=3)
    return {"name": name, "base": base, "changes": changes, "algo": hp["algo"], "steps": steps,
            "val_nll": res["val_nll"], "val_nll_se": res["val_nll_se"], "pass_nll": res["pass_nll"],
            "val_ppl": res["val_ppl"], "train_seconds": t_train, **context_profile(str(ckpt), data)}


@torch.no_grad()
def context_profile(ckpt: str, data: str, times=(0.2, 0.8)) -> dict:
    """Mean -log x_theta[x] over masked positions of every held-out block at fixed t (masks drawn with seed 0,
    the same for every checkpoint): how much the network uses the visible context. A network that learned only
    the unigram statistics gives the same value at every t; MDLM's loss grows with t (less context)."""
    from dlm.algos import load_module
    from dlm.algos.mdlm import forward_mask
    from dlm.data.dataset import PackedDataset

    m = load_module(ckpt)
    ds = PackedDataset(data, "valid")
    x = torch.stack([ds[i]["input_ids"] for i in range(len(ds))])  # (N, L)
    out = {}
    for tv in times:
        t = torch.full((x.shape[0],), float(tv))
        z = forward_mask(x, 1.0 - t, m.mask_id, torch.Generator().manual_seed(0))  # (N, L)
        logits = m.backbone(z, m.sigma_input(t)).float()  # (N, L, K)
        logits[..., m.mask_id] = float("-inf")
        lp = torch.log_softmax(logits, -1).gather(-1, x[..., None]).squeeze(-1)  # (N, L)
        out[f"masked_nll_t{tv}"] = float(-lp[z == m.mask_id].mean())
    return out


@torch.no_grad()
def decompose(ckpt: str, data: str, passes: int = 3, batch_size: int = 32, seed: int = 1) -> dict:
    """A GIDD checkpoint's validation bound split by position: masked (z_t = [MASK]) and clean (z_t = x; no
    uniform noise at p_u = 0), and the clean part into its KL and Itakura-Saito terms -- with the draws of
    dlm.evaluation.val_ppl (same seeds). MDLM's SUBS carry-over gives clean positions exactly 0, so the masked
    part alone is this network's bound under MDLM's output transform."""
    from torch.utils.data import DataLoader

    from dlm.algos import load_module
    from dlm.algos.gidd import gidd_divergences
    from dlm.data.dataset import PackedDataset
    from dlm.evaluation.val_ppl import bound_generator

    m = load_module(ckpt)
    loader = DataLoader(PackedDataset(data, "valid"), batch_size=batch_size, shuffle=False)
    sums = {"masked": 0.0, "clean_kl": 0.0, "clean_is": 0.0, "tokens": 0, "masked_tokens": 0, "clean_max": 0.0}
    for p in range(passes):
        for i, batch in enumerate(loader):
            g = bound_generator(seed, p, i)  # the validation's draws
            x = batch["input_ids"]
            t = m.sample_times(x.shape[0], g, x.device)
            z = m.schedule.sample(x, t, g)
            kl, itakura_saito = gidd_divergences(m.denoise(z, t), x, z, t, m.schedule)
            w = m.schedule.elbo_weights(t, z, x)
            masked = z == m.mask_id
            sums["masked"] += float((w * (kl + itakura_saito))[masked].sum())
            sums["clean_kl"] += float((w * kl)[~masked].sum())
            sums["clean_is"] += float((w * itakura_saito)[~masked].sum())
            sums["clean_max"] = max(sums["clean_max"], float((w * (kl + itakura_saito))[~masked].max()))
            sums["tokens"] += int(x.numel())
            sums["masked_tokens"] += int(masked.sum())
    n = sums["tokens"]
    return {"ckpt": ckpt, "bound": (sums["masked"] + sums["clean_kl"] + sums["clean_is"]) / n,
            "masked_part": sums["masked"] / n, "clean_kl_part": sums["clean_kl"] / n,
            "clean_is_part": sums["clean_is"] / n, "clean_max_token": sums["clean_max"],
            "masked_fraction": sums["masked_tokens"] / n}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", required=True, help="the embedded default's packed data directory")
    ap.add_argument("--steps", type=int, default=800)
    ap.add_argument("--only", nargs="*", help="variant names (default: every variant not yet in the results)")
    ap.add_argument("--work", default=None, help="directory that keeps the checkpoints (default: a temporary one)")
    ap.add_argument("--decompose", nargs="*", metavar="NAME=CKPT",
                    help="only split the bound of these GIDD checkpoints by position (see `decompose`)")
    ap.add_argument("--profile", nargs="*", metavar="NAME=CKPT",
                    help="only add the context profile (`context_profile`) of finished variants")
    a = ap.parse_args()
    torch.set_num_threads(THREADS)
    register_variants()
    if a.profile is not None:  # add the context profile of finished variants from their kept checkpoints
        from dlm.utils import write_json

        for item in a.profile:
            name, ckpt = item.split("=", 1)
            done = json.loads(OUT_JSON.read_text())
            done["variants"][name].update(context_profile(ckpt, a.data))
            write_json(OUT_JSON, done)
            print(name, {k: v for k, v in done["variants"][name].items() if k.startswith("masked_nll")}, flush=True)
        write_md(json.loads(OUT_JSON.read_text()))
        return
    if a.decompose is not None:
        from dlm.utils import write_json

        done = json.loads(OUT_JSON.read_text()) if OUT_JSON.exists() else {"machine": machine(), "variants": {}}
        for item in a.decompose:
            name, ckpt = item.split("=", 1)
            done.setdefault("decomposition", {})[name] = d = decompose(ckpt, a.data)
            print(name, json.dumps(d), flush=True)
        write_json(OUT_JSON, done)
        write_md(done)
        return
    done = json.loads(OUT_JSON.read_text()) if OUT_JSON.exists() else {"machine": machine(), "variants": {}}
    todo = [v for v in VARIANTS if (a.only is None or v[0] in a.only)
            and (a.only is not None or v[0] not in done["variants"])]
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(a.work) if a.work else Path(tmp)  # --work keeps the checkpoints
        for name, base, changes, what in todo:
            print(f"== {name}: {what}", flush=True)
            r = run_variant(name, base, changes, a.data, a.steps, work)
            r["what"] = what
            print(f"   val NLL {r['val_nll']:.4f} +- {r['val_nll_se']:.4f} ({r['train_seconds']:.0f} s)", flush=True)
            from dlm.utils import write_json

            if OUT_JSON.exists():  # another invocation may have added variants meanwhile
                done = {**json.loads(OUT_JSON.read_text()), "machine": done["machine"]}
            done["variants"][name] = r
            write_json(OUT_JSON, done)
            write_md(done)


def write_md(done: dict) -> None:
    from dlm.utils import write_text

    v = done["variants"]
    ref = v.get("mdlm")
    rows = ["| variant | what is swapped | val NLL | MC s.e. | Δ vs mdlm (paired) | masked NLL t = 0.2 / 0.8 | train s |",
            "|---|---|---:|---:|---:|---:|---:|"]
    for name, _, _, what in VARIANTS:
        if name not in v:
            continue
        r = v[name]
        if ref is not None and name != "mdlm" and r["steps"] == ref["steps"]:
            d = [a - b for a, b in zip(r["pass_nll"], ref["pass_nll"])]
            mean = sum(d) / len(d)
            se = math.sqrt(sum((x - mean) ** 2 for x in d) / (len(d) - 1) / len(d)) if len(d) > 1 else float("nan")
            delta = f"{mean:+.4f} ± {se:.4f}"
        else:
            delta = "–"
        prof = (f"{r['masked_nll_t0.2']:.3f} / {r['masked_nll_t0.8']:.3f}" if "masked_nll_t0.2" in r else "–")
        rows.append(f"| {name} | {what} | {r['val_nll']:.4f} | {r['val_nll_se']:.4f} | {delta} | {prof} | "
                    f"{r['train_seconds']:.0f} |")
    m = done["machine"]
    text = "\n".join([
        "## GIDD (p_u = 0) against MDLM: which training piece makes the gap", "",
        f"bench/bench_gidd_ablation.py on {m['platform']} ({m['nproc']} shared cores), torch {m['torch']}, "
        f"{THREADS} thread per run, started {m['date']}. Every variant trains the embedded default's run "
        f"(micro DiT, KJV BPE-2048, L = 128, batch 16, lr 2e-3 cosine, seed 1, dropout 0, EMA 0.99 unless the "
        f"row says otherwise) for {next(iter(v.values()))['steps'] if v else '?'} steps and is scored by the "
        "pipeline's validation bound (3 passes, val_seed 1); Δ is the paired difference of the passes to mdlm.",
        "", *rows, ""])
    seeds = {base: [v[n]["val_nll"] for n in [base] + [f"{base}_seed{k}" for k in range(2, 10)] if n in v]
             for base in ("mdlm", "gidd", "gidd_no_cond", "mdlm_cond", "gidd_teps3", "gidd_mdlm_times")}

    def stats(x):
        m = sum(x) / len(x)
        return m, math.sqrt(sum((y - m) ** 2 for y in x) / (len(x) - 1))

    if len(seeds["mdlm"]) >= 2:
        from dlm.report.claims import seeds_diff

        text += "\nOver training seeds (the variants named _seedK; seed 1 is the unsuffixed one), mean ± sd:\n\n"
        for base, x in seeds.items():
            if len(x) < 2:
                continue
            m, sd = stats(x)
            line = f"* {base}: {m:.4f} ± {sd:.4f} over {len(x)} seeds ({', '.join(f'{y:.3f}' for y in x)})"
            if base != "mdlm":  # the claims table's interval (pooled sd, Student t): one rule for both
                iv = seeds_diff(x, seeds["mdlm"], [x, seeds["mdlm"]], "")
                line += (f"; {base} - mdlm = {iv.effect:+.4f}, 95% interval [{iv.lo:+.4f}, {iv.hi:+.4f}] "
                         "(pooled sd, as the claims table)")
            text += line + "\n"
    if done.get("decomposition"):
        text += "\n".join([
            "", "The GIDD bound of a checkpoint split by position (`--decompose`; the validation draws): masked "
            "positions, and at clean positions (z_t = x) the KL and Itakura-Saito terms. Under MDLM's SUBS "
            "carry-over the clean positions contribute exactly 0, so the masked part is the same network's bound "
            "with MDLM's output transform.", "",
            "| checkpoint | GIDD bound | masked part | clean KL | clean IS | largest clean token | masked fraction |",
            "|---|---:|---:|---:|---:|---:|---:|",
            *[f"| {k} | {d['bound']:.4f} | {d['masked_part']:.4f} | {d['clean_kl_part']:.2e} | {d['clean_is_part']:.2e} "
              f"| {d['clean_max_token']:.2e} | {d['masked_fraction']:.3f} |" for k, d in done["decomposition"].items()],
            ""])
    write_text(OUT_MD, text)


if __name__ == "__main__":
    main()
