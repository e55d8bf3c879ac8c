"""DCD: Discrete Consistency Distillation of a uniform-state (DUO / UDLM) model (Sahoo et al. 2025,
"The Diffusion Duality", arXiv 2506.10892, Sec. 4.3 and Alg. 1; reference brief duo.md Sec. 5).

One distillation round n (a separate training job, see `dlm.distill`), with step dt = 2^n / T:

  1. t ~ stratified U[eps, 1] (eps = 1e-3), shifted so that the earlier time stays >= eps:
         t <- min(t + dt, 1),   s = t - dt.
  2. Curriculum log-SNR, linear in time: gamma_t = gamma_min + t (gamma_max - gamma_min) (same for s);
     discrete alpha_t = T(alpha~_t) by the Diffusion Transformation (DUO eqs. 10-12) from the
     integral cache (`transform: cache`, the pipeline's `integral_path`) or the poly9 fit. The cache
     is read at the NEAREST grid point, alpha = (K I(gamma) - 1) / (K - 1): the original's
     `_gamma_to_alphat_integral` (s-sahoo/duo 4925052, April 2026, fixed the call of an undefined
     `_gamma_to_alphat` in `Distillation.nll`, which could not run before), both for t and for s.
  3. ONE Gaussian draw eps ~ N(0, I_K) per token for both times (the deterministic, DDIM-like path
     of the Gaussian process under the optimal denoiser, DUO Sec. 4.3):
         w_t = alpha~_t onehot(x) + sigma~_t eps,   w_s = alpha~_s onehot(x) + sigma~_s eps,
         z_t = argmax w_t,   z_s = argmax w_s.
     argmax w = argmax(eps + mu onehot(x)) with mu = alpha~ / sigma~ = exp(-gamma / 2) increasing as
     t decreases, so along the path each token flips at most once (from the noise argmax to x).
  4. Student: log x_theta(z_t; sigma = -log alpha_t) with gradients.
     Teacher (frozen copy of the student's raw weights at the start of the round, DUO Alg. 1; or of its
     EMA weights with `distill.teacher: ema`, Alg. 2): log x_theta-(z_s; -log alpha_s).
  5. Per-token loss, averaged over valid tokens:
         kl-bwd (default, DUO eq. 23): KL(student || teacher) = sum_v p_stu (log p_stu - log p_tea)
         kl-fwd:                       KL(teacher || student).

The validation bound (`token_nll`) and the samplers are UDLM's, unchanged: a distilled model is a
uniform-state model whose val PPL stays comparable and which samples with duo_ancestral /
duo_greedy_tail on the model's own (log-linear) schedule; the curriculum gamma grid only matters
for training (the network only ever sees sigma).

The teacher is NOT a submodule: it is held in the instance __dict__ (`TeacherMixin`), so it is not
in the state_dict (checkpoints store the student once and `load_module` needs no change), not in
`parameters()` (the optimiser and DDP never see it) and not moved by `.to()` (moved lazily to the
student's device on first use).

Deviations from the original code (s-sahoo/duo, ch-1 `Distillation`):
  * Each round is its own job starting from the previous round's checkpoint (the original runs all
    rounds in one job and copies student -> teacher every `update_teacher_every` steps), so AdamW
    state and the LR warm-up restart at every round. As in the original, the student continues from
    the raw weights and the teacher is their copy (`distill.student` / `distill.teacher`: raw, see
    `dlm.train.load_init_weights`); the EMA restarts each round from the student with the run's decay
    (the original restores the base checkpoint's EMA, decay 0.9999 included, and keeps it across rounds).
  * The teacher runs in eval mode (no dropout) and under the run's precision (no fp32 autocast).
  * No `linear_growth_dt` or float64 loss options (`teacher_ema` is `distill.teacher: ema`).
"""

from __future__ import annotations

import copy
import os
from typing import Any, Sequence

import torch
import torch.nn as nn

from dlm.algos.duo import gaussian_scales, load_cache_transform
from dlm.algos.udlm import UDLM
from dlm.diffusion.transform_fit import PolyTransform

LOSS_TYPES = ("kl-bwd", "kl-fwd")


# --- pieces shared with SDTT ------------------------------------------------------------------------

class TeacherMixin:
    """A frozen copy of `self.backbone` kept outside the module tree (see the module docstring)."""

    def reset_teacher(self, backbone: nn.Module | None = None) -> None:
        """teacher := a frozen deep copy of the student backbone (or of `backbone`): the start of a round."""
        teacher = copy.deepcopy(self.backbone if backbone is None else backbone)
        teacher.eval().requires_grad_(False)
        object.__setattr__(self, "_teacher", teacher)  # bypass nn.Module: not registered, not saved

    @property
    def teacher(self) -> nn.Module:
        t = self.__dict__.get("_teacher")
        if t is None:
            raise RuntimeError(f"{self.algo}: no teacher; distillation starts from a checkpoint "
                               "(dlm.distill.distill_round / train(init_ckpt=...)), which calls reset_teacher()")
        p = next(t.parameters(), None)
        if p is not None and p.device != self.device:
            t.to(self.device)
        return t

    @property
    def dt(self) -> float:
        """Step size of this round, 2^round / T (DUO Alg. 1: delta doubles every round)."""
        return 2.0 ** int(self.hparams["round"]) / int(self.hparams["T"])


def check_round(T: Any, round_: Any) -> None:
    if int(T) < 1 or int(round_) < 0:
        raise ValueError(f"distillation needs T >= 1 and round >= 0, got T={T}, round={round_}")
    if not 2.0 ** int(round_) / int(T) < 1.0:
        raise ValueError(f"step 2^round / T = {2.0 ** int(round_) / int(T)} must be < 1 (T={T}, round={round_})")


