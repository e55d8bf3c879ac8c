"""GIDD / GIDD+: generalized interpolating discrete diffusion with the hybrid mask + uniform schedule
(von Ruette et al. 2025, arXiv 2503.04482; brief /work/shared/reference/gidd_sedd.md Sec. 1).

Forward process: `dlm.diffusion.gidd_schedule.HybridSchedule` (v1.1 form, gamma = 1). Denoiser: mean
parameterisation x_theta = softmax(logits) with the [MASK] logit at -inf, and *no* carry-over (brief 1.4);
the DiT is conditioned on raw t (not sigma), or on zeros without time conditioning.

ELBO per token (brief 1.5), with q_t(.|y) = alpha_t y + beta_t pi_t and r = q_t(z_t|x) / q_t(z_t|x_theta):

    l_t(x, z_t) = w_t(z_t, x) [ KL(q_t(.|x) || q_t(.|x_theta)) + (r - log r - 1) ],   w_t = omega_t(z_t) / q_t(z_t|x).

`token_nll` returns l_t (the validation bound, val PPL = exp(token mean over attention_mask)).
The training objective `loss` replaces w by the configured weight (brief 1.6):
    none     w~ = w
    clip     w~ = clip(w, min_loss_weight, max_loss_weight)
    dynamic  w~ = clip(w_max (1 + 1[z = m] + (B/K e^{-lambda_t/2} - 1) 1[z = x]), min, max), w_max = 1,
             with the true log-SNR lambda_t = log(alpha_t / (1 - alpha_t)) (the paper form, as the v1.0
             code; v1.1 used sigmoid(-t)). So mask 2, uniform noise 1, clean (B/K) sqrt((1 - alpha)/alpha),
             then clipped: max_loss_weight 1 (v1.0 / schema default) gives mask 1, max_loss_weight 2 (v1.1) mask 2.
Which upstream version: the paper's numbers and released checkpoints (March 2025) come from the v1.0 code
(tag v1.0.0): max_loss_weight 1 and the true log-SNR, our defaults. v1.1.0 (June 2025, commits 706c762 and
ceb7122) raised max_loss_weight to 2 (set it to reproduce v1.1) and replaced the log-SNR by sigmoid(-t); its
"/ (V - 1)" on the clean ELBO weight fixed a May 2025 regression and equals v1.0's (and ours) up to the
parameterisation. Training conventions of the original (no dropout, no EMA) are run defaults for gidd runs
(dlm.config.METHOD_TRAINING).
GIDD+ = dynamic weighting + AdamW weight decay 0.02; the weight decay is the run config's optimiser
setting (optim.weight_decay), not part of this module.

Reduction, as the original: training is a token mean over *all* B x L positions (padding included);
the bound (`nelbo`, validation) is a mean over attention_mask only.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from dlm.algos.base import Method
from dlm.diffusion.gidd_schedule import HybridSchedule

LOSS_WEIGHTINGS = ("none", "clip", "dynamic")
DYNAMIC_W_MAX = 1.0  # w_max of the dynamic weighting: mask 2 w_max, uniform noise w_max, before the clip
LOG_SNR_CLIP = 20.0  # |lambda_t| is clipped as in the original code


def _softplus64(x: torch.Tensor) -> torch.Tensor:
    """log(1 + e^x) without softplus' linear cut-off (exact to float64 precision; 0 at -inf)."""
    return torch.logaddexp(x, torch.zeros_like(x))


def gidd_divergences(log_x_theta: torch.Tensor, x: torch.Tensor, z: torch.Tensor, t: torch.Tensor,
                     schedule: HybridSchedule) -> tuple[torch.Tensor, torch.Tensor]:
    """(KL(q_t(.|x) || q_t(.|x_theta)), r - log r - 1), each float64 (B, L) and >= 0 (brief 1.5).

    log_x_theta: (B, L, K) normalised log-probabilities with -inf at [MASK]; x, z: (B, L); t: (B,).
    With alpha, mu, upsilon the clean, mask and per-token uniform shares and rho = log(alpha / upsilon):
      q_t(j|x_theta) / upsilon = 1 + e^{rho} x_theta_j =: e^{s_j}  (j non-mask; the mask entries agree),
      q_t(x|x) / upsilon = 1 + e^{rho} =: e^{s*},  q_t(j|x) = upsilon for the other non-mask j, so
      KL = (alpha + upsilon) s* - alpha s_x - upsilon sum_j s_j            (s_mask = 0)
      log r = 1[z = x] s* - s_z                                             (0 at z = mask).
    Only sum_j s_j touches (B, L, K) (in log_x_theta's precision; it is multiplied by upsilon); the rest
    is float64 on gathered (B, L) values.
    """
    a, _, u = schedule.shares(t)  # (B,) each, float64
    rho = torch.log(a) - torch.log(u)  # (B,)
    s_sum = F.softplus(log_x_theta + rho.to(log_x_theta.dtype)[:, None, None]).sum(-1).double()  # (B, L)
    rho = rho[:, None]  # (B, 1)
    a, u = a[:, None], u[:, None]
    lx_x = log_x_theta.gather(-1, x[..., None]).squeeze(-1).double()  # (B, L) log x_theta[x]
    lx_z = log_x_theta.gather(-1, z[..., None]).squeeze(-1).double()  # (B, L) log x_theta[z]
    s_star = _softplus64(rho)  # (B, 1)
    s_x = _softplus64(rho + lx_x)  # (B, L)
    kl = (a + u) * s_star - a * s_x - u * s_sum  # (B, L)
    log_r = (z == x).double() * s_star - _softplus64(rho + lx_z)  # (B, L)
    itakura_saito = torch.expm1(log_r) - log_r  # (B, L)
    return kl, itakura_saito


