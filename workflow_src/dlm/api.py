"""A small Python API for notebooks: load a trained or imported checkpoint, generate (unconditionally or
conditioned on a prefix, a suffix or spans to infill), self-correct and decode.

    import dlm
    model = dlm.load("results/models/mdlm/final.ckpt")
    out = model.generate(4, sampler="remdm_loop", steps=64, seed=0, prefix="And God said")
    print(out.texts[0])
    fixed = model.self_correct(out.tokens, seed=0, temperature=0.1)

The Snakemake rule `sample`, `dlm sample` and this API run the same code (`Model.generate` calls
`dlm.sampling.run_sampler`), so a notebook reproduces a sample file exactly for the same settings and seed.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from dlm.config import SELF_CORRECT_ALGOS, check_applies, request_sampler
from dlm.sampling import resolve_settings, run_sampler
from dlm.sampling.common import Conditioning
from dlm.sampling_rules import check, check_sample_args

DEFAULT_SAMPLER = {"ar": "ar", "mdlm": "mdlm_ancestral", "sdtt": "mdlm_ancestral", "udlm": "duo_ancestral",
                   "duo": "duo_ancestral", "dcd": "duo_greedy_tail", "sedd": "sedd_analytic",
                   "d3pm": "d3pm_ancestral", "gidd": "gidd_ancestral"}


@dataclass
class Samples:
    """Generated token ids (n, L), their decoded texts and per-batch records (sampler, settings, nfe, seconds)."""

    tokens: torch.Tensor
    texts: list[str]
    nfe: float
    seconds: float
    extra: dict = field(default_factory=dict)

    @property
    def tokens_per_second(self) -> float:
        return self.tokens.numel() / self.seconds if self.seconds > 0 else float("inf")


def _ids(tok, text_or_ids, continues: bool = False) -> list[int]:
    """Token ids of a prompt part (text or ids). With `continues` (a suffix or span after generated text), a text
    that starts with a letter or digit starts a new word: where the tokenizer keeps word-initial spaces inside
    its tokens (byte-level BPE without a prefix space: GPT-2's, the pipeline's own), the text is encoded with its
    leading space, as the tokenizer encodes it inside a whole text, so decoding the sequence does not glue it to
    the word before ("law and it was good", not "lawand it was good"). Start the text with a space or punctuation,
    or give ids, to control the join yourself."""
    if isinstance(text_or_ids, str):
        if continues and text_or_ids[:1].isalnum() and _glues_words(tok):
            text_or_ids = " " + text_or_ids
        return tok.encode(text_or_ids, add_special_tokens=False)
    return [int(i) for i in text_or_ids]


def _glues_words(tok) -> bool:
    """Whether two separately encoded words decode without a space between them (the tokenizer stores the space
    in the next word's token); WordPiece and SentencePiece tokenizers put it back themselves."""
    a, b = (tok.encode(w, add_special_tokens=False) for w in ("a", "b"))
    return tok.decode(a + b).strip() == "ab"


def find_tokenizer(tokenizer_dir: str, ckpt: str) -> str:
    """The checkpoint's tokenizer directory: as recorded, or (a workflow's relative path such as
    resources/tokenizers/X, when Python runs elsewhere) relative to a folder above the checkpoint."""
    rel = Path(tokenizer_dir)
    if rel.is_absolute() or rel.exists():
        return str(rel)
    for parent in Path(ckpt).resolve().parents:
        if (parent / rel).exists():
            return str(parent / rel)
    raise FileNotFoundError(f"{ckpt}: its tokenizer {tokenizer_dir!r} is neither under the working directory nor "
                            f"under a folder above the checkpoint")


class Model:
    """A loaded method (EMA weights, eval mode) with its tokenizer."""

    def __init__(self, module, tokenizer):
        self.module, self.tokenizer = module, tokenizer

    @classmethod
    def load(cls, path: str, device: str = "auto") -> "Model":
        from dlm.algos import load_module
        from dlm.data.tokenizer import load_tokenizer, model_vocab_size

        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        module = load_module(path, map_location=device)
        tok_dir = find_tokenizer(module.tokenizer_dir, path)
        tok = load_tokenizer(tok_dir)
        K = model_vocab_size(tok)
        if K != module.hparams.vocab_size:
            raise ValueError(f"{path}: the checkpoint has vocab_size {module.hparams.vocab_size} but its tokenizer "
                             f"{tok_dir} gives K = {K} (len {len(tok)}); expected the tokenizer the model was "
                             f"trained or imported with")
        return cls(module, tok)

    @property
    def algo(self) -> str:
        return self.module.algo

    @property
    def length(self) -> int:
        return self.module.hparams.block_length

    def encode(self, text: str) -> list[int]:
        return _ids(self.tokenizer, text)

    def decode(self, tokens, skip_special_tokens: bool = False) -> list[str]:
        rows = tokens.tolist() if isinstance(tokens, torch.Tensor) else list(tokens)
        return [self.tokenizer.decode(r, skip_special_tokens=skip_special_tokens) for r in rows]

    def conditioning(self, n: int, prefix=None, suffix=None, spans: dict | None = None) -> Conditioning | None:
        """Fixed positions for n sequences: `prefix` / `suffix` (text or ids, one for all or a list of n), and
        `spans` {start position: text or ids} placed anywhere (infilling leaves the rest free)."""
        if prefix is None and suffix is None and not spans:
            return None
        L = self.length

        def per_row(x):
            if x is None or isinstance(x, str) or (x and isinstance(x[0], int)):
                return [x] * n
            if len(x) != n:
                raise ValueError(f"got {len(x)} prompts for {n} samples")
            return list(x)

        rows = []
        for i, (pre, suf) in enumerate(zip(per_row(prefix), per_row(suffix))):
            fixed, sizes = {}, []
            for start, part in (spans or {}).items():
                ids = _ids(self.tokenizer, part, continues=start > 0)
                fixed.update({start + j: t for j, t in enumerate(ids)})
                sizes.append(f"span at {start} of {len(ids)}")
            if pre is not None:
                ids = _ids(self.tokenizer, pre)
                fixed.update(enumerate(ids))
                sizes.append(f"prefix of {len(ids)}")
            if suf is not None:
                ids = _ids(self.tokenizer, suf, continues=True)
                fixed.update({L - len(ids) + j: t for j, t in enumerate(ids)})
                sizes.append(f"suffix of {len(ids)}")
            if len(fixed) >= L:
                raise ValueError(f"prompt {i} ({', '.join(sizes)} tokens) fixes {len(fixed)} positions but the block "
                                 f"holds {L}: nothing left to generate; expected prompts of fewer than {L} tokens")
            rows.append(fixed)
        return Conditioning.from_rows(rows, L, self.module.device)

    def generate(self, num_samples: int = 1, sampler: str | None = None, steps: int = 32, seed: int = 0,
                 batch_size: int | None = None, prefix=None, suffix=None, spans: dict | None = None,
                 cond: Conditioning | None = None, progress: bool = False, config=None, **settings) -> Samples:
        """Draw `num_samples` sequences with `sampler` (default: the method's usual one) and its `settings`
        (e.g. nucleus_p=0.9, eta=0.02, self_correct=True); the whole run is seeded by `seed`.

        `sampler` may also name a variant of the workflow config's ``sampling.variants`` (e.g. gidd_sc): `config`
        is the config (a dict, a YAML path or a list of paths; None: config/config.yaml of the working directory
        when present), and `settings` override the variant's (`dlm.config.request_sampler`). Every argument is
        checked before any compute, each refusal a one-line ValueError naming it (`dlm.sampling_rules`)."""
        check_sample_args(num_samples=num_samples, steps=steps, batch_size=batch_size, seed=seed)
        sampler, settings, _ = request_sampler(sampler or DEFAULT_SAMPLER[self.algo], settings, config)
        full = resolve_settings(sampler, settings)  # unknown settings and values out of bounds fail here
        check_applies(sampler, self.algo, full)
        if cond is None:
            cond = self.conditioning(num_samples, prefix, suffix, spans)
        if cond is None and full["condition"] != "none":
            raise ValueError(f"condition = {full['condition']!r} needs a prompt: give prefix / suffix / spans (or "
                             f"cond), or condition='none'")
        batch_size = batch_size or num_samples
        g = torch.Generator(device=self.module.device).manual_seed(seed)
        tokens, before, nfe, seconds, stats = [], [], 0.0, 0.0, []
        from tqdm import tqdm

        with tqdm(total=num_samples, desc=f"{self.algo} {sampler} T={steps}", disable=not progress,
                  mininterval=5) as bar:
            for lo in range(0, num_samples, batch_size):
                n = min(batch_size, num_samples - lo)
                c = None if cond is None else Conditioning(cond.values[lo:lo + n], cond.fixed[lo:lo + n])
                t0 = time.perf_counter()
                res = run_sampler(self.module, sampler, n, steps, g, cond=c, settings=settings)
                if self.module.device.type == "cuda":
                    torch.cuda.synchronize()
                seconds += time.perf_counter() - t0
                tokens.append(res.pop("tokens").cpu())
                if "tokens_before" in res:
                    before.append(res.pop("tokens_before").cpu())
                nfe += res.pop("nfe") * n
                stats.append({k: v for k, v in res.items() if isinstance(v, (int, float))})
                bar.update(n)
        out = torch.cat(tokens)
        extra = {k: sum(s[k] * min(batch_size, num_samples - i * batch_size) for i, s in enumerate(stats)) / num_samples
                 for k in (stats[0] if stats else {})}
        if before:
            extra["tokens_before"] = torch.cat(before)
        if cond is not None:
            extra["fixed"] = cond.fixed.cpu()
        return Samples(out, self.decode(out), nfe / num_samples, seconds, extra)

    def self_correct(self, tokens, seed: int = 0, cond: Conditioning | None = None, steps: int = 128,
                     temperature: float = 0.1, t0: float = 0.01, patience: int = 32, tokens_per_step: int = 1,
                     early_stopping: bool = True) -> Samples:
        """GIDD self-correction (Rütte et al. 2025, Sec. 5) of finished sequences (ids (n, L) or texts); the
        arguments are the sampler settings sc_steps, sc_temperature, sc_t0, sc_patience, sc_tokens_per_step and
        sc_early_stopping, checked like them."""
        from dlm.sampling.self_correct import self_correct

        if self.algo not in SELF_CORRECT_ALGOS:
            raise ValueError(f"self_correct is invalid for a {self.algo!r} model: self-correction needs a denoiser "
                             f"x_theta(z_t, t); expected a model of {list(SELF_CORRECT_ALGOS)}")
        check_sample_args(seed=seed)
        for label, value in (("steps", steps), ("temperature", temperature), ("t0", t0), ("patience", patience),
                             ("tokens_per_step", tokens_per_step), ("early_stopping", early_stopping)):
            check(f"sc_{label}", value, label=label)
        if not isinstance(tokens, torch.Tensor):
            L, pad = self.length, self.module.hparams.special_ids.get("eos") or 0
            ids = [self.encode(t)[:L] if isinstance(t, str) else list(t)[:L] for t in tokens]
            tokens = torch.tensor([r + [pad] * (L - len(r)) for r in ids])
        tokens = tokens.to(self.module.device)
        g = torch.Generator(device=self.module.device).manual_seed(seed)
        t_start = time.perf_counter()
        res = self_correct(self.module, tokens, g, cond=cond or Conditioning.none(*tokens.shape, tokens.device),
                           steps=steps, temperature=temperature, t0=t0, patience=patience,
                           tokens_per_step=tokens_per_step, early_stopping=early_stopping)
        out = res.pop("tokens").cpu()
        nfe = res.pop("nfe")
        return Samples(out, self.decode(out), nfe, time.perf_counter() - t_start, res)


def load(path: str, device: str = "auto") -> Model:
    """Load a checkpoint written by the pipeline (trained, distilled or imported) for generation."""
    return Model.load(path, device)
