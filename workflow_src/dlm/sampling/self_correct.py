"""GIDD self-correction (von Ruette et al. 2025, arXiv 2503.04482; brief /work/shared/reference/gidd_sedd.md
Sec. 1.10; the original's eval/self_correction.py), batched over sequences.

Given finished samples z, keep the model at a fixed small time t0 and repeat up to `steps` times:
  1. log x_theta(z, t0) (one network call); tempered p = softmax(log x_theta / temperature);
  2. propose z'_i ~ p_i independently at every position;
  3. score_i = 1[z'_i != z_i] p_i(z'_i); replace z by z' at the `tokens_per_step` best-scoring positions;
  4. accuracy = fraction of positions where the new z equals argmax x_theta(old z, t0);
  5. with early_stopping: if accuracy > the best so far (which starts at 0, as the original), reset the
     patience counter, else count up and, once it exceeds `patience`, stop and discard this proposal; if
     the proposal changes nothing, the sequence has converged: stop. Without early_stopping every step runs.
The original corrects one sequence at a time; here the batch runs together, but each sequence keeps its own
best accuracy, patience counter and stop flag, and a stopped sequence is no longer fed to the network nor
changed -- so every sequence follows exactly the rule of the per-sequence original (only the random
numbers differ). Fixed (conditioning) positions are never proposed.

Works for any module with `denoise(z, t)` (gidd, mdlm, udlm, duo). Note that MDLM's SUBS carry-over makes
x_theta one-hot on unmasked inputs, so MDLM samples converge at the first step, unchanged.

Deviations: the initial accuracy (init_acc, computed on the input) and the first step share one network
call (same z, same t0: the original called the network twice); float64 proposals with inverse-CDF draws.

Returns {"tokens": (n, L), "nfe": batched network calls, "sc_steps_mean": correction steps per sequence
(network evaluations in the loop, the discarded / converged one included), "sc_changes_mean": positions
that differ from the input, "sc_init_acc", "sc_final_acc" (accuracy of the last step taken, as the
original), "sc_converged", "sc_early_stopped" (fractions of sequences)}, all means over sequences.
"""

from __future__ import annotations

import torch

from dlm.sampling.common import Conditioning, Denoiser, conditioning_or_none, sample_categorical


@torch.no_grad()
def self_correct(module, tokens: torch.Tensor, generator: torch.Generator, cond: Conditioning | None = None,
                 steps: int = 128, temperature: float = 0.1, t0: float = 0.01, patience: int = 32,
                 tokens_per_step: int = 1, early_stopping: bool = True) -> dict:
    if temperature <= 0:
        raise ValueError(f"self-correction temperature must be > 0, got {temperature}")
    if tokens_per_step < 1:
        raise ValueError(f"tokens_per_step must be >= 1, got {tokens_per_step}")
    n, L = tokens.shape
    device = tokens.device
    cond = conditioning_or_none(cond, n, L, device)
    k = min(int(tokens_per_step), L)
    x_theta = Denoiser(module)

    z_init = cond.apply(tokens)  # (n, L)
    z = z_init.clone()
    logp = x_theta.log_probs(z, t0)  # (n, L, K), reused by the first step
    init_acc = (z == logp.argmax(-1)).double().mean(-1)  # (n,)

    active = torch.ones(n, dtype=torch.bool, device=device)
    best = torch.zeros(n, dtype=torch.float64, device=device)  # best accuracy so far (starts at 0)
    waited = torch.zeros(n, dtype=torch.long, device=device)  # patience counter
    n_steps = torch.zeros(n, dtype=torch.long, device=device)
    final_acc = init_acc.clone()
    converged = torch.zeros(n, dtype=torch.bool, device=device)
    early = torch.zeros(n, dtype=torch.bool, device=device)

    for i in range(steps):
        idx = active.nonzero().squeeze(-1)  # (m,) sequences still running
        if len(idx) == 0:
            break
        z_a, fixed = z[idx], cond.fixed[idx]  # (m, L)
        if i > 0:
            logp = x_theta.log_probs(z_a, t0)  # (m, L, K)
        p = torch.softmax(logp.double() / temperature, dim=-1)  # (m, L, K) tempered
        prop = torch.where(fixed, z_a, sample_categorical(p, generator))  # (m, L) proposals
        score = (prop != z_a) * p.gather(-1, prop[..., None]).squeeze(-1)  # (m, L)
        top = score.topk(k, dim=-1).indices  # (m, k)
        z_new = z_a.scatter(-1, top, prop.gather(-1, top))  # (m, L); zero-score picks change nothing
        acc = (z_new == logp.argmax(-1)).double().mean(-1)  # (m,)
        n_steps[idx] += 1
        final_acc[idx] = acc
        if not early_stopping:
            z[idx] = z_new
            continue
        better = acc > best[idx]
        best[idx] = torch.where(better, acc, best[idx])
        waited[idx] = torch.where(better, 0, waited[idx] + 1)
        stop_early = waited[idx] > patience  # stop, discarding this proposal
        done = ~stop_early & (z_new == z_a).all(-1)  # the proposal changes nothing: converged
        keep = ~stop_early & ~done
        z[idx[keep]] = z_new[keep]
        early[idx[stop_early]] = True
        converged[idx[done]] = True
        active[idx[stop_early | done]] = False

    return {"tokens": z, "nfe": x_theta.nfe, "sc_steps_mean": float(n_steps.double().mean()),
            "sc_changes_mean": float((z != z_init).double().sum(-1).mean()),
            "sc_init_acc": float(init_acc.mean()), "sc_final_acc": float(final_acc.mean()),
            "sc_converged": float(converged.double().mean()), "sc_early_stopped": float(early.double().mean())}
