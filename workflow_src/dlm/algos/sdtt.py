"""SDTT: Self-Distillation Through Time for MDLM (Deschenaux & Gulcehre 2024, arXiv 2410.21035), the
MDLM+SDTT baseline of the DUO paper's distillation tables (DUO arXiv 2506.10892, Tables 6/7).

One distillation round n (a separate training job, see `dlm.distill`), student step dt = 2^n / T
(T = 512: the teacher's first grid is 1024 steps, as SDTT's `orig_num_sampling_steps`):

  1. t ~ stratified U[eps, 1]; z_t ~ q(z_t | x) (MDLM forward masking at alpha_t).
  2. The frozen teacher (a copy of the student's raw weights at the start of the round, as SDTT's
     `_student_to_teacher` without `use_ema_on_growth`; `distill.teacher: ema` takes the EMA) runs
     TEACHER_STEPS = 2 MDLM ancestral steps of size delta = dt / 2 from z_t, at the times of
     `teacher_grid` (`teacher_steps`):
       "released" (default; SDTT's released `_teacher_logprobs_on_mask`): step i starts at
           tau_i = max(t * w_i + (1 - t) * (t - 2 delta), 1e-5),  w = linspace(1, 0, 2) = (1, 0),
         and ends at tau_i - delta, i.e. tau_0 = t + (1 - t)(t - 2 delta) and tau_1 = (1 - t)(t - 2 delta).
         The code's comment says "evenly-spaced interpolation between t_start and t_end", but it weighs
         t_end by (1 - t) instead of (1 - w_i): the two teacher steps are taken at other times than the
         student's t (t = 0.5, dt = 0.1: 0.7 -> 0.65 and 0.2 -> 0.15 instead of 0.5 -> 0.45 -> 0.4). Only the
         unmask probabilities delta / tau_i depend on it for a network without time conditioning
         (MDLM's), and the student learns whatever those targets are, so the released checkpoints and
         the papers' MDLM + SDTT numbers come from this grid: it is the default.
       "paper" (ours; the paper's description): t -> t - dt/2 -> s = t - dt, s clamped at 0.
     An end time <= 0 reveals every remaining mask (alpha = 1; SDTT's negative move chance does the
     same). At step i a masked position unmasks with probability (alpha_{s_i} - alpha_{t_i}) /
     (1 - alpha_{t_i}) and then takes a token drawn from the teacher's x_theta (MDLM eq. 7 with SUBS);
     all draws use the provided generator.
  3. Target per position: the teacher's x_theta at the step that unmasked it; for a position still
     masked after the 2 steps, the teacher's x_theta at the last step.
  4. Student: its one-step x_theta(z_t) (SUBS); loss = KL between target and student at the
     positions masked in z_t, averaged over those (valid) positions:
         kl-bwd (default, SDTT's multi-round config `distill_mode: kl-bwd`): KL(student || target)
         kl-fwd:                                                            KL(target || student)

The validation bound (`token_nll`) and the samplers (mdlm_ancestral, ...) are MDLM's, unchanged.
The teacher is held outside the module tree (`dlm.algos.dcd.TeacherMixin`): not in the state_dict.

Faithfulness to SDTT (the paper and its `MultiRoundSDTT` code):
  faithful - teacher = frozen copy of the raw student at the start of each round, in eval mode; 2 teacher
    steps per student step on the released code's time grid; the target rule of step 3 (teacher
    prediction at the unmasking step, last prediction for tokens left masked); loss only on tokens
    masked in z_t, token-averaged; dt doubles per round; the student keeps its raw weights.
  not faithful -
    * each round is a separate job from the previous round's checkpoint (SDTT: one job, the teacher
      reloaded every `grow_dt_every` = 10k steps, optimiser not reset), so AdamW state and the LR
      warm-up restart per round, and the EMA restarts from the student each round;
    * delta = 2^n / (2T), without SDTT's (1 - 1e-5) factor;
    * no MSE / TVD losses, no analytic (SEDD-style) teacher sampler, no float64 loss option;
    * the teacher runs under the run's precision (SDTT: fp32 autocast).
"""

from __future__ import annotations

from typing import Any

import torch

from dlm.algos.dcd import LOSS_TYPES, TeacherMixin, check_round, kl_per_token
from dlm.algos.mdlm import MDLM, forward_mask, subs_log_probs

TEACHER_STEPS = 2  # SDTT's num_distill_steps: one student step matches two teacher steps
TEACHER_GRIDS = ("released", "paper")
SDTT_EPS = 1e-5  # SDTT's training.sampling_eps: the released grid's lower clamp of a teacher step's start


