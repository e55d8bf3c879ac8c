"""One round of multi-round distillation (DUO arXiv 2506.10892 Sec. 4.3 / Alg. 1 for dcd; SDTT,
arXiv 2410.21035, for sdtt) as an ordinary training job:

    distill_round(init_ckpt, out_ckpt, data_dir, run_dir, hp, round_k)

Round k (0-based) trains the student with step dt = 2^k / T, starting from `init_ckpt` (round 0:
the base run's final.ckpt, algo udlm/duo for dcd or mdlm for sdtt; round k: round k-1's output).
The student continues from that checkpoint's raw weights and the teacher is a frozen copy of them for the
whole round (`student` / `teacher` "raw": the original DUO and SDTT code, where the teacher := the raw
student every 10k steps, DUO Alg. 1); `teacher: ema` takes the checkpoint's EMA weights as the teacher
(DUO Alg. 2, `algo.teacher_ema=True`; DUO Table 6 compares both) and `student: ema` starts the student from
them too (our earlier default). The run's EMA restarts from the student, and the output checkpoint carries
the new EMA (the paper returns theta_ema).

The run's hyper-parameters are converted from the base checkpoint: same backbone (model), noise
schedule and time conditioning, new algo and its algo_args (T, loss_type, ...; `round` is set to
round_k); optimiser and trainer settings come from `hp` (DUO/SDTT: lr 6e-5, 500 warm-up steps,
constant LR, batch 128, EMA 0.999, 10k steps per round). The output is a normal dlm checkpoint:
`dlm.algos.load_module` restores it (EMA swapped in) and it samples with duo_ancestral /
duo_greedy_tail (dcd) or mdlm_ancestral (sdtt).

A killed round resumes from its last.ckpt like any run (`dlm.train.train`); the teacher is always
rebuilt from `init_ckpt`, so a resumed round keeps the teacher it started with.
"""

from __future__ import annotations

import logging

from dlm.checkpoints.safe_load import load_checkpoint
from dlm.data.dataset import read_meta
from dlm.train import train, with_integral

log = logging.getLogger("dlm.distill")

# which base objectives each distillation method accepts (its own algo too: the previous round)
BASE_ALGOS = {"dcd": ("udlm", "duo", "dcd"), "sdtt": ("mdlm", "sdtt")}


def base_method_hparams(init_ckpt: str) -> dict:
    """The method constructor arguments stored in a dlm checkpoint (hyper_parameters.method)."""
    ckpt = load_checkpoint(init_ckpt)
    method = dict(ckpt.get("hyper_parameters", {}).get("method", {}))
    if "algo" not in method:
        raise ValueError(f"{init_ckpt}: not a dlm checkpoint (no hyper_parameters.method.algo)")
    return method


def distill_hp(base: dict, hp: dict, round_k: int) -> dict:
    """The training settings of round `round_k`: the base model's backbone, noise and time conditioning,
    `hp`'s algo (dcd | sdtt), algo_args, optimiser and trainer."""
    algo = hp.get("algo")
    if algo not in BASE_ALGOS:
        raise ValueError(f"distillation algo must be one of {sorted(BASE_ALGOS)}, got {algo!r}")
    if base["algo"] not in BASE_ALGOS[algo]:
        raise ValueError(f"{algo} distils a {' / '.join(BASE_ALGOS[algo])} model, not a {base['algo']!r} one")
    if int(round_k) < 0:
        raise ValueError(f"round must be >= 0, got {round_k}")
    for key in ("model", "noise", "time_conditioning"):
        if key in hp and hp[key] != base.get(key):
            log.info("ignoring %s=%r of the distillation settings: the student keeps the base model's %r",
                     key, hp[key], base.get(key))
    algo_args = {**(hp.get("algo_args") or {}), "round": int(round_k)}
    out = {"algo": algo, "model": base["model"], "noise": base.get("noise", {}),
           "time_conditioning": base["time_conditioning"],
           "antithetic": hp.get("antithetic", base.get("antithetic", True)), "algo_args": algo_args}
    for key in ("optim", "trainer"):
        if key in hp:
            out[key] = hp[key]
    return out


def distill_round(init_ckpt: str, out_ckpt: str, data_dir: str, run_dir: str, hp: dict, round_k: int,
                  threads: int | None = None, integral_path: str | None = None) -> dict:
    """Train distillation round `round_k` from `init_ckpt` and write `out_ckpt`; returns the run's settings. The
    student and the teacher start from the previous checkpoint's raw or EMA weights (hp.distill.student /
    teacher, both raw by default as the original code)."""
    spec = hp.get("distill") or {}
    init_weights, teacher = spec.get("student", "raw"), spec.get("teacher", "raw")
    base = base_method_hparams(init_ckpt)
    meta = read_meta(data_dir)
    for key in ("vocab_size", "block_length"):
        if int(meta[key]) != int(base[key]):
            raise ValueError(f"{init_ckpt} has {key}={base[key]} but the data {data_dir} has {meta[key]}")
    integral = integral_path if hp.get("algo") == "dcd" else None  # DCD reads the integral cache; SDTT does not
    run = with_integral(distill_hp(base, hp, round_k), integral)
    log.info("%s round %d from %s (%s): dt = 2^%d / T; student %s, teacher %s weights", run["algo"], round_k,
             init_ckpt, base["algo"], round_k, init_weights, teacher)
    train(data_dir, out_ckpt, run_dir, run, threads=threads, init_ckpt=init_ckpt, init_weights=init_weights,
          teacher_weights=teacher)
    return run