def training_weights(elbo_w: torch.Tensor, t: torch.Tensor, z: torch.Tensor, x: torch.Tensor,
                     schedule: HybridSchedule, weighting: str, min_w: float, max_w: float) -> torch.Tensor:
    """The training weight w~ (B, L), float64, replacing the ELBO weight elbo_w (B, L) (brief 1.6)."""
    if weighting == "none":
        return elbo_w
    if weighting == "clip":
        return elbo_w.clamp(min_w, max_w)
    if weighting == "dynamic":
        lam = schedule.log_snr(t).clamp(-LOG_SNR_CLIP, LOG_SNR_CLIP)[:, None]  # (B, 1)
        clean = (schedule.B / schedule.vocab_size) * torch.exp(-0.5 * lam)  # (B, 1): B_tok e^{-gamma lambda/2}
        w = torch.where(z == schedule.mask_id, 2.0, torch.where(z == x, clean, 1.0))  # (B, L)
        return (DYNAMIC_W_MAX * w).clamp(min_w, max_w)
    raise ValueError(f"unknown loss_weighting {weighting!r}; expected one of {LOSS_WEIGHTINGS}")


class GIDD(Method):
    algo = "gidd"
    default_time_conditioning = True  # GIDD conditions the DiT on t

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        hp = self.hparams
        self.p_uniform = float(hp.get("p_uniform", 0.0))
        self.loss_weighting = str(hp.get("loss_weighting", "none"))
        self.min_loss_weight = float(hp.get("min_loss_weight", 0.0))
        self.max_loss_weight = float(hp.get("max_loss_weight", 1.0))
        self.t_eps = float(hp.get("t_eps", 1e-4))
        if self.loss_weighting not in LOSS_WEIGHTINGS:
            raise ValueError(f"unknown loss_weighting {self.loss_weighting!r}; expected one of {LOSS_WEIGHTINGS}")
        if not 0.0 < self.t_eps < 0.5:
            raise ValueError(f"t_eps must be in (0, 0.5), got {self.t_eps}")
        if self.max_loss_weight <= 0 or self.min_loss_weight > self.max_loss_weight:
            raise ValueError("need 0 <= min_loss_weight <= max_loss_weight and max_loss_weight > 0")
        # GIDD's own schedule replaces the base class's alpha schedule (the `noise` settings are unused)
        self.schedule = HybridSchedule(self.hparams.vocab_size, self.mask_id, self.p_uniform)

    # --- conditioning and times ---------------------------------------------------------------------

    def sigma_input(self, t: torch.Tensor) -> torch.Tensor:
        """GIDD conditions on raw t in [0, 1] (brief 1.4), or zeros without time conditioning."""
        if self.hparams.time_conditioning:
            return t.float()  # (B,)
        return torch.zeros_like(t, dtype=torch.float32)

    def sample_times(self, n: int, generator: torch.Generator | None = None,
                     device: torch.device | str = "cpu") -> torch.Tensor:
        """t in [t_eps, 1 - t_eps], one per sequence (brief 1.3). Low-discrepancy (hparams.antithetic):
        t_i = frac(i / n + U) with a single U ~ U[0, 1) shared by the batch; otherwise i.i.d. uniform."""
        if self.hparams.antithetic:
            u = torch.rand(1, generator=generator, device=device)  # (1,)
            r = (torch.arange(n, device=device, dtype=torch.float32) / n + u) % 1.0  # (n,)
        else:
            r = torch.rand(n, generator=generator, device=device)  # (n,)
        return (1.0 - 2.0 * self.t_eps) * r + self.t_eps

    # --- denoiser and objective ---------------------------------------------------------------------

    def output_log_probs(self, logits: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """Normalised log-probabilities, -inf at [MASK] (no carry-over)."""
        logits = logits.float()  # (..., K): the network's fresh output (or a row selection of it), set in place
        logits[..., self.mask_id] = float("-inf")
        return torch.log_softmax(logits, dim=-1)

    def _divergence(self, x: torch.Tensor, t: torch.Tensor, generator: torch.Generator | None
                    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(z_t (B, L), KL + IS (B, L) float64) for clean ids x at times t, z_t drawn with `generator`."""
        z = self.schedule.sample(x, t, generator)  # (B, L)
        kl, itakura_saito = gidd_divergences(self.denoise(z, t), x, z, t, self.schedule)
        return z, kl + itakura_saito

    def token_nll(self, batch, t, generator=None):
        """The per-token ELBO l_t = w_t(z_t, x) (KL + IS) (B, L) (brief 1.5)."""
        x = batch["input_ids"]  # (B, L)
        z, div = self._divergence(x, t, generator)
        return (self.schedule.elbo_weights(t, z, x) * div).float()

    def loss(self, batch, step=0, generator=None):
        """(sum, count) of the weighted training loss over all B x L positions (padding included, as
        the original's tokenmean); weights per `loss_weighting` (brief 1.6)."""
        x = batch["input_ids"]  # (B, L)
        t = self.sample_times(x.shape[0], generator, x.device)  # (B,)
        z, div = self._divergence(x, t, generator)
        w = training_weights(self.schedule.elbo_weights(t, z, x), t, z, x, self.schedule, self.loss_weighting,
                             self.min_loss_weight, self.max_loss_weight)  # (B, L)
        total = (w * div).sum().float()
        return total, torch.tensor(float(x.numel()), device=x.device)
