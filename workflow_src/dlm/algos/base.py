"""The LightningModule shared by every objective: backbone, EMA, optimiser, train/val loops.

A method (one module in this package) subclasses `LMModule` and implements `token_nll(batch, t)`,
the per-token negative ELBO (or NLL for AR) whose token-weighted mean is both the training loss and,
on the validation split with one t per sequence, the reported bound: val PPL = exp(sum nll / tokens)
(MDLM Sec. 4.1; DUO Sec. 5.1).
"""

from __future__ import annotations

import math
from typing import Any

import lightning as L
import torch

from dlm.diffusion.schedules import get_schedule, sample_t
from dlm.models.dit import DiT, make_config
from dlm.models.ema import EMA

DEFAULT_OPTIM = dict(lr=3e-4, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, warmup_steps=2500,
                     lr_schedule="constant", min_lr_ratio=0.1)


class LMModule(L.LightningModule):
    algo = "base"
    causal = False

    def __init__(self, *, vocab_size: int, block_length: int, special_ids: dict, tokenizer_dir: str,
                 model: dict, optim: dict | None = None, noise: dict | None = None,
                 time_conditioning: bool = True, antithetic: bool = True, ema: float = 0.9999,
                 max_steps: int | None = None, seed: int = 1, **extra: Any):
        super().__init__()
        self.save_hyperparameters()
        self.hparams["algo"] = self.algo
        self.optim_cfg = {**DEFAULT_OPTIM, **(optim or {})}
        noise = noise or {}
        self.schedule = get_schedule(noise.get("schedule", "loglinear"), noise.get("eps", 1e-3))
        self.mask_id = int(special_ids["mask"])
        cfg = make_config(vocab_size, block_length, model.get("size", "small"), model.get("dropout", 0.1),
                          causal=self.causal)
        self.backbone = DiT(cfg)
        self.ema = EMA(self.backbone, ema) if ema and ema > 0 else None
        self._val_nll = 0.0
        self._val_tokens = 0

    # --- interface for methods ---------------------------------------------------------------------

    def token_nll(self, batch: dict, t: torch.Tensor) -> torch.Tensor:
        """Per-token loss (B, L) for clean tokens batch['input_ids'] at diffusion times t (B,)."""
        raise NotImplementedError

    def loss_mask(self, batch: dict) -> torch.Tensor:
        return batch["attention_mask"]

    def sigma_input(self, t: torch.Tensor) -> torch.Tensor:
        """The conditioning fed to the DiT: sigma_t = -log alpha_t, or zeros without time conditioning."""
        if self.hparams.time_conditioning:
            return self.schedule.sigma(t)
        return torch.zeros_like(t)

    # --- loops -------------------------------------------------------------------------------------

    def _loss(self, batch: dict, generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        ids = batch["input_ids"]
        t = sample_t(ids.shape[0], self.schedule.eps, self.hparams.antithetic, generator, ids.device)  # (B,)
        nll = self.token_nll(batch, t)  # (B, L)
        mask = self.loss_mask(batch).to(nll.dtype)  # (B, L)
        return (nll * mask).sum(), mask.sum()

    def training_step(self, batch, batch_idx):
        nll_sum, n = self._loss(batch)
        loss = nll_sum / n
        self.log("train/loss", loss, prog_bar=True, on_step=True, batch_size=batch["input_ids"].shape[0])
        return loss

    def on_train_batch_end(self, outputs, batch, batch_idx):
        if self.ema is not None:
            self.ema.update(self.backbone)

    def on_validation_epoch_start(self):
        self._val_nll, self._val_tokens = 0.0, 0
        if self.ema is not None:
            self._ema_ctx = self.ema.swapped_in(self.backbone)
            self._ema_ctx.__enter__()

    def validation_step(self, batch, batch_idx):
        # a fixed generator per batch: the validation bound is reproducible run to run
        g = torch.Generator(device=batch["input_ids"].device).manual_seed(self.hparams.seed * 100_003 + batch_idx)
        nll_sum, n = self._loss(batch, g)
        self._val_nll += float(nll_sum.double())
        self._val_tokens += int(n)

    def on_validation_epoch_end(self):
        if self.ema is not None:
            self._ema_ctx.__exit__(None, None, None)
        if self._val_tokens:
            nll = self._val_nll / self._val_tokens
            self.log("val/nll", nll, sync_dist=True)
            self.log("val/ppl", math.exp(min(nll, 50.0)), sync_dist=True)

    # --- optimisation -------------------------------------------------------------------------------

    def configure_optimizers(self):
        o = self.optim_cfg
        opt = torch.optim.AdamW(self.backbone.parameters(), lr=o["lr"], betas=tuple(o["betas"]), eps=o["eps"],
                                weight_decay=o["weight_decay"])
        warmup, total = int(o["warmup_steps"]), self.hparams.max_steps
        kind, floor = o["lr_schedule"], o["min_lr_ratio"]
        if kind not in ("constant", "cosine"):
            raise ValueError(f"optim.lr_schedule must be 'constant' or 'cosine', got {kind!r}")

        def factor(step: int) -> float:
            # 1) linear warm-up from 0 (MDLM/DUO `constant_warmup`), 2) constant or cosine decay to floor
            if step < warmup:
                return (step + 1) / warmup
            if kind == "constant" or not total:
                return 1.0
            progress = min(1.0, (step - warmup) / max(1, total - warmup))
            return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))

        sched = torch.optim.lr_scheduler.LambdaLR(opt, factor)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    # --- checkpoint: keep the EMA next to the weights -----------------------------------------------

    def on_save_checkpoint(self, checkpoint):
        if self.ema is not None:
            checkpoint["ema"] = self.ema.state_dict()

    def on_load_checkpoint(self, checkpoint):
        if self.ema is not None and "ema" in checkpoint:
            self.ema.load_state_dict(checkpoint["ema"])

    # --- inference helpers -------------------------------------------------------------------------

    def use_ema_weights(self) -> None:
        """Copy the EMA weights into the backbone for evaluation and sampling (papers' convention)."""
        if self.ema is not None:
            self.ema.copy_to(self.backbone)

    @property
    def tokenizer_dir(self) -> str:
        return self.hparams.tokenizer_dir
