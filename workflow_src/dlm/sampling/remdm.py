"""ReMDM remasking samplers on a frozen MDLM (SUBS) model (Wang et al. 2025, arXiv 2503.00307; brief
mdlm_remdm.md Sec. 3): `remdm_cap`, `remdm_rescale`, `remdm_conf`, `remdm_loop`, the forward-backward
corrector `remdm_fb` and the DFM corrector `remdm_dfm` (Gat et al. 2024).

Remasking posterior (brief 3.1), for s < t and a remasking probability sigma_t in [0, sigma_max]:
    z_t != m:  q(z_s | z_t, x) = Cat((1 - sigma_t) x + sigma_t m)          (remask with prob. sigma_t)
    z_t  = m:  q(z_s | z_t, x) = Cat( (alpha_s - (1 - sigma_t) alpha_t)/(1 - alpha_t) x
                                      + (1 - alpha_s - sigma_t alpha_t)/(1 - alpha_t) m ),
    sigma_max = min(1, (1 - alpha_s)/alpha_t)   (1 where alpha_t = 0),
with x = x_theta(z_t) (nucleus-filtered). sigma_t = 0 is MDLM. Under SUBS x_theta is one-hot at an
unmasked token, so "keep with 1 - sigma, else remask" is the exact unmasked branch.

Schedule. The original code hard-codes alpha_t = 1 - t (the loglinear schedule with its eps dropped);
we use the module's schedule, alpha_t = 1 - (1 - eps) t for MDLM's loglinear. This is the original
sampler on the time axis t' = (1 - eps) t: the MDLM unmask probability (alpha_s - alpha_t)/(1 - alpha_t)
= (t - s)/t is identical, and sigma_max, the FB/DFM sigmas and the remask rates differ by O(eps) (at
t = 1, alpha_1 = eps > 0 replaces the code's alpha_1 = 0 special case). Using the schedule keeps every
sampler of a model on one set of marginals and keeps eta = 0 bit-identical to `mdlm_ddpm`.

Random numbers: each step draws the unmask uniforms, then the new tokens, exactly as
`mdlm.masked_steps`; the remask uniforms are drawn last and only when some sigma > 0. So with sigma = 0
everywhere (cap/rescale with eta = 0) the tokens equal `mdlm_ancestral`/`mdlm_ddpm` for the same seed.

Network calls: x_theta is computed only at steps where some position unmasks (the remask branch does
not use it), which is exact with or without time conditioning and subsumes the code's reuse of x_theta
while z_t is unchanged (brief 3.3); with remasking, positions unmask at most steps, so NFE ~ T.
Remasking never touches conditioning positions. The final step is MDLM's noise removal (argmax wherever
[MASK] remains).
"""

from __future__ import annotations

import math

import torch

from dlm.sampling.common import Conditioning, Denoiser, sample_categorical, time_grid
from dlm.sampling.mdlm import noise_removal

STRATEGIES = ("cap", "rescale", "conf", "loop", "fb", "dfm")
LOOP_BOUNDARIES = ("original", "continuous")


def sigma_max(a_t: torch.Tensor, a_s: torch.Tensor) -> torch.Tensor:
    """The largest valid remasking probability min(1, (1 - alpha_s)/alpha_t), 1 at alpha_t = 0 (brief 3.1)."""
    if float(a_t) <= 0.0:
        return torch.ones_like(a_t)
    return torch.clamp((1 - a_s) / a_t, max=1.0)