def kl_per_token(log_p: torch.Tensor, log_q: torch.Tensor) -> torch.Tensor:
    """KL(p || q) per position (B, L) from normalised log-probs (B, L, K); 0 * log 0 = 0."""
    p = log_p.exp()
    return torch.where(p > 0, p * (log_p - log_q), torch.zeros_like(p)).sum(-1)


def shifted_times(t: torch.Tensor, dt: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(t, s) with t <- min(t + dt, 1), s = t - dt (the original code's shift; s >= min(t_in, 1 - dt))."""
    t = (t + dt).clamp(max=1.0)
    return t, t - dt


def shared_noise_argmax(x: torch.Tensor, gammas: Sequence[torch.Tensor], vocab_size: int,
                        generator: torch.Generator | None = None) -> list[torch.Tensor]:
    """z = argmax(alpha~ onehot(x) + sigma~ eps) at each log-SNR in `gammas`, with ONE eps ~ N(0, I_K).

    x: (B, L) clean ids; gammas: (B,) each. Returns one (B, L) id tensor per gamma. Each z is an
    exact uniform-state sample with alpha = T(alpha~) (DUO Sec. 4.1); jointly they lie on one path.
    """
    eps = torch.randn((*x.shape, vocab_size), generator=generator, device=x.device)  # (B, L, K)
    out = []
    for gamma in gammas:
        a, s = gaussian_scales(gamma.float().to(x.device))  # (B,) each
        w = eps * s[:, None, None]  # (B, L, K)
        w.scatter_add_(-1, x[..., None], a[:, None, None].expand(*x.shape, 1))
        out.append(w.argmax(dim=-1))  # (B, L)
    return out


# --- the method -------------------------------------------------------------------------------------

class DCD(TeacherMixin, UDLM):
    """UDLM's bound for evaluation and sampling; the DCD loss (DUO Alg. 1) for training."""

    algo = "dcd"

    def __init__(self, *, T: int = 512, round: int = 0, gamma_min: float = -4.0, gamma_max: float = -1.0,
                 loss_type: str = "kl-bwd", transform: str = "cache",
                 integral_path: str | os.PathLike | None = None, **kw: Any):
        check_round(T, round)
        if loss_type not in LOSS_TYPES:
            raise ValueError(f"dcd loss_type must be one of {LOSS_TYPES}, got {loss_type!r}")
        if transform not in ("cache", "poly9"):
            raise ValueError(f"dcd transform must be 'cache' or 'poly9', got {transform!r}")
        if not float(gamma_min) < float(gamma_max):
            raise ValueError(f"dcd needs gamma_min < gamma_max, got {gamma_min} >= {gamma_max}")
        super().__init__(T=int(T), round=int(round), gamma_min=float(gamma_min), gamma_max=float(gamma_max),
                         loss_type=loss_type, transform=transform,
                         integral_path=None if integral_path is None else os.fspath(integral_path), **kw)
        self._transform = None  # built at the first training step: evaluation never reads the cache

    def transform(self):
        """alpha(t) on the distillation gamma range (DUO eqs. 10-12), built lazily."""
        if self._transform is None:
            hp = self.hparams
            if hp.transform == "poly9":
                self._transform = PolyTransform(hp.vocab_size, hp.gamma_min, hp.gamma_max, degree=9)
            else:
                self._transform = load_cache_transform(hp.integral_path, hp.vocab_size, hp.gamma_min, hp.gamma_max)
        return self._transform

    def gamma(self, t: torch.Tensor) -> torch.Tensor:
        return self.hparams.gamma_min + t.double() * (self.hparams.gamma_max - self.hparams.gamma_min)

    def discrete_alpha(self, t: torch.Tensor) -> torch.Tensor:
        return self.transform().alpha_dalpha(t)[0].to(t.device)  # (B,) float64

    def log_x_theta(self, backbone: nn.Module, z: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
        """log x_theta (B, L, K) of `backbone` at ids z (B, L), conditioned on sigma = -log alpha (B,)."""
        if self.hparams.time_conditioning:
            sigma = -torch.log(alpha).float()
        else:
            sigma = torch.zeros_like(alpha, dtype=torch.float32)
        return torch.log_softmax(backbone(z, sigma).float(), dim=-1)

    def distill_token_loss(self, x: torch.Tensor, t: torch.Tensor, s: torch.Tensor,
                           generator: torch.Generator | None = None) -> torch.Tensor:
        """Per-token DCD loss (B, L) for clean ids x (B, L), student time t and teacher time s <= t (B,)."""
        z_t, z_s = shared_noise_argmax(x, (self.gamma(t), self.gamma(s)), self.hparams.vocab_size, generator)
        log_student = self.log_x_theta(self.backbone, z_t, self.discrete_alpha(t))  # (B, L, K)
        with torch.no_grad():
            log_teacher = self.log_x_theta(self.teacher, z_s, self.discrete_alpha(s))  # (B, L, K)
        if self.hparams.loss_type == "kl-bwd":
            return kl_per_token(log_student, log_teacher)
        return kl_per_token(log_teacher, log_student)

    def loss(self, batch: dict, step: int = 0, generator: torch.Generator | None = None
             ) -> tuple[torch.Tensor, torch.Tensor]:
        """(sum, count) of the DCD loss over valid tokens (DUO Alg. 1, one round)."""
        x = batch["input_ids"]  # (B, L)
        t, s = shifted_times(self.sample_times(x.shape[0], generator, x.device), self.dt)  # (B,) each
        kl = self.distill_token_loss(x, t, s, generator)  # (B, L)
        mask = self.loss_mask(batch).to(kl.dtype)  # (B, L)
        return (kl * mask).sum(), mask.sum()
