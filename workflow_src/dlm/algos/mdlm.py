"""MDLM: masked (absorbing-state) diffusion with the SUBS parameterisation (Sahoo et al. 2024,
arXiv 2406.07524).

Forward process (eq. 2): q(z_t | x) = Cat(alpha_t x + (1 - alpha_t) m): each token is replaced by
[MASK] independently with probability 1 - alpha_t.
SUBS (Sec. 3.2.3): zero masking probability (the [MASK] logit is -inf) and carry-over unmasking
(an unmasked input token is copied to the output with probability one).
Continuous-time NELBO (eq. 10): per token  (alpha'_t / (1 - alpha_t)) log x_theta(z_t)[x], which is
-log x_theta[x] / t on masked tokens for the log-linear schedule and 0 on unmasked ones.
"""

from __future__ import annotations

import torch

from dlm.algos.base import Method

NEG_INF = -1e6  # as in MDLM: finite, so that 0 * NEG_INF stays 0 in the sampler algebra


def forward_mask(x: torch.Tensor, alpha: torch.Tensor, mask_id: int, generator: torch.Generator | None = None
                 ) -> torch.Tensor:
    """Sample z_t ~ q(z_t | x): mask each token with probability 1 - alpha (alpha: (B,) or (B, 1))."""
    alpha = alpha.reshape(-1, 1)  # (B, 1)
    u = torch.rand(x.shape, generator=generator, device=x.device)  # (B, L)
    return torch.where(u < 1.0 - alpha, torch.full_like(x, mask_id), x)


def subs_log_probs(logits: torch.Tensor, z: torch.Tensor, mask_id: int) -> torch.Tensor:
    """SUBS parameterisation: log x_theta (..., K) from raw logits (..., K) and the noisy input z (...)."""
    logits = logits.float().clone()
    logits[..., mask_id] += NEG_INF  # 1) zero masking probability
    log_probs = logits - torch.logsumexp(logits, dim=-1, keepdim=True)
    unmasked = z != mask_id  # (B, L)
    carry = torch.full_like(log_probs, NEG_INF)  # 2) carry-over: one-hot on the observed token
    carry.scatter_(-1, z[..., None], 0.0)
    return torch.where(unmasked[..., None], carry, log_probs)


class MDLM(Method):
    algo = "mdlm"
    default_time_conditioning = False  # MDLM's released OWT model: sigma is zeroed (Sec. 1.6 of the brief)

    def output_log_probs(self, logits: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """SUBS: normalised log-probabilities over clean tokens, the observed token at unmasked positions."""
        return subs_log_probs(logits, z, self.mask_id)

    def token_nll(self, batch, t, generator=None):
        x = batch["input_ids"]  # (B, L)
        alpha, dalpha = self.schedule.alpha(t), self.schedule.dalpha(t)  # (B,)
        z = forward_mask(x, alpha, self.mask_id, generator)
        logits = self.backbone(z, self.sigma_input(t)).float()  # (B, L, K)
        # SUBS without materialising the carry-over tensor: log x_theta[x] is the masked-out softmax at
        # masked positions and exactly 0 (carry-over) elsewhere -- identical to subs_log_probs(...)[x]
        logits[..., self.mask_id] = float("-inf")
        log_p_true = torch.log_softmax(logits, dim=-1).gather(-1, x[..., None]).squeeze(-1)  # (B, L)
        log_p_true = torch.where(z == self.mask_id, log_p_true, torch.zeros_like(log_p_true))
        weight = (dalpha / (1.0 - alpha))[:, None]  # (B, 1); equals -1/t for log-linear
        return weight * log_p_true
