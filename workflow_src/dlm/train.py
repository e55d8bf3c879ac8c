"""Train one run (any method) with Lightning, resuming from `last.ckpt` when a previous job was killed.

    train(data_dir, out_ckpt, run_dir, hp)

`hp` is the run's resolved config entry (see config/schema.yaml, `runs.*`): algo, model, noise,
optim, time_conditioning and trainer settings. The final checkpoint (with EMA) is written atomically
to `out_ckpt`; intermediate ones live in `run_dir/checkpoints/<settings hash>/` (last.ckpt every `ckpt_every`
steps), so that a rerun with changed settings does not resume a stale run.
"""

from __future__ import annotations

import logging
import sys
import time
from pathlib import Path

import lightning as L
import torch
from torch.utils.data import DataLoader

from dlm.algos import get_method
from dlm.data.dataset import PackedDataset, read_meta
from dlm.utils import atomic_path, config_hash

log = logging.getLogger("dlm.train")

TRAINER_DEFAULTS = dict(max_steps=1000, batch_size=32, accumulate=1, val_every=500, val_batches=16,
                        ckpt_every=200, log_every=50, ema=0.9999, seed=1, precision="auto", grad_clip=1.0,
                        devices=1, strategy="auto")


class StepLogger(L.Callback):
    """One readable line per `every` optimiser steps: loss, lr, tokens/s (for log files, not a tty)."""

    def __init__(self, every: int, tokens_per_step: int):
        self.every, self.tokens_per_step = every, tokens_per_step
        self.t0 = None

    def on_train_start(self, trainer, pl_module):
        self.t0, self.step0 = time.perf_counter(), trainer.global_step
        log.info("training %s: %d parameters, from step %d to %d", pl_module.algo, pl_module.backbone.num_params(),
                 trainer.global_step, trainer.max_steps)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        step = trainer.global_step
        if step % self.every == 0 or step == trainer.max_steps:
            dt = time.perf_counter() - self.t0
            tps = (step - self.step0) * self.tokens_per_step / max(dt, 1e-9)
            lr = trainer.optimizers[0].param_groups[0]["lr"]
            loss = float(outputs["loss"]) if isinstance(outputs, dict) else float(outputs)
            log.info("step %6d/%d  loss %.4f  lr %.2e  %.0f tok/s  %.0fs", step, trainer.max_steps, loss, lr, tps, dt)

    def on_validation_end(self, trainer, pl_module):
        m = trainer.callback_metrics
        if "val/nll" in m:
            log.info("validation at step %d: nll %.4f  ppl %.2f", trainer.global_step, float(m["val/nll"]),
                     float(m["val/ppl"]))


def loaders(data_dir: str, batch_size: int, seed: int) -> tuple[DataLoader, DataLoader]:
    train_ds, valid_ds = PackedDataset(data_dir, "train"), PackedDataset(data_dir, "valid")
    if len(train_ds) < batch_size:
        raise ValueError(f"{data_dir}: train split has {len(train_ds)} blocks, fewer than batch_size={batch_size}")
    g = torch.Generator().manual_seed(seed)
    train = DataLoader(train_ds, batch_size=batch_size, shuffle=True, drop_last=True, generator=g)
    valid = DataLoader(valid_ds, batch_size=batch_size, shuffle=False)
    return train, valid


def build_module(data_dir: str, hp: dict):
    meta = read_meta(data_dir)
    tr = {**TRAINER_DEFAULTS, **hp.get("trainer", {})}
    return get_method(hp["algo"])(
        vocab_size=meta["vocab_size"], block_length=meta["block_length"], special_ids=meta["special_ids"],
        tokenizer_dir=meta["tokenizer_dir"], model=hp.get("model", {}), optim=hp.get("optim"),
        noise=hp.get("noise"), time_conditioning=hp.get("time_conditioning", hp["algo"] != "mdlm"),
        antithetic=hp.get("antithetic", True), ema=tr["ema"], max_steps=tr["max_steps"], seed=tr["seed"],
        data_dir=str(data_dir))


def train(data_dir: str, out_ckpt: str, run_dir: str, hp: dict, threads: int | None = None) -> None:
    tr = {**TRAINER_DEFAULTS, **hp.get("trainer", {})}
    if threads:
        torch.set_num_threads(threads)
    L.seed_everything(tr["seed"], workers=True)
    module = build_module(data_dir, hp)
    train_dl, valid_dl = loaders(data_dir, tr["batch_size"], tr["seed"])
    gpu = torch.cuda.is_available()
    precision = tr["precision"] if tr["precision"] != "auto" else ("bf16-mixed" if gpu else "32-true")
    # resume only a run with the same settings and data: a changed config starts afresh
    ckpt_dir = Path(run_dir) / "checkpoints" / config_hash({"hp": hp, "data": read_meta(data_dir)})
    checkpointing = L.pytorch.callbacks.ModelCheckpoint(dirpath=ckpt_dir, save_last=True, save_top_k=0,
                                                        every_n_train_steps=tr["ckpt_every"])
    tokens_per_step = tr["batch_size"] * tr["accumulate"] * module.hparams.block_length * int(tr["devices"])
    trainer = L.Trainer(
        max_steps=tr["max_steps"], accelerator="auto", devices=tr["devices"], strategy=tr["strategy"],
        precision=precision, gradient_clip_val=tr["grad_clip"], accumulate_grad_batches=tr["accumulate"],
        val_check_interval=min(tr["val_every"], tr["max_steps"]), check_val_every_n_epoch=None,
        limit_val_batches=tr["val_batches"], num_sanity_val_steps=0, logger=False, default_root_dir=run_dir,
        callbacks=[checkpointing, StepLogger(tr["log_every"], tokens_per_step)],
        enable_progress_bar=sys.stderr.isatty(), enable_model_summary=False,
    )
    last = ckpt_dir / "last.ckpt"
    if last.exists():
        log.info("resuming from %s", last)
    trainer.fit(module, train_dl, valid_dl, ckpt_path=str(last) if last.exists() else None)
    if trainer.is_global_zero:
        with atomic_path(out_ckpt) as tmp:
            trainer.save_checkpoint(tmp)
        log.info("wrote %s", out_ckpt)
