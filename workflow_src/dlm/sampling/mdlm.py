"""Ancestral sampling for MDLM (Sahoo et al. 2024, Sec. 3.3 / App. B.2), with the p_theta cache.

Reverse step from t to s < t at a masked position (eq. 7 with SUBS):
    q(z_s | z_t = m, x_theta) = (alpha_s - alpha_t)/(1 - alpha_t) x_theta + (1 - alpha_s)/(1 - alpha_t) m,
unmasked positions are kept. Without time conditioning x_theta depends only on z_t, so it is reused
exactly while z_t does not change ("ddpm_cache"); network calls are therefore at most L + 1.
A final noise-removal step takes the argmax at t_min for positions still masked.
"""

from __future__ import annotations

import torch

from dlm.sampling.common import Denoiser, sample_categorical, time_grid


@torch.no_grad()
def sample_mdlm(module, n: int, steps: int, generator: torch.Generator, nucleus_p: float = 1.0, **_) -> dict:
    L, mask_id = module.hparams.block_length, module.mask_id
    device = module.device
    z = torch.full((n, L), mask_id, dtype=torch.long, device=device)  # (n, L) all masked
    ts = time_grid(steps, device=device)
    cached = None
    cacheable = not module.hparams.time_conditioning
    x_theta = Denoiser(module, nucleus_p)

    for i in range(steps):
        t, s = ts[i], ts[i + 1]
        a_t, a_s = module.schedule.alpha(t), module.schedule.alpha(s)
        probs = cached if cached is not None else x_theta(z, t)  # (n, L, K)
        w = probs * (a_s - a_t) / (1 - a_t)  # unmask into a real token
        w[..., mask_id] = (1 - a_s) / (1 - a_t)  # stay masked
        z_new = torch.where(z == mask_id, sample_categorical(w, generator), z)
        cached = probs if (cacheable and torch.equal(z_new, z)) else None
        z = z_new
    # noise removal: most likely token wherever [MASK] remains
    if (z == mask_id).any():
        probs = cached if cached is not None else x_theta(z, ts[-1])
        z = torch.where(z == mask_id, probs.argmax(-1), z)
    return {"tokens": z, "nfe": x_theta.nfe}
