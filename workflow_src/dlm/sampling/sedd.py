"""SEDD samplers (Lou, Meng & Ermon 2024, arXiv 2310.16834; brief gidd_sedd.md 3.6, mdlm_remdm.md 2.4):
`sedd_analytic` (Tweedie tau-leaping) and `sedd_euler`, for SEDD models of either graph (concrete scores from
`module.log_score`) and for MDLM/SUBS models (scores converted from x_theta). The uniform graph's steps are at
the end of this module (`uniform_step_weights`); what follows is the absorbing graph.

Scores at a masked position (the only positions that move: an unmasked token has no reverse rate under
the absorbing graph, so it is carried over). With s_y ~ p_t(y)/p_t(m) for the clean tokens y != m and
S = sum_{y != m} s_y:
  SEDD:  log s_y = module.log_score (SEDD Sec. 3.5 absorb scaling);
  SUBS:  s_y = x_theta(y) / expm1(sigma_t)   (MDLM's `get_score`, brief 2.4), so S = 1/expm1(sigma_t).

Analytic step t -> s, dsigma = sigma_t - sigma_s (brief 2.4 / gidd_sedd 3.6): the staggered score
e^{dsigma} s (+ (1 - e^{dsigma}) S on the mask entry) times the transposed transition gives
    unmask to y:  (e^{dsigma} - 1) s_y,       stay masked:  1 - (e^{dsigma} - 1) S,
which already sum to 1. We draw it in two stages, like `mdlm.masked_steps`: unmask with probability
P = (e^{dsigma} - 1) S (clipped to [0, 1]; the original's Gumbel race never picks a negative weight
either), then the token from pi = s / S. For a SUBS model P = (e^{dsigma} - 1)/(e^{sigma_t} - 1)
= (alpha_s - alpha_t)/(1 - alpha_t), MDLM's exact posterior.
Euler step (tau-leaping with the reverse rate sigma'(t) Q(m <- y) s_y): P = (t - s) sigma'(t) S, same pi.
Final denoise (SEDD's `noise_removal`): the analytic step with dsigma = sigma(t_min), mask column dropped,
i.e. every remaining [MASK] draws (not argmax) from pi at t_min.

Everything after the network is float64. Nucleus filtering (off in the papers' SEDD runs) applies to pi
and leaves P unchanged. For a SUBS model P needs no network call (S = 1/expm1(sigma_t)), so x_theta is
computed only at steps where a position unmasks (exact; the MDLM code's `analytic` calls the network at
every step, NFE T + 1; the samples have the same law).
"""

from __future__ import annotations

import torch

from dlm.algos.sedd import log_expm1
from dlm.sampling.common import Conditioning, Denoiser, sample_categorical, time_grid, top_p_filter

PREDICTORS = ("analytic", "euler")