def teacher_steps(t: torch.Tensor, dt: float, grid: str = "released") -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The teacher's TEACHER_STEPS (start, end) times (each (B,)) for student times t (B,) and student step dt
    (module docstring, step 2): "released" -- SDTT's code, tau_i = max(t w_i + (1 - t)(t - dt), 1e-5) with
    w = linspace(1, 0, TEACHER_STEPS), each step of size dt / TEACHER_STEPS; "paper" -- equal steps from t to
    max(t - dt, 0). End times are clamped at 0."""
    if grid == "paper":
        s = (t - dt).clamp(min=0.0)
        return [(t + (s - t) * (i / TEACHER_STEPS), t + (s - t) * ((i + 1) / TEACHER_STEPS))
                for i in range(TEACHER_STEPS)]
    if grid != "released":
        raise ValueError(f"sdtt teacher_grid must be one of {TEACHER_GRIDS}, got {grid!r}")
    delta = dt / TEACHER_STEPS
    t_end = t - delta * TEACHER_STEPS
    weights = torch.linspace(1.0, 0.0, TEACHER_STEPS, dtype=torch.float64).tolist()
    starts = [(t * w + (1.0 - t) * t_end).clamp(min=SDTT_EPS) for w in weights]
    return [(tau, (tau - delta).clamp(min=0.0)) for tau in starts]


class SDTT(TeacherMixin, MDLM):
    """MDLM's bound for evaluation and sampling; the SDTT loss for training."""

    algo = "sdtt"

    def __init__(self, *, T: int = 512, round: int = 0, loss_type: str = "kl-bwd", teacher_grid: str = "released",
                 **kw: Any):
        check_round(T, round)
        if loss_type not in LOSS_TYPES:
            raise ValueError(f"sdtt loss_type must be one of {LOSS_TYPES}, got {loss_type!r}")
        if teacher_grid not in TEACHER_GRIDS:
            raise ValueError(f"sdtt teacher_grid must be one of {TEACHER_GRIDS}, got {teacher_grid!r}")
        super().__init__(T=int(T), round=int(round), loss_type=loss_type, teacher_grid=teacher_grid, **kw)

    @torch.no_grad()
    def teacher_targets(self, z: torch.Tensor, steps: list[tuple[torch.Tensor, torch.Tensor]],
                        generator: torch.Generator | None = None
                        ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Roll the teacher from z (B, L) through the ancestral steps `steps` ((start, end) times, each (B,);
        `teacher_steps`).

        Returns (target log-probs (B, L, K), final ids (B, L), step (B, L) long: the teacher step
        (0-based) that unmasked each position, -1 if it was not masked or is still masked).
        """
        B, L = z.shape
        step = torch.full((B, L), -1, dtype=torch.long, device=z.device)
        target = None
        for i, (t_i, s_i) in enumerate(steps):
            log_p = subs_log_probs(self.teacher(z, self.sigma_input(t_i)), z, self.mask_id)  # (B, L, K)
            a_t, a_s = self.schedule.alpha(t_i.double()), self.schedule.alpha(s_i.double())  # (B,)
            p_unmask = ((a_s - a_t) / (1 - a_t))[:, None]  # (B, 1)
            u = torch.rand((B, L), generator=generator, device=z.device, dtype=torch.float64)
            unmask = (z == self.mask_id) & (u < p_unmask)  # (B, L)
            # token ~ x_theta by Gumbel-max (float64; [MASK] has probability 0 under SUBS)
            g = torch.rand(log_p.shape, generator=generator, device=z.device, dtype=torch.float64)
            g = -torch.log(-torch.log(g.clamp_min(1e-300)))
            tokens = (log_p.double() + g).argmax(-1)  # (B, L)
            z = torch.where(unmask, tokens, z)
            step = torch.where(unmask, torch.full_like(step, i), step)
            # the prediction of the unmasking step; the last step's for everything not yet assigned
            target = log_p if target is None else torch.where((step == i)[..., None] | (step < 0)[..., None],
                                                              log_p, target)
        return target, z, step

    def distill_token_loss(self, x: torch.Tensor, t: torch.Tensor, generator: torch.Generator | None = None
                           ) -> tuple[torch.Tensor, torch.Tensor]:
        """(per-token loss (B, L), masked-in-z_t (B, L) bool) for clean ids x and student times t (B,)."""
        z_t = forward_mask(x, self.schedule.alpha(t), self.mask_id, generator)  # (B, L)
        steps = teacher_steps(t, self.dt, self.hparams.teacher_grid)
        target, _, _ = self.teacher_targets(z_t, steps, generator)  # (B, L, K)
        log_student = self.denoise(z_t, t)  # (B, L, K) with gradients
        if self.hparams.loss_type == "kl-fwd":
            kl = kl_per_token(target, log_student)
        else:
            kl = kl_per_token(log_student, target)
        return kl, z_t == self.mask_id

    def loss(self, batch: dict, step: int = 0, generator: torch.Generator | None = None
             ) -> tuple[torch.Tensor, torch.Tensor]:
        """(sum, count) of the SDTT loss over valid positions masked in z_t."""
        x = batch["input_ids"]  # (B, L)
        t = self.sample_times(x.shape[0], generator, x.device)  # (B,)
        kl, masked = self.distill_token_loss(x, t, generator)
        mask = self.loss_mask(batch).to(kl.dtype) * masked.to(kl.dtype)  # (B, L)
        return (kl * mask).sum(), mask.sum().clamp_min(1.0)  # no masked token (t ~ eps): loss 0, not 0/0
