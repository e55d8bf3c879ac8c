"""Ancestral sampling for MDLM (Sahoo et al. 2024, Sec. 3.3 / App. B.2): `mdlm_ancestral` (cached),
`mdlm_ddpm` (a network call at every step) and semi-autoregressive generation beyond the block.

Reverse step from t to s < t at a masked position (eq. 7 with SUBS):
    q(z_s | z_t = m, x_theta) = (alpha_s - alpha_t)/(1 - alpha_t) x_theta + (1 - alpha_s)/(1 - alpha_t) m,
unmasked positions are kept (carry-over). We draw this mixture in two exact stages: first whether each
masked position unmasks (probability (alpha_s - alpha_t)/(1 - alpha_t), float64), then its token from
x_theta where it does. Both samplers consume the same random numbers in the same order, so for a seed
they return the same tokens:
  ddpm   - calls the network at every step (MDLM's `ddpm`);
  cached - calls it only at steps where some position unmasks, since x_theta is used nowhere else.
           This is exact with or without time conditioning and makes at most L calls per batch (plus
           one for the final noise removal) whatever T is. It subsumes MDLM's `ddpm_cache`, which skips a
           call while z_t is unchanged and is exact only without time conditioning.
A final noise-removal step takes the argmax at t_min for positions still masked.
"""

from __future__ import annotations

import torch

from dlm.sampling.common import Conditioning, Denoiser, sample_categorical, time_grid


def masked_steps(module, z: torch.Tensor, ts: torch.Tensor, generator: torch.Generator, x_theta: Denoiser,
                 cond: Conditioning, lazy: bool = True) -> torch.Tensor:
    """Run the MDLM reverse chain over the grid ts (float64, decreasing) from state z (n, L); `lazy`
    calls the network only at steps where a position unmasks (the draws are the same either way)."""
    mask_id = module.mask_id
    for i in range(len(ts) - 1):
        t, s = ts[i], ts[i + 1]
        a_t, a_s = module.schedule.alpha(t), module.schedule.alpha(s)
        u = torch.rand(z.shape, dtype=torch.float64, device=z.device, generator=generator)  # (n, L)
        unmask = (z == mask_id) & (u < (a_s - a_t) / (1 - a_t)) & ~cond.fixed  # (n, L)
        if unmask.any() or not lazy:
            probs = x_theta(z, t, rows=unmask)  # (m, K) at the unmasking positions; [MASK] has probability 0
        if unmask.any():
            z = z.masked_scatter(unmask, sample_categorical(probs, generator))
    return z


def noise_removal(z: torch.Tensor, mask_id: int, x_theta, t) -> torch.Tensor:
    """Most likely token wherever [MASK] remains (MDLM's final step at t_min)."""
    still = z == mask_id  # (n, L)
    if still.any():
        z = z.masked_scatter(still, x_theta(z, t, rows=still).argmax(-1))
    return z


@torch.no_grad()
def sample_mdlm(module, n: int, steps: int, generator: torch.Generator, cond: Conditioning,
                nucleus_p: float = 1.0, nucleus_rule: str = "keep_crossing", cache: bool = True, **_) -> dict:
    L = module.hparams.block_length
    z = cond.apply(torch.full((n, L), module.mask_id, dtype=torch.long, device=module.device))  # (n, L)
    ts = time_grid(steps, device=module.device)
    x_theta = Denoiser(module, nucleus_p, nucleus_rule)
    z = masked_steps(module, z, ts, generator, x_theta, cond, lazy=cache)
    z = noise_removal(z, module.mask_id, x_theta, ts[-1])
    return {"tokens": cond.apply(z), "nfe": x_theta.nfe}


@torch.no_grad()
def sample_semi_ar(module, n: int, steps: int, generator: torch.Generator, cond: Conditioning,
                   nucleus_p: float = 1.0, nucleus_rule: str = "keep_crossing", stride_length: int | None = None,
                   num_strides: int = 1, **_) -> dict:
    """Semi-autoregressive generation beyond the block (MDLM's `sample_subs_guidance`; brief mdlm_remdm.md 2.5).

    num_strides + 1 windows of length L: each starts all-[MASK] except its first L - stride_length
    positions, which hold the previous window's last L - stride_length tokens (unmasked, so SUBS carries
    them over), runs the lazy (`mdlm_ancestral`) MDLM chain and noise removal, and emits its first
    stride_length tokens; the last window is emitted whole. Output length L + num_strides * stride_length;
    its first L tokens are the first window (later windows only carry its tail). `cond` (n, L) applies to
    the first window (a prompt prefix). Deviation: each window uses the same grid as `mdlm_ancestral`
    (linspace(1, 1e-5, steps + 1) and argmax noise removal), where the original steps t = 1 - i/steps for
    i = 0..steps down to t = 0; the two differ only in the last update.
    Returns {"tokens": (n, L + num_strides * stride_length), "nfe", "windows"}.
    """
    L, mask_id, device = module.hparams.block_length, module.mask_id, module.device
    stride = L // 2 if stride_length is None else int(stride_length)
    if not 1 <= stride <= L:
        raise ValueError(f"stride_length must be in [1, {L}] (the block length), got {stride}")
    if int(num_strides) < 0:
        raise ValueError(f"num_strides must be >= 0, got {num_strides}")
    ts = time_grid(steps, device=device)
    x_theta = Denoiser(module, nucleus_p, nucleus_rule)
    keep = L - stride  # context carried from one window to the next
    pieces, prev = [], None
    for w in range(int(num_strides) + 1):
        if prev is None:
            wcond = cond
        else:
            fixed = torch.zeros((n, L), dtype=torch.bool, device=device)
            fixed[:, :keep] = True
            values = torch.zeros((n, L), dtype=torch.long, device=device)
            values[:, :keep] = prev[:, stride:]
            wcond = Conditioning(values, fixed)
        z = wcond.apply(torch.full((n, L), mask_id, dtype=torch.long, device=device))  # (n, L)
        z = masked_steps(module, z, ts, generator, x_theta, wcond, lazy=True)
        z = wcond.apply(noise_removal(z, mask_id, x_theta, ts[-1]))
        pieces.append(z if w == num_strides else z[:, :stride])
        prev = z
    return {"tokens": torch.cat(pieces, dim=1), "nfe": x_theta.nfe, "windows": int(num_strides) + 1}