def subs_log_score(probs: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """log s_y = log x_theta(y) - log expm1(sigma_t) at a masked position (brief 2.4); probs (n, L, K)."""
    return probs.double().log() - log_expm1(sigma.double())


def masked_score_summary(log_s: torch.Tensor, mask_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(log S (...), pi (..., K)) from log scores (..., K): S = sum_{y != m} s_y and pi = s / S, with
    the mask column (the current token at a masked position) excluded. float64, stable in log space."""
    log_s = log_s.double().clone()
    log_s[..., mask_id] = -torch.inf
    log_S = torch.logsumexp(log_s, dim=-1)  # (n, L)
    return log_S, torch.exp(log_s - log_S[..., None])


def unmask_probability(predictor: str, log_S: torch.Tensor, schedule, t: torch.Tensor, s: torch.Tensor
                       ) -> torch.Tensor:
    """P(z_s != m | z_t = m) of one step (n, L): analytic (e^{dsigma} - 1) S or Euler (t - s) sigma'(t) S."""
    a_t, a_s = schedule.alpha(t), schedule.alpha(s)
    if predictor == "analytic":
        rate = (a_s - a_t) / a_t  # e^{dsigma} - 1 exactly, dsigma = sigma_t - sigma_s = log(alpha_s / alpha_t)
    elif predictor == "euler":
        rate = (t - s) * (-schedule.dalpha(t) / a_t)  # dt * sigma'(t)
    else:
        raise ValueError(f"unknown SEDD predictor {predictor!r}; expected one of {PREDICTORS}")
    return torch.clamp(rate.double().to(log_S.device) * log_S.exp(), 0.0, 1.0)


class ScoreModel:
    """The masked-position score summary (log S, pi) of a SEDD or SUBS model at time t, counting network calls.

    For SUBS, log S = -log expm1(sigma_t) needs no network call (x_theta sums to 1, also after the nucleus
    filter), so `log_S` is analytic and `pi` calls the network only when asked, i.e. only at steps where
    some position unmasks (exact with or without time conditioning, like `mdlm_ancestral`). For SEDD both
    come from one call of `module.log_score`, made at every step, on the masked positions only (the others
    never change); log S is a float32 log-sum-exp (the unmask draw itself is float64), and pi is built in
    float64 only at the positions that unmask.
    """

    def __init__(self, module, nucleus_p: float, nucleus_rule: str):
        self.module, self.mask_id = module, module.mask_id
        self.sedd = hasattr(module, "log_score")
        self.x_theta = Denoiser(module, nucleus_p, nucleus_rule)  # SUBS path; counts its calls
        self.nucleus_p, self.nucleus_rule = nucleus_p, nucleus_rule
        self.sedd_calls, self._cached = 0, None

    @property
    def nfe(self) -> int:
        return self.x_theta.nfe + self.sedd_calls

    def log_S(self, z: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """log S (n, L) float64 at time t (a float64 scalar); for SEDD -inf where z is not [MASK]."""
        if not self.sedd:
            sigma = self.module.schedule.sigma(t.double())
            return (-log_expm1(sigma)).to(z.device).expand(z.shape)
        self.sedd_calls += 1
        tt = torch.full((z.shape[0],), float(t), device=z.device)
        masked = z == self.mask_id  # (n, L)
        log_s = self.module.log_score(z, tt, masked).clone()  # (m, K) at the masked positions
        log_s[:, self.mask_id] = -torch.inf  # the current token's column
        log_S = torch.full(z.shape, -torch.inf, dtype=torch.float64, device=z.device)
        log_S[masked] = torch.logsumexp(log_s, dim=-1).double()
        self._cached = (masked, log_s)
        return log_S

    def pi(self, z: torch.Tensor, t: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        """pi = s / S (m, K) float64 at the [MASK] positions `rows` (n, L) bool, nucleus-filtered, mask column 0;
        for SEDD from the scores of the last log_S."""
        if self.sedd:
            masked, log_s = self._cached
            _, out = masked_score_summary(log_s[rows[masked]], self.mask_id)  # (m, K)
            return top_p_filter(out, self.nucleus_p, self.nucleus_rule)
        sigma = self.module.schedule.sigma(t.double()).to(z.device)
        return masked_score_summary(subs_log_score(self.x_theta(z, t, rows=rows), sigma), self.mask_id)[1]


@torch.no_grad()
def sample_sedd(module, n: int, steps: int, generator: torch.Generator, cond: Conditioning,
                nucleus_p: float = 1.0, nucleus_rule: str = "keep_crossing", predictor: str = "analytic",
                **_) -> dict:
    """SEDD sampling on linspace(1, 1e-5, steps + 1) from the all-[MASK] prior, then SEDD's final denoise.
    Returns {"tokens": (n, L), "nfe"}."""
    if predictor not in PREDICTORS:
        raise ValueError(f"unknown SEDD predictor {predictor!r}; expected one of {PREDICTORS}")
    if getattr(module, "graph", "absorb") == "uniform":
        return sample_sedd_uniform(module, n, steps, generator, cond, nucleus_p, predictor)
    L, mask_id, device = module.hparams.block_length, module.mask_id, module.device
    z = cond.apply(torch.full((n, L), mask_id, dtype=torch.long, device=device))  # (n, L)
    ts = time_grid(steps, device="cpu")
    score = ScoreModel(module, nucleus_p, nucleus_rule)
    for i in range(steps):
        t, s = ts[i], ts[i + 1]
        if not ((z == mask_id) & ~cond.fixed).any():
            break  # everything unmasked: the remaining steps would change nothing
        p_unmask = unmask_probability(predictor, score.log_S(z, t), module.schedule, t, s)  # (n, L)
        u = torch.rand(z.shape, dtype=torch.float64, device=device, generator=generator)  # (n, L)
        unmask = (z == mask_id) & ~cond.fixed & (u < p_unmask)
        if unmask.any():
            z = z.masked_scatter(unmask, sample_categorical(score.pi(z, t, unmask), generator))
        z = cond.apply(z)
    still = (z == mask_id) & ~cond.fixed  # final denoise: dsigma = sigma(t_min), mask column dropped, sampled
    if still.any():
        if score.sedd:
            score.log_S(z, ts[-1])
        z = z.masked_scatter(still, sample_categorical(score.pi(z, ts[-1], still), generator))
    return {"tokens": cond.apply(z), "nfe": score.nfe}


# --- the uniform graph ----------------------------------------------------------------------------------------

def uniform_step_weights(predictor: str, log_s: torch.Tensor, z: torch.Tensor, dsigma: torch.Tensor,
                         rate_dt: torch.Tensor | None = None) -> torch.Tensor:
    """Unnormalised float64 weights (n, L, K) of z_s given z_t = z on the uniform graph Q = (1/K) 1 1^T - I,
    from log scores log_s (n, L, K) (0 at z), clipped at 0 (the original's Gumbel-max never draws a negative
    weight).

    analytic (Tweedie tau-leaping; the original's `staggered_score` times `transp_transition`), with
    E = e^{dsigma} and S = sum_y s_y (s_z = 1 included):
        w_y = (E s_y - (E - 1) S / K) * T_{y z},  T_{y z} = (1 - 1/E)/K for y != z,  1/E + (1 - 1/E)/K at z
    (exact for one token with exact scores: E s_y - (E - 1) S / K = (e^{-dsigma Q} s)_y = p_s(y) / p_t(z));
    euler (the reverse rate times dt): w_y = rate_dt s_y / K for y != z and 1 - sum of those at z, with
    rate_dt = (t - s) sigma'(t)."""
    K = log_s.shape[-1]
    s = log_s.double().exp()  # (n, L, K)
    if predictor == "euler":
        w = s * (rate_dt.double() / K)  # (n, L, K)
        w = w.scatter(-1, z[..., None], 0.0)
        w = w.scatter(-1, z[..., None], 1.0 - w.sum(-1, keepdim=True))
        return w.clamp_min(0.0)
    if predictor != "analytic":
        raise ValueError(f"unknown SEDD predictor {predictor!r}; expected one of {PREDICTORS}")
    E = torch.exp(dsigma.double())
    S = s.sum(-1, keepdim=True)  # (n, L, 1)
    stag = E * s - (E - 1) * S / K  # (n, L, K) staggered score
    move = (1 - 1 / E) / K
    trans = torch.full_like(s, float(move)).scatter(-1, z[..., None], float(1 / E + move))
    return (stag * trans).clamp_min(0.0)


@torch.no_grad()
def sample_sedd_uniform(module, n: int, steps: int, generator: torch.Generator, cond: Conditioning,
                        nucleus_p: float = 1.0, predictor: str = "analytic") -> dict:
    """SEDD sampling on the uniform graph (the original's `get_pc_sampler` with `Uniform`): from the uniform
    prior over the K ids, one analytic or Euler step per grid interval of linspace(1, 1e-5, steps + 1) (every
    position may move at every step: a network call per step), then the original's final denoising step
    (the analytic step with dsigma = sigma(t_min)), sampled. Returns {"tokens": (n, L), "nfe"}."""
    if nucleus_p < 1.0:
        raise ValueError(f"nucleus_p {nucleus_p} with the SEDD uniform graph: its steps weight ids by scores, not by a "
                         "distribution over clean tokens, so no nucleus is defined (use nucleus_p 1)")
    L, K, device = module.hparams.block_length, module.hparams.vocab_size, module.device
    z = cond.apply(torch.randint(0, K, (n, L), generator=generator, device=device))  # (n, L) the limit
    ts = time_grid(steps, device="cpu")
    sched = module.schedule
    for i in range(steps + 1):
        t = ts[i] if i < steps else ts[-1]
        tt = torch.full((n,), float(t), device=device)
        log_s = module.log_score(z, tt)  # (n, L, K)
        if i < steps:
            s_ = ts[i + 1]
            dsigma = sched.sigma(t) - sched.sigma(s_)
            rate_dt = (t - s_) * (-sched.dalpha(t) / sched.alpha(t))  # (t - s) sigma'(t)
        else:  # final denoise: the whole remaining noise sigma(t_min)
            dsigma, rate_dt = sched.sigma(t), None
        w = uniform_step_weights(predictor if i < steps else "analytic", log_s, z, dsigma.to(device),
                                 None if rate_dt is None else rate_dt.to(device))
        z = cond.apply(sample_categorical(w, generator))
    return {"tokens": z, "nfe": steps + 1}