def sigma_t(strategy: str, a_t: torch.Tensor, a_s: torch.Tensor, eta: float = 0.0,
            confidence: torch.Tensor | None = None, in_loop: bool = False, b_t: float = 0.0
            ) -> tuple[torch.Tensor, torch.Tensor]:
    """(sigma_t, sigma_max) of one step t -> s for a ReMDM strategy (brief 3.2); a_t, a_s float64 scalars.

      cap:      min(eta, sigma_max)
      rescale:  eta * sigma_max                                         (eta in [0, 1])
      conf:     sigma_max * softmax_l(confidence) per position (n, L); confidence = -psi of the token a
                position was unmasked to, -inf at masked positions (which get sigma = 0)
      loop:     eta in the loop phase (in_loop), else 0
      fb:       (alpha_s - alpha_t)/alpha_t                            (1 at alpha_t = 0)
      dfm:      b_t (alpha_s - alpha_t)/alpha_t                        (DFM's b_t = a_t - 1, Prop. 2)

    FB, DFM and loop are not clipped at sigma_max, as in the original: FB exceeds it on the last step of a
    uniform grid (s < t - s), where it remasks a fraction (alpha_s - alpha_t)/alpha_t ~ 1/(T - 1) of the
    tokens, which the final noise removal then fills by argmax; there (and for a loop eta > (1 - alpha_on) /
    alpha_on) the unmask probability of a [MASK] exceeds 1, and `remdm_update` clips it at 1, which is what
    the original's categorical draw with a negative [MASK] weight does. The conf scores are float64 (the code
    stores them in bfloat16).
    """
    smax = sigma_max(a_t, a_s)
    if strategy == "cap":
        sig = torch.clamp(torch.full_like(smax, eta), max=float(smax))
    elif strategy == "rescale":
        sig = eta * smax
    elif strategy == "conf":
        if confidence is None:
            raise ValueError("remdm conf needs the per-position confidence")
        w = torch.softmax(confidence.double(), dim=-1)  # (n, L); rows of all -inf give NaN
        sig = smax * torch.nan_to_num(w, nan=0.0)
    elif strategy == "loop":
        sig = torch.full_like(smax, eta) if in_loop else torch.zeros_like(smax)
    elif strategy in ("fb", "dfm"):
        ratio = torch.ones_like(smax) if float(a_t) <= 0.0 else (a_s - a_t) / a_t
        scale = 1.0 if strategy == "fb" else b_t
        sig = scale * ratio
    else:
        raise ValueError(f"unknown ReMDM strategy {strategy!r}; expected one of {STRATEGIES}")
    return sig, smax


def remdm_update(z: torch.Tensor, x_theta, t, a_t: torch.Tensor, a_s: torch.Tensor, sigma: torch.Tensor,
                 generator: torch.Generator, cond: Conditioning, mask_id: int):
    """One draw of the remasking posterior (brief 3.1). z (n, L); x_theta(z, t, rows) -> (m, K) float64 probs;
    sigma a scalar or (n, L). Returns (z_s, unmasked (n, L) bool, remasked (n, L) bool, psi (k,) = x_theta of
    the k tokens just drawn, row-major over `unmasked`).

    Draw order (as `mdlm.masked_steps`): unmask uniforms (n, L), the new tokens, then -- only if some
    sigma > 0 -- the remask uniforms (n, L). x_theta is called only when some position unmasks: the
    remask branch does not need it (x_theta is one-hot at an unmasked token under SUBS), so this is exact
    with or without time conditioning (like `mdlm_ancestral`).
    """
    free = ~cond.fixed
    masked = (z == mask_id) & free  # (n, L)
    clean = (z != mask_id) & free  # (n, L) remask candidates: unmasked at time t
    u = torch.rand(z.shape, dtype=torch.float64, device=z.device, generator=generator)  # (n, L)
    p_unmask = torch.clamp((a_s - a_t + sigma * a_t) / (1 - a_t), 0.0, 1.0)  # sigma = 0: MDLM's (a_s - a_t)/(1 - a_t)
    unmask = masked & (u < p_unmask)  # (n, L)
    psi = torch.zeros(0, dtype=torch.float64, device=z.device)
    if unmask.any():
        probs = x_theta(z, t, rows=unmask)  # (k, K)
        new = sample_categorical(probs, generator)  # (k,)
        psi = probs.gather(-1, new[:, None]).squeeze(-1)
        z = z.masked_scatter(unmask, new)
    remask = torch.zeros_like(unmask)
    if bool((sigma > 0).any()):
        v = torch.rand(z.shape, dtype=torch.float64, device=z.device, generator=generator)  # (n, L)
        remask = clean & (v < sigma)
        z = z.masked_fill(remask, mask_id)
    return cond.apply(z), unmask, remask, psi


