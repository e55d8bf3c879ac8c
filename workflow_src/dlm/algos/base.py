"""What every objective shares: the backbone, the noise schedule and the NELBO reduction.

A method (one module in this package) subclasses `Method` and implements `token_nll(batch, t, generator)`,
the per-token negative ELBO (or NLL for AR) whose token-weighted mean is, on the validation split with one
t per sequence, the reported bound: val PPL = exp(sum nll / tokens) (MDLM Sec. 4.1; DUO Sec. 5.1).
Every random draw of the forward process goes through `generator` (None = the global RNG, which
training seeds; evaluation always passes a seeded generator, so a bound repeats exactly).

A method whose training objective differs from its bound (GIDD's loss weighting, the DUO curriculum)
overrides `loss(batch, step, generator)`; by default the training loss is the bound itself.
Methods may also override `sample_times` (their t distribution) and `sigma_input` (what the DiT is
conditioned on), and set `default_time_conditioning`.

Methods are plain `nn.Module`s so that sampling and evaluation load them without Lightning; the
Lightning loop (optimiser, EMA, checkpoints, DDP) wraps them in `dlm.train`.

The network comes from the run's `model` setting (`dlm.models.backbone`: the DiT, or the UNet for image data).
Class-conditional image models (DUO's CIFAR-10 with classifier-free guidance) take labels without any method
knowing: a batch's "labels" reach the backbone inside `class_conditioned` (in `nelbo_terms`, each label replaced
by "no class" with probability `model.class_dropout`, drawn from `generator`, as the original's training and
validation `nll`), and a sampler's calls inside `class_conditioned(labels, guidance)` (`dlm.sampling.run_sampler`)
get x_theta guided as in `denoise`.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any

import torch
import torch.nn as nn

from dlm.diffusion.schedules import get_schedule, sample_t
from dlm.models.backbone import build_backbone


class HParams(dict):
    """The constructor arguments of a method, readable as attributes (hp.block_length) or keys."""

    def __getattr__(self, key: str) -> Any:
        try:
            return self[key]
        except KeyError as e:
            raise AttributeError(key) from e


class Method(nn.Module):
    algo = "base"
    causal = False
    default_time_conditioning = True  # MDLM overrides (no time conditioning, as in the paper)

    def __init__(self, *, vocab_size: int, block_length: int, special_ids: dict, tokenizer_dir: str,
                 model: dict, noise: dict | None = None, time_conditioning: bool = True, antithetic: bool = True,
                 **extra: Any):
        super().__init__()
        self.hparams = HParams(vocab_size=vocab_size, block_length=block_length, special_ids=dict(special_ids),
                               tokenizer_dir=str(tokenizer_dir), model=dict(model), noise=dict(noise or {}),
                               time_conditioning=time_conditioning, antithetic=antithetic, algo=self.algo, **extra)
        noise = noise or {}
        self.schedule = get_schedule(noise.get("schedule", "loglinear"), noise.get("eps", 1e-3))
        self.mask_id = int(special_ids["mask"])
        self.backbone = build_backbone(model, vocab_size, block_length, causal=self.causal, image=extra.get("image"))
        self.num_classes = getattr(self.backbone, "num_classes", None)  # class-conditional (UNet) or None
        self.class_dropout = float(model.get("class_dropout", 0.1))
        self.guidance = 1.0  # classifier-free guidance weight of `denoise` (set by `class_conditioned`)

    # --- interface for methods ---------------------------------------------------------------------

    def token_nll(self, batch: dict, t: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Per-token loss (B, L) for clean tokens batch['input_ids'] at diffusion times t (B,); every
        random draw (forward-process noise) uses `generator`."""
        raise NotImplementedError

    def sample_times(self, n: int, generator: torch.Generator | None = None,
                     device: torch.device | str = "cpu") -> torch.Tensor:
        """One diffusion time per sequence (n,), low-discrepancy across the batch (MDLM Sec. 3.5)."""
        return sample_t(n, self.schedule.eps, self.hparams.antithetic, generator, device)

    def loss_mask(self, batch: dict) -> torch.Tensor:
        return batch["attention_mask"]

    def output_log_probs(self, logits: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """The method's parameterisation of x_theta, position by position: log-probabilities (..., K) from
        raw network logits (..., K) and the noisy tokens z (...) at the same positions."""
        raise NotImplementedError

    def denoise(self, z: torch.Tensor, t: torch.Tensor, rows: torch.Tensor | None = None) -> torch.Tensor:
        """log x_theta(z_t, t): (B, L, K) from z (B, L) and t (B,). With `rows` (B, L) bool, only those
        positions: (m, K) in row-major order, and the output transform touches m rows instead of B L
        (samplers that update a few positions per step ask only for those)."""
        labels, g = getattr(self.backbone, "class_labels", None), self.guidance
        if labels is None or g == 1.0:
            return self._denoise(z, t, rows)
        with self.class_conditioned(torch.full_like(labels, self.num_classes), g):
            log_u = self._denoise(z, t, rows)  # unconditional: the "no class" label
        if g == 0.0:
            return log_u
        # classifier-free guidance on x_theta: log x ∝ g log x_theta(. | c) + (1 - g) log x_theta(. | no class)
        mixed = g * self._denoise(z, t, rows) + (1.0 - g) * log_u
        return mixed - torch.logsumexp(mixed, dim=-1, keepdim=True)

    def _denoise(self, z: torch.Tensor, t: torch.Tensor, rows: torch.Tensor | None) -> torch.Tensor:
        logits = self.backbone(z, self.sigma_input(t))  # (B, L, K)
        if rows is not None:
            logits, z = logits[rows], z[rows]  # (m, K), (m,)
        return self.output_log_probs(logits, z)

    @contextmanager
    def class_conditioned(self, labels: torch.Tensor | None, guidance: float = 1.0):
        """Backbone calls inside the block see class `labels` (B,) (`num_classes` = no class; None = unconditional)
        and `denoise` guides with weight `guidance`: 1 conditional only (the original's FID scripts), 0
        unconditional, otherwise x ∝ x_theta(.|c)^g x_theta(.|none)^(1-g) (two network calls). The original mixes
        the two *posteriors* this way (trainer_base._get_guided_posterior_from_xt, which cannot be reached there:
        its call passes `self` twice); for g in {0, 1} the two agree. A model without classes ignores labels."""
        if self.num_classes is None:
            yield
            return
        before = self.backbone.class_labels, self.guidance
        self.backbone.class_labels, self.guidance = labels, float(guidance)
        try:
            yield
        finally:
            self.backbone.class_labels, self.guidance = before

    @property
    def calls_per_denoise(self) -> int:
        """Network calls behind one `denoise` (2 under guidance with a weight other than 0 and 1)."""
        labels = getattr(self.backbone, "class_labels", None)
        return 2 if labels is not None and self.guidance not in (0.0, 1.0) else 1

    def training_labels(self, labels: torch.Tensor | None, generator: torch.Generator | None = None
                        ) -> torch.Tensor | None:
        """The batch's class labels with each replaced by "no class" with probability `class_dropout` (the
        classifier-free-guidance dropout; one uniform per label from `generator`), or None for a model without
        classes."""
        if self.num_classes is None or labels is None:
            return None
        u = torch.rand(labels.shape, generator=generator, device=labels.device)  # (B,)
        return torch.where(u < self.class_dropout, torch.full_like(labels, self.num_classes), labels)

    def sigma_input(self, t: torch.Tensor) -> torch.Tensor:
        """The conditioning fed to the DiT: sigma_t = -log alpha_t, or zeros without time conditioning."""
        if self.hparams.time_conditioning:
            return self.schedule.sigma(t)  # (B,)
        return torch.zeros_like(t)

    # --- shared -------------------------------------------------------------------------------------

    def nelbo_terms(self, batch: dict, generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-sequence (summed loss (B,), counted tokens (B,)) of the bound, one t per sequence drawn
        by `sample_times`; all randomness from `generator`."""
        ids = batch["input_ids"]
        t = self.sample_times(ids.shape[0], generator, ids.device)  # (B,)
        with self.class_conditioned(self.training_labels(batch.get("labels"), generator)):
            nll = self.token_nll(batch, t, generator)  # (B, L)
        mask = self.loss_mask(batch).to(nll.dtype)  # (B, L)
        return (nll * mask).sum(-1), mask.sum(-1)

    def nelbo(self, batch: dict, generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(sum of per-token losses, number of counted tokens) of the bound for a batch."""
        nll, n = self.nelbo_terms(batch, generator)
        return nll.sum(), n.sum()

    def loss(self, batch: dict, step: int = 0, generator: torch.Generator | None = None
             ) -> tuple[torch.Tensor, torch.Tensor]:
        """(sum, count) of the training objective at optimiser step `step`; the bound by default."""
        return self.nelbo(batch, generator)

    @property
    def device(self) -> torch.device:
        p = next(self.parameters(), None)
        return p.device if p is not None else torch.device("cpu")

    @property
    def tokenizer_dir(self) -> str:
        return self.hparams.tokenizer_dir

    def num_params(self) -> int:
        return self.backbone.num_params()
