"""The `dlm` command: every pipeline step by hand, outside Snakemake.

    dlm integral --vocab-size 50258 --gamma-min -5 --gamma-max -1 --points 100000 --out gpt2.npz
    dlm gen-ppl --texts samples.jsonl --judge gpt2-large --max-length 1024 --batch-size 8 --out gen.json
    dlm train --data results/data/kjv/packed --run-config run.yaml --out results/models/x/final.ckpt
    dlm sample --ckpt final.ckpt --sampler duo_greedy_tail --steps 32 --num-samples 16 --out s.jsonl
    dlm sample --ckpt final.ckpt --sampler remdm_loop --set eta=0.02 --condition prefix --data results/data/kjv/packed --out s.jsonl
    dlm sample --ckpt results/models/gidd/final.ckpt --sampler gidd_sc --config config/config.yaml --out s.jsonl
    dlm val-ppl --ckpt final.ckpt --data results/data/kjv/packed --out val.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from dlm.config import SAMPLER_CATALOG
from dlm.utils import setup_logging, tune_malloc

SAMPLER_NAMES = sorted(SAMPLER_CATALOG)


def cmd_integral(a: argparse.Namespace) -> None:
    from dlm.diffusion.integral import compute_cache, save_cache

    t0 = time.perf_counter()
    cache = compute_cache(a.vocab_size, a.gamma_min, a.gamma_max, a.points)
    save_cache(a.out, cache)
    print(f"wrote {a.out}: K={a.vocab_size}, {a.points} gammas in [{a.gamma_min}, {a.gamma_max}], "
          f"alpha in [{cache['alpha'].min():.6g}, {cache['alpha'].max():.6g}] ({time.perf_counter() - t0:.2f} s)")


def cmd_gen_ppl(a: argparse.Namespace) -> None:
    from dlm.evaluation.gen_ppl import run_gen_ppl

    res = run_gen_ppl(a.texts, a.judge, a.max_length, a.batch_size, a.out, device=a.device,
                      count_padding_eos=not a.no_padding_eos)
    print(f"gen PPL {res['gen_ppl']:.3f} over {res['num_tokens']} tokens of {res['num_samples']} samples "
          f"-> {a.out}")


def cmd_train(a: argparse.Namespace) -> None:
    import yaml

    from dlm.train import train, with_integral

    if (a.run_config is None) == (a.hp is None):
        raise SystemExit("dlm train: give exactly one of --run-config FILE and --hp JSON")
    if a.run_config is not None:
        with open(a.run_config) as f:
            hp = yaml.safe_load(f)
    else:
        hp = json.loads(a.hp)
    # DUO curriculum: the cached Gaussian-to-discrete transformation
    train(a.data, a.out, a.run_dir or str(Path(a.out).parent), with_integral(hp, a.integral), threads=a.threads)


def parse_settings(items: list[str] | None) -> dict:
    """KEY=VALUE pairs, each value read as YAML (numbers, booleans, lists)."""
    import yaml

    out = {}
    for item in items or []:
        if "=" not in item:
            raise SystemExit(f"--set expects KEY=VALUE, got {item!r}")
        key, value = item.split("=", 1)
        out[key.strip()] = yaml.safe_load(value)
    return out


def cmd_sample(a: argparse.Namespace) -> None:
    from dlm.sample import generate

    settings = parse_settings(a.set)
    if a.nucleus_p is not None:
        settings["nucleus_p"] = a.nucleus_p
    if a.condition is not None:
        settings["condition"] = a.condition
    prompts = {"source": "file", "path": a.prompts} if a.prompts else {
        "source": "heldout", "prefix_tokens": a.prefix_tokens, "suffix_tokens": a.suffix_tokens}
    generate(a.ckpt, a.sampler, a.steps, a.seed, a.num_samples, a.batch_size, a.out, settings=settings,
             prompts=prompts, data_dir=a.data, device=a.device, threads=a.threads, config=a.config)


def cmd_val_ppl(a: argparse.Namespace) -> None:
    from dlm.evaluation.val_ppl import evaluate_ppl

    res = evaluate_ppl(a.ckpt, a.data, a.split, a.batch_size, a.seed, a.out, max_batches=a.max_batches,
                       device=a.device, threads=a.threads, passes=a.passes)
    print(json.dumps({k: res[k] for k in ("algo", "val_nll", "val_nll_se", "val_ppl", "val_ppl_se", "num_tokens")}))


def cmd_import(a: argparse.Namespace) -> None:
    import yaml

    from dlm.checkpoints.convert import import_checkpoint

    algo_args = {}
    for item in a.algo_arg or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"--algo-arg expects KEY=VALUE, got {item!r}")
        algo_args[key] = yaml.safe_load(value)
    res = import_checkpoint(a.src, a.algo, a.out, tokenizer=a.tokenizer, length=a.length, n_heads=a.n_heads,
                            tokenizer_out=a.tokenizer_out, use_ema=not a.raw_weights, algo_args=algo_args)
    print(f"imported {a.src} ({res['layout']}, {res['weights']} weights) as {a.algo} -> {a.out} "
          f"(tokenizer {res['tokenizer']} -> {res['tokenizer_dir']})")


def cmd_unlock_stale(a: argparse.Namespace) -> None:
    from dlm.utils import stale_snakemake_locks

    locks = stale_snakemake_locks(a.directory)
    for lock in locks:
        lock.unlink()
    print(f"removed {len(locks)} stale Snakemake lock file(s) in {a.directory}" if locks else
          f"no stale Snakemake locks in {a.directory}")


def cmd_readme_results(args) -> None:
    from dlm.report.readme import update_readme

    if not os.path.isfile(args.claims):
        raise FileNotFoundError(f"{args.claims} not found: run the workflow first (make run)")
    figure = args.figure if args.figure and os.path.isfile(args.figure) else None
    update_readme(args.readme, args.claims, figure, args.figure_dest if figure else None)
    print(f"{args.readme}: results block updated from {args.claims}")


def cmd_released(a: argparse.Namespace) -> None:
    from dlm.checkpoints import registry
    from dlm.utils import write_json

    if a.action == "list":
        for name, e in registry.load(a.registry).items():
            x = e["expects"]
            settings = ", ".join(f"{k} {x[k]}" for k in ("length", "time_conditioning", "weights", "p_uniform", "T",
                                                         "sampler") if k in x)
            print(f"{name}\t{e['status']}\t{registry.describe(e)}\t{e['layout']} -> {e['algo']}\t{settings}")
        return
    if not a.name:
        raise ValueError("dlm released fetch: give the checkpoint's NAME (`dlm released list`)")
    e = registry.entry(a.name, a.registry)
    path = registry.fetch(e, a.dir)
    lock = registry.make_lock(a.name, e, path)
    lock_path = Path(a.lock_dir) / f"{a.name}.json"
    if lock_path.is_file():  # fetched before: the files must be the locked ones
        registry.verify(a.name, json.loads(lock_path.read_text()), path)
    else:
        write_json(lock_path, lock)
    print(f"{a.name}: {path} (commit {lock['commit']}; lock {lock_path})")


class HelpFormatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """Descriptions as written, and each option's default after its help ("(default: 32)"), except where the
    default is None (the help says what happens then) or the option is required."""

    def _get_help_string(self, action):
        if action.default is None or action.required:
            return action.help
        return super()._get_help_string(action)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="dlm", description=__doc__, formatter_class=HelpFormatter)
    p.add_argument("--log", help="write logs to this file instead of stderr")
    sub = p.add_subparsers(dest="command", required=True)

    def command(name: str, **kw) -> argparse.ArgumentParser:
        return sub.add_parser(name, formatter_class=HelpFormatter, **kw)

    s = command("integral", help="cache DUO's Gaussian-to-discrete transformation alpha(gamma)",
                description="Tabulate alpha(gamma) = (K p - 1)/(K - 1), p = int phi(z - mu) Phi(z)^(K-1) dz, "
                            "mu = exp(-gamma/2), and d alpha/d gamma on a gamma grid (float64 .npz with arrays "
                            "gamma, alpha, dalpha_dgamma).")
    s.add_argument("--vocab-size", type=int, required=True, help="K, the model's vocabulary size (GPT-2: 50258)")
    s.add_argument("--gamma-min", type=float, default=-5.0, help="smallest log-SNR")
    s.add_argument("--gamma-max", type=float, default=-1.0, help="largest log-SNR")
    s.add_argument("--points", type=int, default=100_000, help="grid points")
    s.add_argument("--out", required=True, help="output .npz path")
    s.set_defaults(func=cmd_integral)

    s = command("gen-ppl", help="generative perplexity of samples under a judge LM",
                description="Retokenize with the judge's tokenizer (EOS padding, truncation at --max-length), "
                            "count every non-EOS target plus the first EOS of each row (which may be its first "
                            "padding EOS, as in the papers' code), token-weighted over all samples.")
    s.add_argument("--texts", required=True, help="samples JSONL (objects with 'text', optional 'tokens') or one "
                                                  "JSON string per line")
    s.add_argument("--judge", required=True, help="Hugging Face causal LM name or path, or a dlm AR .ckpt")
    s.add_argument("--max-length", type=int, default=None, help="judge truncation (default: the judge's context)")
    s.add_argument("--batch-size", type=int, default=8, help="judge batch size")
    s.add_argument("--no-padding-eos", action="store_true",
                   help="never count a padding EOS (AND the count with the attention mask; default: the papers' rule)")
    s.add_argument("--device", default="cpu", help="torch device")
    s.add_argument("--out", required=True, help="output JSON path")
    s.set_defaults(func=cmd_gen_ppl)

    s = command("train", help="train one run (resumes from RUN_DIR/checkpoints/last.ckpt)",
                description="Train one run with the settings of a workflow run entry (algo, model, noise, optim, "
                            "trainer); a killed run resumes from RUN_DIR/checkpoints/last.ckpt.")
    s.add_argument("--data", required=True, help="packed data dir (with meta.json)")
    s.add_argument("--run-config", default=None, help="YAML of the run: algo, model, noise, optim, trainer")
    s.add_argument("--hp", default=None, help="the run's settings as JSON, instead of --run-config")
    s.add_argument("--integral", default=None, help="DUO curriculum: the integral cache (.npz) of the `integral` rule")
    s.add_argument("--out", required=True, help="final checkpoint path")
    s.add_argument("--run-dir", default=None, help="where checkpoints/ goes (default: the --out directory)")
    s.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    s.set_defaults(func=cmd_train)

    s = command("sample", help="draw samples from a checkpoint into a JSONL",
                description="Draw --num-samples sequences from a checkpoint with a registered sampler or a variant "
                            "of the workflow config's sampling.variants (e.g. gidd_sc; --config, by default "
                            "config/config.yaml of the working directory) and write one JSON object per sample. "
                            "The same code as the workflow's sample rule and the Python API: the same settings and "
                            "seed give the same samples.")
    s.add_argument("--ckpt", required=True, help="a dlm checkpoint (trained, distilled or imported)")
    s.add_argument("--sampler", required=True, help="a registered sampler (" + ", ".join(SAMPLER_NAMES) + ") or a "
                   "variant of sampling.variants in --config")
    s.add_argument("--config", action="append", metavar="FILE", default=None,
                   help="workflow config(s) whose sampling.variants name the sampler, repeatable, merged in order as "
                        "Snakemake's --configfile (default: config/config.yaml of the working directory, if any)")
    s.add_argument("--steps", type=int, default=32, help="sampling steps (AR: ignored, it takes the block length)")
    s.add_argument("--seed", type=int, default=0, help="seed of every random draw of the file")
    s.add_argument("--num-samples", type=int, default=16, help="sequences to draw (>= 1)")
    s.add_argument("--batch-size", type=int, default=16, help="sequences per batch (>= 1)")
    s.add_argument("--nucleus-p", type=float, default=None,
                   help="nucleus (top-p) filter in (0, 1] (default: the sampler's or variant's, 1 = off)")
    s.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="a sampler setting (YAML value), repeatable, e.g. --set eta=0.02 --set nucleus_rule=drop_crossing")
    s.add_argument("--condition", default=None, choices=["none", "prefix", "suffix", "infill"],
                   help="condition on prompts from --prompts, else on held-out blocks of --data (default: the "
                        "variant's, else none)")
    s.add_argument("--prompts", default=None, help="JSONL {prefix, suffix} objects or text lines (prefixes)")
    s.add_argument("--data", default=None, help="packed data dir for held-out prompts")
    s.add_argument("--prefix-tokens", type=int, default=32, help="held-out prompts: tokens of the prefix kept")
    s.add_argument("--suffix-tokens", type=int, default=32, help="held-out prompts: tokens of the suffix kept")
    s.add_argument("--device", default="auto", help="torch device (auto: cuda if available, else cpu)")
    s.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    s.add_argument("--out", required=True, help="output JSONL path (written atomically)")
    s.set_defaults(func=cmd_sample)

    s = command("val-ppl", help="validation perplexity (diffusion: NELBO bound) of a checkpoint",
                description="The validation bound of a checkpoint over the split: exact NLL for AR, the NELBO for "
                            "diffusion models, every draw seeded, with the Monte-Carlo standard error.")
    s.add_argument("--ckpt", required=True, help="a dlm checkpoint")
    s.add_argument("--data", required=True, help="packed data dir")
    s.add_argument("--split", default="valid", help="the packed split to score")
    s.add_argument("--batch-size", type=int, default=32, help="sequences per batch")
    s.add_argument("--seed", type=int, default=1, help="seed of every draw (times and noise) of the bound")
    s.add_argument("--passes", type=int, default=1, help="Monte-Carlo passes over the split (standard error "
                   "from their spread when >= 2)")
    s.add_argument("--max-batches", type=int, default=None, help="cap on batches (default: the whole split)")
    s.add_argument("--device", default="auto", help="torch device (auto: cuda if available, else cpu)")
    s.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    s.add_argument("--out", required=True, help="output JSON path")
    s.set_defaults(func=cmd_val_ppl)

    s = command("import", help="convert a released MDLM/DUO/SEDD/GIDD checkpoint into a dlm checkpoint",
                description="SRC: a Lightning .ckpt (MDLM/DUO repos), a .safetensors/.bin/.pt file, a Hugging "
                            "Face model folder or a hub name (kuleshov-group/mdlm-owt, s-sahoo/duo, "
                            "s-sahoo/duo-distilled, louaaron/sedd-small, dvruette/gidd-*). EMA weights are "
                            "imported where the file has them. Files are read without a general unpickle.")
    s.add_argument("src", help="checkpoint file, HF model folder or hub name")
    s.add_argument("--algo", required=True, choices=["mdlm", "udlm", "sedd", "gidd", "ar", "d3pm", "duo", "dcd", "sdtt"],
                   help="our method (DUO base: udlm; distilled students: dcd for DUO, sdtt for SDTT)")
    s.add_argument("--out", required=True, help="output .ckpt path")
    s.add_argument("--tokenizer", default=None, help="tokenizer name or path (default: the source folder's, else "
                                                     "gpt2); saved next to --out")
    s.add_argument("--tokenizer-out", default=None, help="where the tokenizer is saved (default: OUT.tokenizer)")
    s.add_argument("--length", type=int, default=None, help="sequence length L (default: from the config)")
    s.add_argument("--n-heads", type=int, default=None, help="attention heads; needed only when neither a config "
                                                            "nor a rotary buffer gives them")
    s.add_argument("--raw-weights", action="store_true", help="import the raw weights instead of the EMA")
    s.add_argument("--algo-arg", action="append", metavar="KEY=VALUE",
                   help="constructor argument of the method (YAML value), e.g. p_uniform=0.1; repeatable")
    s.set_defaults(func=cmd_import)

    s = command("readme-results", help="copy the claims table of the last run (and one figure) into the "
                                       "README's results block (make run does this at the end)",
                description="Replace the block between the README's claims markers by results/tables/claims.md "
                            "(and a link to one figure, copied next to the README), with the host and date.")
    s.add_argument("--readme", default="README.md", help="the README to update")
    s.add_argument("--claims", default="results/tables/claims.md", help="the claims table (Markdown)")
    s.add_argument("--figure", default="results/figures/frontier.png", help="figure shown under the table "
                                                                            "(skipped when missing)")
    s.add_argument("--figure-dest", default="docs/figures/frontier.png", help="where the figure is copied, "
                                                                             "relative to the README")
    s.set_defaults(func=cmd_readme_results)

    s = command("released", help="the registry of released checkpoints: list them, or fetch one and lock its "
                                 "sha256 (as the workflow's rule released_checkpoint)",
                description="list: every registered checkpoint with its source, layout and expected settings. "
                            "fetch NAME: download it (huggingface_hub; Google-Drive files: from --dir) and write or "
                            "check its lock (commit and sha256 of every file).")
    s.add_argument("action", choices=["list", "fetch"], help="what to do")
    s.add_argument("name", nargs="?", help="fetch: the checkpoint's registry name")
    s.add_argument("--registry", default=None, help="registry file (default: dlm/checkpoints/registry.yaml)")
    s.add_argument("--dir", default="resources/released", help="folder of the hand-downloaded (Google Drive) files")
    s.add_argument("--lock-dir", default="resources/checkpoint_locks", help="where the lock NAME.json is written")
    s.set_defaults(func=cmd_released)

    s = command("unlock-stale", help="remove the locks a killed Snakemake left behind (none while a "
                                     "Snakemake or its jobs still work in the directory)",
                description="Remove the lock files of a killed Snakemake in DIRECTORY/.snakemake/locks; the locks "
                            "of a Snakemake (or its jobs) still working there are kept.")
    s.add_argument("--directory", default=".", help="the workflow's working directory")
    s.set_defaults(func=cmd_unlock_stale)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.log)
    tune_malloc()
    try:
        args.func(args)
    except (ValueError, FileNotFoundError) as e:
        print(f"dlm {args.command}: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