def loop_alpha(t: float, a_1: float, t_on: float, t_off: float, alpha_on: float, phase_of: float | None = None
               ) -> float:
    """ReMDM-loop's piecewise-linear alpha(t) (brief 3.2): from alpha_1 (the schedule's alpha(1); 0 in the
    code) at t = 1 up to alpha_on at t_on, constant alpha_on on (t_off, t_on], then up to 1 at t = 0.

    `phase_of`: take the phase (its line) of that time instead of t's own. The original decides a step's phase
    by its start time and evaluates both ends on that phase's line (`boundary: original`), so the step that
    crosses t_on ends above alpha_on (the phase-1 line extended) and the step that crosses t_off is a loop
    step (alpha stays alpha_on); the next one starts on the phase-3 line above alpha_on."""
    ref = t if phase_of is None else phase_of
    if ref > t_on:
        return a_1 + (alpha_on - a_1) * (1 - t) / (1 - t_on)
    if ref > t_off:
        return alpha_on
    return 1 - t * (1 - alpha_on) / t_off


def time_at_alpha(schedule, alpha: float) -> torch.Tensor:
    """The schedule time t with schedule.alpha(t) = alpha (bisection; alpha is decreasing in t). Used to
    feed a time-conditioned network during ReMDM-loop, whose alpha(t) is not the schedule's."""
    lo, hi = torch.tensor(0.0, dtype=torch.float64), torch.tensor(1.0, dtype=torch.float64)
    for _ in range(60):
        mid = (lo + hi) / 2
        if float(schedule.alpha(mid)) > alpha:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2


def _check(strategy: str, eta: float, t_on: float, t_off: float, alpha_on: float) -> None:
    if strategy not in STRATEGIES[:-1]:
        raise ValueError(f"unknown ReMDM strategy {strategy!r}; expected one of {STRATEGIES[:-1]}")
    if eta < 0 or (strategy == "rescale" and eta > 1):
        raise ValueError(f"ReMDM eta must be in [0, 1] for rescale and >= 0 otherwise, got {eta}")
    if strategy == "loop" and not (0 < t_off < t_on < 1 and 0 < alpha_on < 1):
        raise ValueError(f"ReMDM loop needs 0 < t_off < t_on < 1 and 0 < alpha_on < 1, got t_on={t_on}, "
                         f"t_off={t_off}, alpha_on={alpha_on}")


@torch.no_grad()
def sample_remdm(module, n: int, steps: int, generator: torch.Generator, cond: Conditioning,
                 nucleus_p: float = 1.0, nucleus_rule: str = "keep_crossing", strategy: str = "cap",
                 eta: float = 0.0, t_on: float = 0.55, t_off: float = 0.05, alpha_on: float = 0.9,
                 boundary: str = "original", **_) -> dict:
    """ReMDM on the grid linspace(1, 1e-5, steps + 1) with the sigma_t of `strategy` (brief 3.2), then
    MDLM's noise removal. Returns {"tokens": (n, L), "nfe", "remasked": remask events in the batch}.

    Loop `boundary`: "original" -- a step's phase is that of its start time t, both alphas on that phase's
    line (`loop_alpha(..., phase_of=t)`): the step across t_on ends at (1 - s) alpha_on / (1 - t_on), above
    alpha_on, and the loop then holds alpha_on (the extra tokens drift back to 1 - alpha_on masked); the step
    across t_off keeps alpha_on, and the first phase-3 step starts at 1 - t (1 - alpha_on) / t_off > alpha_on,
    so the masked fraction is t_off / t' (t' <= t_off its start) times the schedule's until the final noise
    removal fills it by argmax. Both are O(1/T) (T = 1024: < 0.2% of alpha and 2% more argmax-filled tokens).
    "continuous" (ours) evaluates every time on its own phase's line, so alpha is continuous."""
    _check(strategy, eta, t_on, t_off, alpha_on)
    if boundary not in LOOP_BOUNDARIES:
        raise ValueError(f"ReMDM loop boundary must be one of {LOOP_BOUNDARIES}, got {boundary!r}")
    L, mask_id, device = module.hparams.block_length, module.mask_id, module.device
    sched = module.schedule
    z = cond.apply(torch.full((n, L), mask_id, dtype=torch.long, device=device))  # (n, L)
    ts = time_grid(steps, device="cpu")  # scalars on the host; the draws live on z's device
    x_theta = Denoiser(module, nucleus_p, nucleus_rule)
    tc = module.hparams.time_conditioning
    a_1 = float(sched.alpha(ts[0]))
    confidence = torch.full((n, L), -math.inf, dtype=torch.float64, device=device)  # (n, L) conf only
    remasked = 0

    def alphas(t, phase_of=None):
        """(alpha, network time) at grid time t: the schedule's, or ReMDM-loop's own alpha curve (on the line
        of `phase_of`'s phase with boundary "original")."""
        if strategy != "loop":
            return sched.alpha(t), t
        a = loop_alpha(float(t), a_1, t_on, t_off, alpha_on, phase_of)
        return torch.tensor(a, dtype=torch.float64), (time_at_alpha(sched, min(a, 1.0)) if tc else t)

    for i in range(steps):
        start = float(ts[i]) if boundary == "original" else None
        (a_t, t_net), (a_s, _) = alphas(ts[i], start), alphas(ts[i + 1], start)
        in_loop = strategy == "loop" and t_off < float(ts[i]) <= t_on
        sig, _ = sigma_t(strategy, a_t, a_s, eta=eta, confidence=confidence, in_loop=in_loop)
        z, unmask, remask, psi = remdm_update(z, x_theta, t_net, a_t.to(device), a_s.to(device), sig.to(device),
                                              generator, cond, mask_id)
        if strategy == "conf":  # c = -psi of the token just drawn; -inf again once remasked
            confidence[unmask] = -psi
            confidence[remask] = -math.inf
        remasked += int(remask.sum())
    z = noise_removal(z, mask_id, x_theta, alphas(ts[-1])[1])
    return {"tokens": cond.apply(z), "nfe": x_theta.nfe, "remasked": remasked}


