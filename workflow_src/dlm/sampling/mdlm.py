"""Ancestral sampling for MDLM (Sahoo et al. 2024, Sec. 3.3 / App. B.2).

Reverse step from t to s < t at a masked position (eq. 7 with SUBS):
    q(z_s | z_t = m, x_theta) = (alpha_s - alpha_t)/(1 - alpha_t) x_theta + (1 - alpha_s)/(1 - alpha_t) m,
unmasked positions are kept (carry-over). We draw this mixture in two exact stages: first whether each
masked position unmasks (probability (alpha_s - alpha_t)/(1 - alpha_t), float64), then its token from
x_theta only where it does. The network is therefore called only at steps where some position
unmasks -- which subsumes MDLM's "ddpm_cache" (x_theta reused while z_t is unchanged): at most L calls
per sequence batch whatever T is. A final noise-removal step takes the argmax at t_min for positions
still masked.
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
    x_theta = Denoiser(module, nucleus_p)
    for i in range(steps):
        t, s = ts[i], ts[i + 1]
        a_t, a_s = module.schedule.alpha(t), module.schedule.alpha(s)
        u = torch.rand(z.shape, dtype=torch.float64, device=device, generator=generator)  # (n, L)
        unmask = (z == mask_id) & (u < (a_s - a_t) / (1 - a_t))  # (n, L)
        if unmask.any():
            probs = x_theta(z, t)  # (n, L, K); [MASK] has probability 0 under SUBS
            z = z.masked_scatter(unmask, sample_categorical(probs[unmask], generator))
    # noise removal: most likely token wherever [MASK] remains
    still = z == mask_id
    if still.any():
        z = torch.where(still, x_theta(z, ts[-1]).argmax(-1), z)
    return {"tokens": z, "nfe": x_theta.nfe}
