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
call (same z, same t0: the original called the network twice); the proposal is drawn exactly, in float64,
but lazily (`tempered_proposal`): a position whose draw is certain to be its argmax (the uniform falls
below a lower bound of the argmax's probability) costs no pass over the vocabulary.

Returns {"tokens": (n, L), "nfe": batched network calls, "sc_steps_mean": correction steps per sequence
(network evaluations in the loop, the discarded / converged one included), "sc_changes_mean": positions
that differ from the input, "sc_init_acc", "sc_final_acc" (accuracy of the last step taken, as the
original), "sc_converged", "sc_early_stopped" (fractions of sequences)}, all means over sequences.
"""

from __future__ import annotations

import torch

from dlm.sampling.common import Conditioning, Denoiser, conditioning_or_none


def _block_size(K: int, most: int = 64) -> int:
    """The largest divisor of K that is at most `most` (K = 2048: 64; GPT-2's 50258: 26)."""
    return max(b for b in range(1, min(K, most) + 1) if K % b == 0)


def tempered_proposal(logp: torch.Tensor, z: torch.Tensor, fixed: torch.Tensor, temperature: float,
                      generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One exact draw per position from p = softmax(logp / temperature) (step 2 above), lazily.

    logp (m, L, K) log-probabilities; z (m, L) current tokens; fixed (m, L) positions that keep z.
    Returns prop (m, L), prob (m, L) float64 = p(prop) wherever prop != z (0 where prop == z, where the
    score needs no probability), and arg (m, L) = argmax logp.

    Inverse CDF with the argmax first: with one uniform u, prop = argmax iff u < q = 1 / (1 + tail),
    tail = sum_{k != argmax} w_k, w_k = exp((logp_k - max) / T); otherwise prop is drawn from the tail with
    target (u - q)(1 + tail) in [0, tail). Since tail <= (K - 1) exp((second - max) / T), a position with
    u (1 + that bound) < 1 draws the argmax for certain and costs no pass over K; the others, and those whose
    argmax differs from z (their score needs q), get w (float32: each weight exact to 1e-7 relative, none
    truncated above 1e-38) summed in blocks of B; the tail draw picks a block by the float64 cumulative sum of
    the block sums, then a token by the float64 cumulative sum inside that block, so no token's mass is lost
    to rounding (the reason for float64 draws). Same distribution as a float64 inverse-CDF draw over the
    whole vocabulary (tests/test_samplers_uniform.py).
    """
    m, L, K = logp.shape
    top2 = logp.topk(2, dim=-1)  # (m, L, 2)
    best, arg = top2.values[..., 0], top2.indices[..., 0]  # (m, L)
    u = torch.rand((m, L), dtype=torch.float64, device=logp.device, generator=generator)  # (m, L)
    bound = (K - 1) * torch.exp((top2.values[..., 1].double() - best.double()) / temperature)  # >= tail
    sure = u * (1 + bound) < 1  # u < 1 / (1 + bound) <= q
    prop = torch.where(fixed, z, arg).view(-1)  # (m L,)
    prob = torch.zeros(m * L, dtype=torch.float64, device=logp.device)
    need = (~fixed & (~sure | (arg != z))).view(-1)  # (m L,)
    r = int(need.sum())
    if r == 0:
        return prop.view(m, L), prob.view(m, L), arg
    # few rows: gather them; many (an unsure model): work on all rows in place of a gathering copy
    rows = need.nonzero().squeeze(-1) if 2 * r < m * L else torch.arange(m * L, device=logp.device)
    r = rows.numel()
    flat = logp.view(m * L, K)
    lp = flat[rows] if r < m * L else flat  # (r, K)
    B = _block_size(K)
    w = (lp - best.view(-1)[rows][:, None]).mul_(1.0 / temperature).exp_()  # (r, K) float32, argmax = 1
    w.scatter_(-1, arg.view(-1)[rows][:, None], 0.0)  # the tail's weights only
    blocks = w.view(r, K // B, B).sum(-1).double()  # (r, K/B)
    tail = blocks.sum(-1)  # (r,)
    q = 1.0 / (1.0 + tail)
    ur = u.view(-1)[rows]
    chosen, p_chosen = arg.view(-1)[rows], q.clone()  # (r,)
    t_rows = (ur >= q).nonzero().squeeze(-1)  # rows whose draw falls in the tail
    if t_rows.numel():
        target = ((ur[t_rows] - q[t_rows]) * (1.0 + tail[t_rows]))[:, None]  # (t, 1) in [0, tail)
        bcdf = blocks[t_rows].cumsum(-1)  # (t, K/B)
        bi = torch.searchsorted(bcdf, torch.minimum(target, bcdf[:, -1:] * (1 - 1e-12)), right=True)
        bi = bi.clamp_max(K // B - 1)  # (t, 1)
        rest = target - (bcdf.gather(-1, bi) - blocks[t_rows].gather(-1, bi))  # (t, 1) mass into the block
        inner = w.view(r, K // B, B)[t_rows, bi.squeeze(-1)].double().cumsum(-1)  # (t, B)
        j = torch.searchsorted(inner, torch.minimum(rest, inner[:, -1:] * (1 - 1e-12)), right=True)
        idx = (bi * B + j.clamp_max(B - 1)).squeeze(-1)  # (t,)
        chosen[t_rows] = idx
        p_chosen[t_rows] = w[t_rows].gather(-1, idx[:, None]).squeeze(-1).double() * q[t_rows]  # w / (1 + tail)
    keep = need[rows]  # (r,) the rows that were gathered only to avoid a copy keep their values
    prop[rows[keep]] = chosen[keep]
    prob[rows[keep]] = p_chosen[keep]
    return prop.view(m, L), prob.view(m, L), arg


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
        prop, prob, arg = tempered_proposal(logp, z_a, fixed, temperature, generator)  # (m, L) each
        score = (prop != z_a) * prob  # (m, L)
        top = score.topk(k, dim=-1).indices  # (m, k)
        z_new = z_a.scatter(-1, top, prop.gather(-1, top))  # (m, L); zero-score picks change nothing
        acc = (z_new == arg).double().mean(-1)  # (m,)
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