def dfm_coefficients(t: float) -> tuple[float, float]:
    """DFM corrector schedule (Gat et al. 2024; brief 3.2): a_t = 1 + 10 t^(1/4) (1 - t)^(1/4), b_t = a_t - 1."""
    a = 1.0 + 10.0 * t ** 0.25 * (1.0 - t) ** 0.25
    return a, a - 1.0


@torch.no_grad()
def sample_dfm(module, n: int, steps: int, generator: torch.Generator, cond: Conditioning,
               nucleus_p: float = 1.0, nucleus_rule: str = "keep_crossing", **_) -> dict:
    """DFM corrector sampling (`_dfm_caching_update`, brief 3.2) with the adaptive step
        dt = min(1/T, 1 / (a_t/t + b_t/(1 - t)))     (the first step, at t = 1, is a plain dt = 1/T),
    which keeps both probabilities below 1: masked -> unmask with a_t (alpha_s - alpha_t)/(1 - alpha_t),
    unmasked -> remask with b_t (alpha_s/alpha_t - 1), i.e. ReMDM with sigma = b_t (alpha_s - alpha_t)/alpha_t
    (Prop. 2). It runs while t > (1 - 1e-5)/T, hence at least T steps, then removes the noise at the last t.
    Returns {"tokens", "nfe", "remasked", "steps_taken": the number of steps taken (>= T)}.
    """
    T = int(steps)
    L, mask_id, device = module.hparams.block_length, module.mask_id, module.device
    sched = module.schedule
    z = cond.apply(torch.full((n, L), mask_id, dtype=torch.long, device=device))  # (n, L)
    x_theta = Denoiser(module, nucleus_p, nucleus_rule)
    t, taken, remasked = 1.0, 0, 0
    while t > (1.0 - 1e-5) / T:
        a, b = dfm_coefficients(t)
        dt = 1.0 / T if taken == 0 else min(1.0 / T, 1.0 / (a / t + b / (1.0 - t)))
        s = max(t - dt, 0.0)
        tt, st = torch.tensor(t, dtype=torch.float64), torch.tensor(s, dtype=torch.float64)
        a_t, a_s = sched.alpha(tt), sched.alpha(st)
        sig, _ = sigma_t("dfm", a_t, a_s, b_t=b)
        z, _, remask, _ = remdm_update(z, x_theta, tt, a_t.to(device), a_s.to(device), sig.to(device), generator,
                                       cond, mask_id)
        remasked += int(remask.sum())
        t, taken = s, taken + 1
    z = noise_removal(z, mask_id, x_theta, torch.tensor(t, dtype=torch.float64))
    return {"tokens": cond.apply(z), "nfe": x_theta.nfe, "remasked": remasked, "steps_taken": taken}
